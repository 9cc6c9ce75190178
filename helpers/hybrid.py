"""Keyword (BM25) search, hybrid fusion, reranking and MMR in Qdrant. Taught in 11_hybrid-search.ipynb."""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import ollama
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse
from snowballstemmer import stemmer

# Payload field BM25 ranks over: title + chunk text (the words the embedder sees), each word lower-cased and reduced
# to its stem by stem_text, so that "Онегин", "Онегина" and "Онегину" (or "station" and "stations") are one term.
# Collections indexed before stemming stored "search_text": helpers.index.ensure_index indexes those again.
TEXT_FIELD = "search_stems"
# Qdrant's default word tokenizer, lowercased, with BM25 scoring on: works in embedded Qdrant and on a server alike.
TEXT_INDEX = models.TextIndexParams(type=models.TextIndexType.TEXT, lowercase=True, scoring=True)
WORD = re.compile(r"\w+")
CYRILLIC = re.compile(r"[\u0400-\u04ff]")
LATIN = re.compile(r"[a-z\u00c0-\u024f]")
_stemmers = threading.local()  # snowballstemmer's stemmers keep state while they work: one set per thread
RRF_K = 60  # reciprocal rank fusion: score = sum over branches of 1 / (k + position), position 0 for the best

RERANK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"grade": {"type": "integer", "enum": [0, 1, 2, 3]}},
    "required": ["grade"],
}
RERANK_PROMPT = (
    "Grade how well the passage answers the question. 3: it states the answer. 2: it is about the question's "
    "subject and partly answers it. 1: same topic, no answer. 0: unrelated. Reply in JSON.\n\n"
    "Question: {query}\n\nPassage ({title}):\n{text}"
)


class MissingTextIndexError(RuntimeError):
    """A collection has no BM25 text index, so keyword and hybrid search cannot run on it."""


def stem_word(word: str) -> str:
    """A lower-case word's Snowball stem: the Russian stemmer for Cyrillic, the English one for Latin, else as is."""
    language = "russian" if CYRILLIC.search(word) else "english" if LATIN.search(word) else None
    if language is None:
        return word
    if not hasattr(_stemmers, language):
        setattr(_stemmers, language, stemmer(language))
    return getattr(_stemmers, language).stemWord(word)


def stem_text(text: str) -> str:
    """The words of a text, lower-cased and stemmed, joined by spaces: what BM25 stores and what it is asked."""
    return " ".join(stem_word(w) for w in WORD.findall(text.lower()))


def bm25_query(text: str) -> models.TextQuery:
    """A BM25 query over the stemmed text index (use it with using=TEXT_FIELD): the question's words, stemmed."""
    return models.TextQuery(text=stem_text(text))


def hybrid_prefetch(
    vector: Sequence[float], text: str, *, limit: int, query_filter: models.Filter | None = None
) -> list[models.Prefetch]:
    """Two candidate lists for one query_points call: dense (cosine) and BM25, each with the filter inside."""
    return [
        models.Prefetch(query=list(vector), limit=limit, filter=query_filter),
        models.Prefetch(query=bm25_query(text), using=TEXT_FIELD, limit=limit, filter=query_filter),
    ]


def _missing_index(collection: str, error: Exception) -> MissingTextIndexError:
    """The error to raise when Qdrant refuses a text query for want of the index."""
    return MissingTextIndexError(
        f"Collection {collection!r} has no BM25 text index on {TEXT_FIELD!r}, so keyword and hybrid search cannot "
        f"run ({error}). Index the chunks again with helpers.index.index_chunks: it creates the index and stores the "
        f"{TEXT_FIELD!r} field BM25 reads on every point (same ids, so nothing is duplicated)."
    )


def _query(qdrant: QdrantClient, collection: str, **kwargs) -> list[models.ScoredPoint]:
    """qdrant.query_points(...).points, turning a missing text index into a MissingTextIndexError."""
    try:
        return qdrant.query_points(collection, with_payload=True, **kwargs).points
    except (ValueError, UnexpectedResponse) as e:
        if "text index" in str(e).lower() or "scoring" in str(e).lower():
            raise _missing_index(collection, e) from e
        raise


