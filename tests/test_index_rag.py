"""helpers.index and helpers.rag against real embedded Qdrant and the real models of the stand-in (no mocks).

The tests that use the models are slow (tests/conftest.py marks them); the index is shared per session.
"""

from __future__ import annotations

from dataclasses import replace

import ollama
import pytest
from qdrant_client import QdrantClient, models

from bench.answers import best_threshold
from helpers.config import EMBED_MODEL, STAND_IN_CHAT_MODEL
from helpers.corpus import load_questions
from helpers.index import (
    VectorSizeMismatchError,
    collection_vector_size,
    ensure_collection,
    ensure_index,
    index_chunks,
    point_id,
)
from helpers.rag import (
    NOT_IN_DOCS,
    SCORE_GATE,
    Hit,
    answer_grounded,
    answer_schema,
    build_messages,
    citations,
    cited_numbers,
    gated,
    retrieve,
    structured_messages,
)

COLLECTION = "handbook"
CORPUS_KINDS = {"single", "numeric", "recency", "multi_doc"}


@pytest.fixture(scope="module")
def chunks(handbook_index):
    """The handbook's chunks (from the session's shared index)."""
    return handbook_index[1]


@pytest.fixture(scope="module")
def handbook(handbook_index):
    """The whole corpus indexed once per session in embedded Qdrant (tests/conftest.py), read-only here."""
    qdrant, _, name = handbook_index
    assert name == COLLECTION
    return qdrant


def doc_point_ids(qdrant: QdrantClient, doc_id: str) -> set[str]:
    points, _ = qdrant.scroll(
        COLLECTION,
        limit=1000,
        with_payload=True,
        scroll_filter=models.Filter(must=[models.FieldCondition(key="doc_id", match=models.MatchValue(value=doc_id))]),
    )
    return {p.payload["chunk_id"] for p in points}


def make_hits(n: int) -> list[Hit]:
    return [
        Hit(f"doc{i}#0", f"doc{i}", f"Doc {i}", f"text {i}", 1.0 - i / 10, {"updated": "2025-01-01"})
        for i in range(1, n + 1)
    ]


def test_point_ids_are_deterministic_uuids():
    assert point_id("boat-operations#3") == point_id("boat-operations#3") != point_id("boat-operations#4")
    assert len(point_id("x")) == 36


def test_upsert_twice_keeps_the_count(client, chunks):
    qdrant = QdrantClient(":memory:")
    some = [c for c in chunks if c.doc_id in {"incident-reporting", "quiet-hours"}]
    index_chunks(client, qdrant, COLLECTION, some, embed_model=EMBED_MODEL)
    first = qdrant.count(COLLECTION).count
    index_chunks(client, qdrant, COLLECTION, some, embed_model=EMBED_MODEL)
    assert first == qdrant.count(COLLECTION).count == len(some)


def test_a_document_that_shrinks_leaves_no_stale_chunks(client, chunks):
    qdrant = QdrantClient(":memory:")
    doc = [c for c in chunks if c.doc_id == "boat-operations"]
    other = [c for c in chunks if c.doc_id == "quiet-hours"]
    assert len(doc) > 3
    index_chunks(client, qdrant, COLLECTION, doc + other, embed_model=EMBED_MODEL)
    assert doc_point_ids(qdrant, "boat-operations") == {c.id for c in doc}
    index_chunks(client, qdrant, COLLECTION, doc[:2], embed_model=EMBED_MODEL)
    assert doc_point_ids(qdrant, "boat-operations") == {c.id for c in doc[:2]}
    assert doc_point_ids(qdrant, "quiet-hours") == {c.id for c in other}, "other documents are untouched"
    assert qdrant.count(COLLECTION).count == 2 + len(other)


@pytest.mark.slow
def test_category_filter_returns_only_that_category(handbook, client, chunks):
    only = models.Filter(must=[models.FieldCondition(key="category", match=models.MatchValue(value="safety"))])
    hits = retrieve(
        client, handbook, COLLECTION, "Where is the muster point?", embed_model=EMBED_MODEL, k=10, query_filter=only
    )
    assert len(hits) == 10 and {h.payload["category"] for h in hits} == {"safety"}
    expected = sum(c.metadata["category"] == "safety" for c in chunks)
    assert handbook.count(COLLECTION, count_filter=only).count == expected


