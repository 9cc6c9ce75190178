"""Retrieve chunks and build a grounded, citable prompt. Taught in 06_rag.ipynb (hybrid=True: 11_hybrid-search.ipynb)."""

from __future__ import annotations

import json
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


# --- Lesson 06, section 9: a structured answer, and a retrieval-score gate for the refusal -------------------------

# The best source's cosine similarity (dense retrieval, all-minilm: the offline embedder) below which no source is
# taken to hold the answer. Chosen on the question set by `python -m bench.answers` (its "best threshold" line);
# another embedder, or hybrid search's fused scores, need their own.
SCORE_GATE = 0.464
ANSWER_MAX_CHARS = 150  # the schema bounds the answer: one sentence, and a reply that always ends
STRUCTURED_NUM_PREDICT = 160  # tokens enough for the longest reply the schema allows (a shorter cap cuts the JSON)
STRUCTURED_SYSTEM = (
    "You answer questions about Halvorsen Ridge Station using only the sources given, each with its id. "
    "Reply in JSON: answer (one short sentence taken from the sources) and sources (the ids of the sources that "
    "hold the answer). Prefer the most recently updated source when sources disagree."
)


@dataclass(frozen=True)
class Grounded:
    """A structured answer: its text, the retrieved chunks it cites, and who decided to refuse (if anyone)."""

    answer: str
    sources: list[Hit]
    refused_by: str = ""  # "" (answered), "score gate" (no model call) or "model" (answerable: false)
    prompt_tokens: int = 0


def answer_schema(hits: list[Hit], *, ask_answerable: bool = False) -> dict:
    """The JSON schema of an answer: (answerable,) answer, and 1-3 source ids, each one of the hits' chunk ids."""
    properties: dict[str, dict] = {"answerable": {"type": "boolean"}} if ask_answerable else {}
    properties["answer"] = {"type": "string", "maxLength": ANSWER_MAX_CHARS}
    ids = [h.chunk_id for h in hits]
    properties["sources"] = {"type": "array", "items": {"enum": ids}, "minItems": 1, "maxItems": 3}
    return {"type": "object", "properties": properties, "required": list(properties)}


def structured_messages(question: str, hits: list[Hit], *, ask_answerable: bool = False) -> list[dict]:
    """Chat messages for a structured answer: the sources by id (with title and date), then the question."""
    system = STRUCTURED_SYSTEM + (" answerable: false if no source holds the answer." if ask_answerable else "")
    sources = "\n\n".join(
        f"id: {h.chunk_id}\n{h.title} (updated {h.payload.get('updated') or 'n/a'})\n{h.text}" for h in hits
    )
    user = f"Sources:\n\n{sources}\n\nQuestion: {question}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def gated(hits: list[Hit], *, gate: float | None = SCORE_GATE) -> bool:
    """True when the best source scores below the gate (or nothing was retrieved): refuse without asking the model."""
    return not hits or (gate is not None and max(h.score for h in hits) < gate)


def answer_grounded(
    client: ollama.Client,
    question: str,
    hits: list[Hit],
    *,
    model: str,
    options: dict | None = None,
    gate: float | None = SCORE_GATE,
    ask_answerable: bool = False,
) -> Grounded:
    """Refuse below the score gate; otherwise one chat call whose reply must follow answer_schema(hits)."""
    if gated(hits, gate=gate):
        return Grounded(NOT_IN_DOCS, [], refused_by="score gate")
    options = dict(options or {})
    if 0 < options.get("num_predict", -1) < STRUCTURED_NUM_PREDICT:
        options["num_predict"] = STRUCTURED_NUM_PREDICT
    reply = client.chat(
        model=model,
        messages=structured_messages(question, hits, ask_answerable=ask_answerable),
        format=answer_schema(hits, ask_answerable=ask_answerable),
        options=options,
    )
    data = json.loads(reply.message.content or "{}")
    tokens = reply.prompt_eval_count or 0
    if ask_answerable and data.get("answerable") is False:
        return Grounded(NOT_IN_DOCS, [], refused_by="model", prompt_tokens=tokens)
    by_id = {h.chunk_id: h for h in hits}
    cited = [by_id[i] for i in dict.fromkeys(data.get("sources") or []) if i in by_id]
    return Grounded(str(data.get("answer", "")).strip(), cited, prompt_tokens=tokens)