def bm25_points(
    qdrant: QdrantClient, collection: str, text: str, *, k: int = 5, query_filter: models.Filter | None = None
) -> list[models.ScoredPoint]:
    """The k chunks BM25 ranks highest for text, best first."""
    return _query(qdrant, collection, query=bm25_query(text), using=TEXT_FIELD, limit=k, query_filter=query_filter)


def hybrid_points(
    qdrant: QdrantClient,
    collection: str,
    vector: Sequence[float],
    text: str,
    *,
    k: int = 5,
    query_filter: models.Filter | None = None,
    candidates: int = 50,
    fusion: models.Fusion = models.Fusion.RRF,
) -> list[models.ScoredPoint]:
    """Dense and BM25 candidates (candidates each, filtered) fused by RRF or DBSF in one query_points call."""
    query = (
        models.RrfQuery(rrf=models.Rrf(k=RRF_K)) if fusion == models.Fusion.RRF else models.FusionQuery(fusion=fusion)
    )
    return _query(
        qdrant,
        collection,
        prefetch=hybrid_prefetch(vector, text, limit=max(candidates, k), query_filter=query_filter),
        query=query,
        limit=k,
    )


def rrf(rankings: Sequence[Sequence[str]], *, k: int = RRF_K) -> list[tuple[str, float]]:
    """Reciprocal rank fusion of ranked id lists, as Qdrant computes it: (id, score) best first, ties by id."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for position, item in enumerate(ranking):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + position)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))


def mmr_points(
    qdrant: QdrantClient,
    collection: str,
    vector: Sequence[float],
    *,
    k: int = 5,
    diversity: float = 0.5,
    candidates: int = 20,
    query_filter: models.Filter | None = None,
) -> list[models.ScoredPoint]:
    """k chunks picked by maximal marginal relevance among the candidates nearest the vector."""
    query = models.NearestQuery(nearest=list(vector), mmr=models.Mmr(diversity=diversity, candidates_limit=candidates))
    return _query(qdrant, collection, query=query, limit=k, query_filter=query_filter)


def grade_from_logprobs(logprobs: Sequence | None) -> float | None:
    """Expected grade from the log-probabilities of the grade digit, or None if the backend sent none."""
    for entry in logprobs or []:
        if entry.token.strip() in {"0", "1", "2", "3"}:
            options = [*(entry.top_logprobs or []), entry]
            probs = {o.token.strip(): math.exp(o.logprob) for o in options if o.token.strip() in {"0", "1", "2", "3"}}
            total = sum(probs.values())
            return sum(int(t) * p for t, p in probs.items()) / total if total else None
    return None


def relevance_grade(client: ollama.Client, query: str, title: str, text: str, *, model: str) -> float:
    """The chat model's 0-3 relevance grade of one passage (expected value from logprobs when it sends them)."""
    messages = [{"role": "user", "content": RERANK_PROMPT.format(query=query, title=title, text=text)}]
    options = {"temperature": 0, "num_predict": 16}
    try:
        response = client.chat(
            model=model, messages=messages, format=RERANK_SCHEMA, options=options, logprobs=True, top_logprobs=4
        )
    except ollama.ResponseError as exc:  # a backend without logprobs says so with a 400 (the stand-in has them)
        if exc.status_code != 400 or "logprobs" not in str(exc.error):
            raise
        response = client.chat(model=model, messages=messages, format=RERANK_SCHEMA, options=options)
    from_logprobs = grade_from_logprobs(response.logprobs)
    if from_logprobs is not None:
        return from_logprobs
    return float(json.loads(response.message.content or "{}")["grade"])


def rerank(client: ollama.Client, query: str, hits: Sequence, *, model: str, k: int | None = None) -> list:
    """The same hits reordered by relevance_grade (ties keep their fused order), score = grade; the top k if given."""
    graded = [(relevance_grade(client, query, h.title, h.text, model=model), i, h) for i, h in enumerate(hits)]
    ordered = [replace(h, score=grade) for grade, _, h in sorted(graded, key=lambda t: (-t[0], t[1]))]
    return ordered[:k] if k is not None else ordered