@pytest.mark.slow
def test_date_range_filter_on_iso_dates(handbook, client, chunks):
    window = models.DatetimeRange(gte="2025-06-01", lt="2025-10-02")
    only = models.Filter(must=[models.FieldCondition(key="updated", range=window)])
    hits = retrieve(client, handbook, COLLECTION, "boat wind limit", embed_model=EMBED_MODEL, k=10, query_filter=only)
    assert hits and all("2025-06-01" <= h.payload["updated"] < "2025-10-02" for h in hits)
    expected = sum("2025-06-01" <= c.metadata["updated"] < "2025-10-02" for c in chunks)
    assert 0 < expected < len(chunks)
    assert handbook.count(COLLECTION, count_filter=only).count == expected


def test_wrong_vector_size_says_what_to_do(client, chunks):
    qdrant = QdrantClient(":memory:")
    qdrant.create_collection(COLLECTION, vectors_config=models.VectorParams(size=768, distance=models.Distance.COSINE))
    with pytest.raises(VectorSizeMismatchError) as err:
        ensure_collection(qdrant, COLLECTION, size=384)
    message = str(err.value)
    assert "768" in message and "384" in message
    assert f"delete_collection({COLLECTION!r})" in message and "new collection name" in message
    with pytest.raises(VectorSizeMismatchError):
        index_chunks(client, qdrant, COLLECTION, chunks[:2], embed_model=EMBED_MODEL)
    assert qdrant.count(COLLECTION).count == 0, "nothing was written"


def test_ensure_collection_creates_with_the_given_size():
    qdrant = QdrantClient(":memory:")
    ensure_collection(qdrant, "fresh", size=384)
    params = qdrant.get_collection("fresh").config.params.vectors
    assert params.size == 384 and params.distance == models.Distance.COSINE
    ensure_collection(qdrant, "fresh", size=384)  # a second call with the same size is fine


@pytest.mark.slow
def test_gold_document_in_top_5(handbook, client):
    questions = [
        q for q in load_questions() if q["kind"] in CORPUS_KINDS or (q["kind"] == "multi_turn" and q.get("turn") == 1)
    ]
    assert len(questions) >= 50
    misses = []
    for q in questions:
        hits = retrieve(client, handbook, COLLECTION, q["question"], embed_model=EMBED_MODEL, k=5)
        scores = [h.score for h in hits]
        assert len(hits) == 5 and scores == sorted(scores, reverse=True)
        if not set(q["doc_ids"]) & {h.doc_id for h in hits}:
            misses.append(q["id"])
    rate = 1 - len(misses) / len(questions)
    print(f"hit rate@5 (gold document among the top 5 chunks): {rate:.1%} of {len(questions)}; misses: {misses}")
    assert rate >= 0.8


def test_citations_map_numbers_to_hits_and_drop_out_of_range():
    hits = make_hits(3)
    answer = "Form IR-4 [2], within 24 hours [1, 2]. Not [7], not [0], see [3][3]."
    assert cited_numbers(answer) == [2, 1, 7, 0, 3]
    assert citations(answer, hits) == [hits[1], hits[0], hits[2]]
    assert citations("no citations at all, 24 hours", hits) == []
    assert citations("[1]", []) == []


def test_prompt_numbers_the_sources():
    hits = make_hits(3)
    system, user = build_messages("Which form?", hits)
    assert system["role"] == "system" and NOT_IN_DOCS in system["content"]
    assert user["role"] == "user" and user["content"].rstrip().endswith("Answer with citations:")
    positions = [user["content"].index(f"[{i}] Doc {i} (updated 2025-01-01)\ntext {i}") for i in (1, 2, 3)]
    assert positions == sorted(positions) and "Question: Which form?" in user["content"]


