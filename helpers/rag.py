"""Retrieve chunks and build a grounded, citable prompt. Taught in 06_rag.ipynb (hybrid=True: 11_hybrid-search.ipynb)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import ollama
from qdrant_client import QdrantClient, models

from helpers.hybrid import hybrid_points
from helpers.index import embed_texts
from helpers.language import ENGLISH

NOT_IN_DOCS = ENGLISH.not_in_docs  # the exact refusal sentence (Russian: helpers.language.RUSSIAN)
SYSTEM_PROMPT = ENGLISH.system_prompt  # texts_for(language).system_prompt for the corpus's language


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk with its similarity score."""

    chunk_id: str
    doc_id: str
    title: str
    text: str
    score: float
    payload: dict


def retrieve(
    client: ollama.Client,
    qdrant: QdrantClient,
    collection: str,
    query: str,
    *,
    embed_model: str,
    k: int = 5,
    query_filter: models.Filter | None = None,
    hybrid: bool = False,
) -> list[Hit]:
    """Embed the query and return the k most similar chunks, best first (hybrid=True: dense + BM25 fused by RRF)."""
    (vector,) = embed_texts(client, [query], model=embed_model, progress=False, as_query=True)
    return search(qdrant, collection, vector, query, k=k, query_filter=query_filter, hybrid=hybrid)


def search(
    qdrant: QdrantClient,
    collection: str,
    vector: list[float],
    query: str,
    *,
    k: int = 5,
    query_filter: models.Filter | None = None,
    hybrid: bool = False,
) -> list[Hit]:
    """retrieve's second half: the k chunks nearest an embedded query (hybrid=True: BM25 on the query text too)."""
    if hybrid:
        points = hybrid_points(qdrant, collection, vector, query, k=k, query_filter=query_filter)
    else:
        points = qdrant.query_points(
            collection, query=vector, limit=k, query_filter=query_filter, with_payload=True
        ).points
    return [to_hit(p) for p in points]


def to_hit(point: models.ScoredPoint) -> Hit:
    """A Qdrant point (with payload) as a Hit."""
    p = point.payload or {}
    return Hit(p["chunk_id"], p["doc_id"], p.get("title") or "", p["text"], point.score, p)


def format_sources(hits: list[Hit]) -> str:
    """Number the hits as [1], [2], ... with title and date, for the prompt."""
    return "\n\n".join(
        f"[{i}] {h.title} (updated {h.payload.get('updated') or 'n/a'})\n{h.text}" for i, h in enumerate(hits, 1)
    )


def build_messages(question: str, hits: list[Hit], system: str = SYSTEM_PROMPT) -> list[dict]:
    """Chat messages: the system rules, then the numbered sources and the question."""
    user = f"Sources:\n\n{format_sources(hits)}\n\nQuestion: {question}\nAnswer with citations:"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def cited_numbers(answer: str) -> list[int]:
    """The source numbers an answer cites, like [2] or [1, 3], in order of first use."""
    seen: list[int] = []
    for group in re.findall(r"\[(\d+(?:\s*,\s*\d+)*)\]", answer):
        for n in (int(x) for x in group.split(",")):
            if n not in seen:
                seen.append(n)
    return seen


def citations(answer: str, hits: list[Hit]) -> list[Hit]:
    """The retrieved chunks an answer cites; numbers that point at no source are dropped."""
    return [hits[n - 1] for n in cited_numbers(answer) if 1 <= n <= len(hits)]
