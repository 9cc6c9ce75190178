"""helpers.hybrid: BM25 in Qdrant, fusion, filters in both branches, re-indexing, reranking, MMR.

Fast tests use embedded Qdrant with hand-made vectors (no model); the slow ones use the stand-in's real models.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from ollama._types import Logprob, TokenLogprob
from qdrant_client import QdrantClient, models

from helpers.chunking import Chunk
from helpers.config import EMBED_MODEL, STAND_IN_CHAT_MODEL
from helpers.hybrid import (
    TEXT_FIELD,
    MissingTextIndexError,
    bm25_points,
    bm25_query,
    grade_from_logprobs,
    hybrid_points,
    hybrid_prefetch,
    mmr_points,
    rerank,
    rrf,
    stem_text,
)
from helpers.index import ensure_collection, ensure_index, index_chunks, index_payload, point_id
from helpers.rag import retrieve

TEXTS = [  # (category, title, text); vectors are made by hand below
    ("safety", "Incidents", "Report every incident on form IR-4 within one day."),
    ("safety", "Glacier", "Wear a helmet on the glacier and carry a radio."),
    ("travel", "Field trips", "Field trips need form FTP-3 signed by the leader."),
    ("travel", "Boats", "Boats return when the wind is strong."),
    ("station", "Meals", "The galley serves dinner at six."),
    ("station", "Quiet hours", "Quiet hours start at ten in the evening."),
]


def vector(i: int, n: int = len(TEXTS)) -> list[float]:
    """A unit vector pointing mostly along axis i, a little along every other axis."""
    v = [0.1] * n
    v[i] = 1.0
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def chunk(i: int) -> Chunk:
    category, title, text = TEXTS[i]
    return Chunk(
        f"d{i}#0",
        f"d{i}",
        0,
        text,
        {"title": title, "category": category, "updated": "2025-01-01", "tags": [], "section": ""},
    )


@pytest.fixture()
def tiny() -> QdrantClient:
    """Embedded Qdrant with the six hand-made points, created by ensure_collection (so with the BM25 index)."""
    qdrant = QdrantClient(":memory:")
    ensure_collection(qdrant, "tiny", size=len(TEXTS))
    qdrant.upsert(
        "tiny",
        points=[
            models.PointStruct(id=point_id(chunk(i).id), vector=vector(i), payload=index_payload(chunk(i)))
            for i in range(len(TEXTS))
        ],
    )
    return qdrant


def test_bm25_ranks_the_document_holding_a_rare_code_first(tiny):
    points = bm25_points(tiny, "tiny", "Which form, FTP-3?", k=3)
    assert points[0].payload["doc_id"] == "d2"
    assert [p.score for p in points] == sorted((p.score for p in points), reverse=True)
    # "form" is in two documents, "ftp" and "3" only in d2: the rare terms decide
    assert {p.payload["doc_id"] for p in points} == {"d2", "d0"}


def test_bm25_reads_the_title_too(tiny):
    assert [p.payload["doc_id"] for p in bm25_points(tiny, "tiny", "meals", k=6)] == ["d4"]


def test_fusion_is_rrf_sorted_and_deterministic(tiny):
    query_vector = vector(3)  # dense favours d3 (boats); BM25 below favours d0 and d2 (forms)
    runs = [hybrid_points(tiny, "tiny", query_vector, "form IR-4 wind", k=6, candidates=6) for _ in range(3)]
    ids = [[p.payload["doc_id"] for p in run] for run in runs]
    assert ids[0] == ids[1] == ids[2]
    scores = [p.score for p in runs[0]]
    assert scores == sorted(scores, reverse=True)
    dense = [
        p.payload["doc_id"] for p in tiny.query_points("tiny", query=query_vector, limit=6, with_payload=True).points
    ]
    bm25 = [p.payload["doc_id"] for p in bm25_points(tiny, "tiny", "form IR-4 wind", k=6)]
    expected = dict(rrf([dense, bm25]))
    assert {p.payload["doc_id"]: pytest.approx(p.score) for p in runs[0]} == expected  # Qdrant's RRF = ours
    assert ids[0][0] in {"d0", "d3"} and set(ids[0]) == set(dense) | set(bm25)


def test_rrf_by_hand():
    fused = rrf([["a", "b", "c"], ["c", "a"]], k=60)
    assert [x for x, _ in fused] == ["a", "c", "b"]
    assert fused[0][1] == pytest.approx(1 / 60 + 1 / 61)
    assert rrf([["x", "y"], ["y", "x"]]) == [("x", 1 / 60 + 1 / 61), ("y", 1 / 61 + 1 / 60)]  # a tie: by id


def test_dbsf_is_sorted_and_holds_both_branches(tiny):
    points = hybrid_points(tiny, "tiny", vector(3), "form FTP-3", k=6, candidates=6, fusion=models.Fusion.DBSF)
    scores = [p.score for p in points]
    assert scores == sorted(scores, reverse=True) and {"d2", "d3"} <= {p.payload["doc_id"] for p in points}


def test_filter_applies_inside_both_prefetch_branches(tiny):
    travel = models.Filter(must=[models.FieldCondition(key="category", match=models.MatchValue(value="travel"))])
    branches = hybrid_prefetch(vector(0), "form IR-4", limit=2, query_filter=travel)
    assert len(branches) == 2 and all(b.filter == travel for b in branches)
    assert branches[1].using == TEXT_FIELD and isinstance(branches[1].query, models.TextQuery)
    # the unfiltered winner of both branches is d0 (safety); with 2 candidates per branch, a filter applied only
    # after fusion would leave at most what survived, and d0 would be there before it
    points = hybrid_points(tiny, "tiny", vector(0), "form IR-4", k=2, candidates=2, query_filter=travel)
    assert [p.payload["category"] for p in points] == ["travel", "travel"]
    assert {p.payload["doc_id"] for p in points} == {"d2", "d3"}


def test_a_collection_without_the_text_index_gives_a_clear_error_and_is_upgraded():
    qdrant = QdrantClient(":memory:")  # as lesson 05 built collections before lesson 11: no BM25 index
    qdrant.create_collection(
        "old", vectors_config=models.VectorParams(size=len(TEXTS), distance=models.Distance.COSINE)
    )
    qdrant.upsert(
        "old",
        points=[
            models.PointStruct(id=point_id(chunk(i).id), vector=vector(i), payload=index_payload(chunk(i)))
            for i in range(len(TEXTS))
        ],
    )
    with pytest.raises(MissingTextIndexError, match="index_chunks"):
        bm25_points(qdrant, "old", "FTP-3")
    with pytest.raises(MissingTextIndexError, match="no BM25 text index"):
        hybrid_points(qdrant, "old", vector(2), "FTP-3")
    ensure_collection(qdrant, "old", size=len(TEXTS))  # what index_chunks calls first: it adds the index
    assert bm25_points(qdrant, "old", "FTP-3", k=1)[0].payload["doc_id"] == "d2"
    assert qdrant.count("old").count == len(TEXTS)


def test_stemming_joins_russian_inflections_and_english_plurals():
    assert stem_text("Онегин") == stem_text("Онегина") == stem_text("Онегину") == stem_text("ОНЕГИНЫМ") == "онегин"
    assert stem_text("station") == stem_text("Stations") and stem_text("glaciers") == stem_text("glacier")
    # the stemmer is chosen per word by its script: an English stemmer would leave the Russian word whole
    assert stem_text("Tatiana писала письма letters") == "tatiana писа письм letter"
    assert bm25_query("Где Онегину?").text == "где онегин"


RUSSIAN = [  # (title, text): a query in another grammatical case than the text must still find it
    ("Глава первая", "Онегин приехал в деревню к умирающему дяде."),
    ("Письмо", "Татьяна пишет письмо Онегину ночью."),
    ("Stations", "Both field stations keep spare radios."),
]


@pytest.fixture()
def inflected() -> QdrantClient:
    """Embedded Qdrant holding RUSSIAN, stored through index_payload (so stemmed)."""
    qdrant = QdrantClient(":memory:")
    ensure_collection(qdrant, "ru", size=3)
    points = [
        models.PointStruct(
            id=point_id(f"r{i}#0"),
            vector=vector(i, 3),
            payload=index_payload(Chunk(f"r{i}#0", f"r{i}", 0, text, {"title": title})),
        )
        for i, (title, text) in enumerate(RUSSIAN)
    ]
    qdrant.upsert("ru", points=points)
    return qdrant


def test_bm25_finds_a_word_in_another_case_or_number(inflected):
    # "Онегина" (genitive) appears in neither text; both hold a form of it. Unstemmed, BM25 would find nothing.
    assert {p.payload["doc_id"] for p in bm25_points(inflected, "ru", "письмо Онегина", k=3)} == {"r0", "r1"}
    assert bm25_points(inflected, "ru", "письма", k=3)[0].payload["doc_id"] == "r1"
    assert [p.payload["doc_id"] for p in bm25_points(inflected, "ru", "station radio", k=3)] == ["r2"]


def test_ensure_index_indexes_again_a_collection_stored_before_stemming():
    fake = SimpleNamespace(  # fast tier: a fake embedder, hand-made vectors (the real models are in the slow tier)
        embed=lambda model, input: SimpleNamespace(
            embeddings=[vector(0, 3)] * (1 if isinstance(input, str) else len(input))
        )
    )
    chunks = [Chunk(f"r{i}#0", f"r{i}", 0, text, {"title": title}) for i, (title, text) in enumerate(RUSSIAN)]
    qdrant = QdrantClient(":memory:")
    ensure_collection(qdrant, "old", size=3)
    old = [{**index_payload(c), "search_text": c.text} for c in chunks]  # as stored before: raw text, no stems
    for payload in old:
        del payload[TEXT_FIELD]
    qdrant.upsert(
        "old",
        points=[models.PointStruct(id=point_id(c.id), vector=vector(0, 3), payload=p) for c, p in zip(chunks, old)],
    )
    assert bm25_points(qdrant, "old", "Онегину", k=3) == [], "the old points hold no stemmed text"
    assert ensure_index(fake, qdrant, "old", chunks, embed_model="all-minilm") == len(chunks)
    assert {p.payload["doc_id"] for p in bm25_points(qdrant, "old", "Онегину", k=3)} == {"r0", "r1"}
    assert ensure_index(fake, qdrant, "old", chunks, embed_model="all-minilm") == 0, "complete: nothing written"


def test_mmr_returns_k_distinct_points(tiny):
    points = mmr_points(tiny, "tiny", vector(1), k=3, diversity=0.9, candidates=6)
    assert len({p.id for p in points}) == 3 and points[0].payload["doc_id"] == "d1"


def test_grade_from_logprobs_is_the_expected_grade():
    digit = Logprob(
        token="2",
        logprob=math.log(0.5),
        top_logprobs=[
            TokenLogprob(token="2", logprob=math.log(0.5)),
            TokenLogprob(token="3", logprob=math.log(0.3)),
            TokenLogprob(token="0", logprob=math.log(0.2)),
        ],
    )
    tokens = [Logprob(token='{"grade": ', logprob=-0.1), digit, Logprob(token="}", logprob=-0.01)]
    assert grade_from_logprobs(tokens) == pytest.approx(0.5 * 2 + 0.3 * 3)
    assert grade_from_logprobs(None) is None and grade_from_logprobs([]) is None


@pytest.mark.slow
def test_reindexing_twice_leaves_the_same_point_count(client, handbook_index):
    shared, chunks, name = handbook_index  # the whole handbook, indexed once per session (tests/conftest.py)
    assert shared.count(name).count == len(chunks)
    some = [c for c in chunks if c.doc_id in {"incident-reporting", "vehicle-fleet"}]  # written twice: its own copy
    qdrant = QdrantClient(":memory:")
    first = index_chunks(client, qdrant, "twice", some, embed_model=EMBED_MODEL)
    count = qdrant.count("twice").count
    assert index_chunks(client, qdrant, "twice", some, embed_model=EMBED_MODEL) == first == count == len(some) > 2
    assert qdrant.count("twice").count == count, "re-indexing overwrote the points instead of adding copies"


@pytest.mark.slow
def test_hybrid_retrieve_finds_a_code_and_keeps_the_filter(handbook_index, client):
    qdrant, *_ = handbook_index
    hits = retrieve(client, qdrant, "handbook", "VH-120", embed_model=EMBED_MODEL, k=5, hybrid=True)
    assert len(hits) == 5 and any("VH-120" in h.text for h in hits[:3])
    policy = models.Filter(must=[models.FieldCondition(key="category", match=models.MatchValue(value="policy"))])
    hits = retrieve(
        client, qdrant, "handbook", "form FTP-3", embed_model=EMBED_MODEL, k=5, query_filter=policy, hybrid=True
    )
    assert len(hits) == 5 and {h.payload["category"] for h in hits} == {"policy"}
    dense = retrieve(client, qdrant, "handbook", "form FTP-3", embed_model=EMBED_MODEL, k=5)  # the default is unchanged
    assert [h.score for h in dense] == sorted((h.score for h in dense), reverse=True) and all(
        -1.0 <= h.score <= 1.0 for h in dense
    )


@pytest.mark.slow
def test_reranker_keeps_exactly_the_candidates_it_was_given(handbook_index, client):
    qdrant, *_ = handbook_index
    question = "Which form do I use to report an incident?"
    candidates = retrieve(client, qdrant, "handbook", question, embed_model=EMBED_MODEL, k=4, hybrid=True)
    reranked = rerank(client, question, candidates, model=STAND_IN_CHAT_MODEL)
    assert sorted(h.chunk_id for h in reranked) == sorted(h.chunk_id for h in candidates)  # none invented or dropped
    assert len(reranked) == len(candidates)
    grades = [h.score for h in reranked]
    assert grades == sorted(grades, reverse=True) and all(0 <= g <= 3 for g in grades)
    by_id = {h.chunk_id: h for h in candidates}
    assert all(h.text == by_id[h.chunk_id].text for h in reranked)  # the same chunks, only the score is new
    assert [h.chunk_id for h in rerank(client, question, candidates, model=STAND_IN_CHAT_MODEL, k=2)] == [
        h.chunk_id for h in reranked[:2]
    ]  # temperature 0: the same order again