def test_answer_schema_allows_only_the_given_source_ids():
    hits = make_hits(3)
    schema = answer_schema(hits)
    assert schema["required"] == ["answer", "sources"]
    sources = schema["properties"]["sources"]
    assert sources["items"]["enum"] == ["doc1#0", "doc2#0", "doc3#0"] and sources["minItems"] == 1
    assert answer_schema(hits, ask_answerable=True)["required"] == ["answerable", "answer", "sources"]
    system, user = structured_messages("Which form?", hits, ask_answerable=True)
    assert "answerable" in system["content"] and "id: doc2#0\nDoc 2 (updated 2025-01-01)\ntext 2" in user["content"]


def test_score_gate_refuses_without_calling_the_model():
    low = [replace(h, score=SCORE_GATE - 0.01) for h in make_hits(2)]
    assert gated(low) and gated([]) and not gated(make_hits(2)) and not gated(low, gate=None)
    nowhere = ollama.Client(host="http://127.0.0.1:9")  # a real client; the gate answers before any request
    result = answer_grounded(nowhere, "How fast is PETREL?", low, model=STAND_IN_CHAT_MODEL)
    assert result.answer == NOT_IN_DOCS and result.refused_by == "score gate" and result.sources == []


def test_best_threshold_separates_the_scores():
    gate, right, n = best_threshold([0.2, 0.3, 0.6, 0.7], [False, False, True, True])
    assert (gate, right, n) == (0.45, 4, 4)
    gate, right, _ = best_threshold([0.5, 0.4, 0.6], [False, True, True])  # no clean cut: 2 of 3 at best
    assert right == 2


@pytest.mark.slow
def test_structured_answer_cites_only_given_ids(handbook, client):
    question = "Which form do I use to report an incident or a near miss, and how soon must it be handed in?"
    hits = retrieve(client, handbook, COLLECTION, question, embed_model=EMBED_MODEL, k=5)
    assert not gated(hits)
    result = answer_grounded(
        client, question, hits, model=STAND_IN_CHAT_MODEL, options={"temperature": 0, "seed": 42, "num_predict": 80}
    )
    print(f"answer: {result.answer!r}; sources: {[h.chunk_id for h in result.sources]}")
    assert result.sources and all(h in hits for h in result.sources) and not result.refused_by


@pytest.mark.slow
def test_end_to_end_answer_cites_only_retrieved_chunks(handbook, client):
    question = "Which form do I use to report an incident or a near miss, and how soon must it be handed in?"
    hits = retrieve(client, handbook, COLLECTION, question, embed_model=EMBED_MODEL, k=5)
    assert "incident-reporting" in {h.doc_id for h in hits}
    reply = client.chat(
        model=STAND_IN_CHAT_MODEL,
        messages=build_messages(question, hits),
        options={"temperature": 0, "seed": 42, "num_predict": 120},
    )
    answer = reply.message.content
    print(f"answer: {answer!r}; cited: {cited_numbers(answer)}")
    assert answer.strip() and reply.prompt_eval_count > 0
    assert all(1 <= n <= len(hits) for n in cited_numbers(answer))
    assert all(h in hits for h in citations(answer, hits))


def test_ensure_index_reindexes_a_collection_of_the_right_count_but_another_vector_size(client, chunks):
    few = chunks[:3]
    qdrant = QdrantClient(":memory:")
    ensure_collection(qdrant, COLLECTION, size=8)  # an old index, made with another embedding model
    qdrant.upsert(COLLECTION, [models.PointStruct(id=point_id(c.id), vector=[0.1] * 8, payload={}) for c in few])
    assert qdrant.count(COLLECTION).count == len(few), "the point count alone says the index is complete"
    with pytest.raises(VectorSizeMismatchError, match="8-d vectors.*384-d.*delete_collection"):
        ensure_index(client, qdrant, COLLECTION, few, embed_model=EMBED_MODEL, recreate=False)
    assert ensure_index(client, qdrant, COLLECTION, few, embed_model=EMBED_MODEL) == len(few)
    assert collection_vector_size(qdrant, COLLECTION) == 384 and qdrant.count(COLLECTION).count == len(few)
    assert ensure_index(client, qdrant, COLLECTION, few, embed_model=EMBED_MODEL) == 0, "complete: nothing written"
