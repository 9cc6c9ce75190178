"""One RAG chat turn, without UI or HTTP: history -> rewrite (retrieval only) -> retrieve -> guard -> messages -> options;
then the answer cleaned and its citations marked. Taught in 10_chat-app.ipynb; the notebook's ChatApp (widgets,
helpers/chat_app.py) and the service (SSE, app/) only present it, each streaming the answer its own way.

    turn = RagTurn(client, qdrant, "handbook", chat_model=cfg.chat_model, embed_model=cfg.embed_model)
    prepared = turn.prepare(question, past=last_n(history.messages(chat_id), n=6))
    stream = client.chat(model=cfg.chat_model, messages=prepared.messages, stream=True, options=prepared.options)
    finished = turn.finish("".join(p.message.content for p in stream), prepared.hits)
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from qdrant_client import QdrantClient, models

from helpers.cache import CachedAnswer, TurnCaches, answer_key
from helpers.embedders import with_prefix
from helpers.guardrails import Guard
from helpers.history import rewrite_query
from helpers.language import texts_for
from helpers.metrics import MetricsLog, count_usage
from helpers.rag import Hit, build_messages, cited_numbers, search
from helpers.resilience import describe, failure_kind
from helpers.telemetry import Stage, Telemetry

# temperature 0 and a seed: the same question gives the same answer. "\nQuestion:" stops a small model that starts
# writing the next turn of the prompt's pattern itself (clean_answer cuts what a server sends before it stops).
OPTIONS: dict[str, Any] = {"temperature": 0, "seed": 42, "num_predict": 120, "num_ctx": 4096, "stop": ["\nQuestion:"]}
METERED = ("rewrite", "retrieve")  # the stages that get a metrics row (generation is recorded by who streams it)


def generation_options(overrides: dict | None = None) -> dict:
    """The answer's generation options: OPTIONS with the caller's overrides (a new dict)."""
    return {**OPTIONS, **(overrides or {})}


def clean_answer(text: str) -> str:
    """The answer without surrounding space or a trailing echoed "Question: ..." line."""
    return re.split(r"\n\s*Question:", text.strip())[0].strip()


def cited_sources(hits: list[Hit], answer: str) -> list[dict]:
    """The retrieved chunks, numbered as in the prompt, each marked cited or not by the answer."""
    cited = set(cited_numbers(answer))
    return [
        {
            "n": n,
            "chunk_id": h.chunk_id,
            "doc_id": h.doc_id,
            "title": h.title,
            "score": round(h.score, 4),
            "text": h.text,
            "cited": n in cited,
        }
        for n, h in enumerate(hits, 1)
    ]


@dataclass
class Prepared:
    """Everything the model needs for one answer, and what the presenter shows about it."""

    question: str  # the user's own words: what the answer prompt carries
    query: str  # what was searched: the standalone rewrite of a follow-up (retrieval only)
    hits: list[Hit]
    messages: list[dict]
    options: dict
    notes: list[str] = field(default_factory=list)  # what was skipped, e.g. a rewrite or a search that failed
    dropped: list[tuple[Hit, list[str]]] = field(default_factory=list)  # chunks the guardrails left out
    cache_key: str = ""  # the answer cache's key (lesson 18), "" without an answer cache
    cached: CachedAnswer | None = None  # an answer cache hit: replay it, no model call


@dataclass
class Finished:
    """An answer after the turn: the text to store and show, its sources marked cited, what the guardrails changed."""

    text: str
    sources: list[dict]
    changes: list[str] = field(default_factory=list)
    refused: bool = False


@dataclass
class RagTurn:
    """The one RAG turn: `prepare` the messages for a question, then `finish` the streamed answer.

    Every stage runs inside `telemetry.stage` when telemetry is given (span + metric + log line), else inside
    `metrics.timed`. retry(stage) returns the policy that wraps that stage's backend call (default: call it once).
    A failing rewrite falls back to the question, a failing search to no sources; each adds a note.
    """

    client: Any
    qdrant: QdrantClient
    collection: str
    _: KW_ONLY
    chat_model: str
    embed_model: str
    k: int = 4
    hybrid: bool = False  # True: dense + BM25 fused by RRF (lesson 11)
    query_filter: models.Filter | None = None
    guard: Guard | None = None  # lesson 15's guardrails; None: lesson 10's pipeline
    language: str = "en"  # the system prompt's language without a guard (a guard has its own): helpers/language.py
    options: dict = field(default_factory=generation_options)
    metrics: MetricsLog | None = None
    telemetry: Telemetry | None = None
    retry: Callable[[str], Callable[..., Any]] | None = None
    on_stage: Callable[[str], object] | None = None  # hears "rewrite", "retrieve", "generate" as each begins
    caches: TurnCaches | None = None  # lesson 18: query embeddings, and answers when caches.answers is on

    @contextmanager
    def stage(self, name: str, *, model: str = "", request_id: str = "", **attributes: Any) -> Iterator[Stage]:
        """A stage's span, metric row and log line (with telemetry), or its metric row alone (without)."""
        metrics = self.metrics if name in METERED else None
        if self.telemetry is not None:
            with self.telemetry.stage(name, metrics=metrics, model=model, **attributes) as stage:
                yield stage
            return
        timed = metrics.timed(name, model=model, request_id=request_id) if metrics is not None else nullcontext()
        with timed as record:
            yield Stage(None, record)

    def call(self, stage: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """fn(*args, **kwargs) under the stage's retry policy."""
        return self.retry(stage)(fn, *args, **kwargs) if self.retry is not None else fn(*args, **kwargs)

    def rewrite(self, question: str, *, past: list[dict], request_id: str = "") -> str:
        """The standalone query for a follow-up (the question itself without a conversation)."""
        if not any(m["role"] != "system" for m in past):
            return question
        self._heard("rewrite")
        with self.stage("rewrite", model=self.chat_model, request_id=request_id) as stage:
            query = self.call(
                "rewrite",
                rewrite_query,
                self.client,
                question,
                history=past,
                model=self.chat_model,
                on_response=lambda r: count_usage(stage.record, r) if stage.record is not None else None,
            )
            if stage.span is not None:
                stage.span.set_attribute("query", query)
        return query

    def retrieve(self, query: str, *, request_id: str = "") -> list[Hit]:
        """Embed the query (retried) and search Qdrant: lesson 06's retrieve, one stage each for the trace."""
        self._heard("retrieve")
        with self.stage("retrieve", model=self.embed_model, request_id=request_id):
            with self.stage("embed", model=self.embed_model, query_chars=len(query)):
                (text,) = with_prefix(self.embed_model, [query], as_query=True)  # e5 models: "query: " first
                if self.caches is not None:  # lesson 18: the same query text embeds once
                    embed = functools.partial(self.call, "embed", self.client.embed)
                    vector = self.caches.embeddings.embed(self.client, text, model=self.embed_model, embed=embed)
                else:
                    vector = self.call("embed", self.client.embed, model=self.embed_model, input=text).embeddings[0]
            with self.stage("search", collection=self.collection, k=self.k, hybrid=self.hybrid) as stage:
                hits = search(
                    self.qdrant,
                    self.collection,
                    vector,
                    query,
                    k=self.k,
                    query_filter=self.query_filter,
                    hybrid=self.hybrid,
                )
                if stage.span is not None:
                    stage.span.set_attribute("chunks", [h.chunk_id for h in hits])
                    stage.span.set_attribute("scores", [round(h.score, 3) for h in hits])
        return hits

    def prepare(
        self, question: str, *, past: list[dict], request_id: str = "", rewrite: bool = True, degrade: bool = True
    ) -> Prepared:
        """Rewrite (for retrieval only), retrieve, guard, build the messages: the answer prompt carries `question`.

        rewrite=False searches with the question itself (e.g. while the LLM is known to be down). degrade=False
        raises a failing rewrite or search instead of going on without it.
        """
        query, notes = question, []
        if rewrite:
            try:
                query = self.rewrite(question, past=past, request_id=request_id)
            except Exception as exc:
                if not degrade:
                    raise
                notes.append(f"the follow-up was not rewritten ({failure_kind(exc)})")
        try:
            hits = self.retrieve(query, request_id=request_id)
        except Exception as exc:
            if not degrade:
                raise
            hits = []
            notes.append(f"the handbook could not be searched ({describe(exc)}); this answer has no sources")
        dropped: list[tuple[Hit, list[str]]] = []
        if self.guard is not None:  # chunks that carry instructions are left out; the sources are fenced as data
            hits, dropped = self.guard.filter_hits(hits)
            messages = self.guard.messages(question, hits, past)
        else:
            system, user = build_messages(question, hits, texts_for(self.language).system_prompt)
            messages = [system, *past, user]
        prepared = Prepared(question, query, hits, messages, dict(self.options), notes, dropped)
        if self.caches is not None and self.caches.answers and not notes:  # a degraded answer is never cached
            chunks = [(h.chunk_id, h.text) for h in hits]
            prepared.cache_key = answer_key(
                question=question, chunks=chunks, past=past, model=self.chat_model, options=prepared.options
            )
            prepared.cached = self.caches.answer_cache.lookup(prepared.cache_key, prepared.options)
        self._heard("generate")
        return prepared

    def remember(self, prepared: Prepared, finished: Finished, *, usage: dict) -> None:
        """Put a complete, unrefused answer in the answer cache (when it is on and the options make it repeatable)."""
        if self.caches is not None and prepared.cache_key and not finished.refused:
            self.caches.answer_cache.store(prepared.cache_key, prepared.options, CachedAnswer(finished.text, usage))

    def finish(self, answer: str, hits: list[Hit]) -> Finished:
        """The streamed answer cleaned (and checked by the guardrails), with its sources marked cited or not."""
        text, changes, refused = clean_answer(answer), [], False
        if self.guard is not None:  # links, canary-like codes, bad citations stripped; a prompt echo refused
            checked = self.guard.check_output(text, hits)
            text, changes, refused = checked.text, checked.changes, checked.refused
        return Finished(text, cited_sources(hits, text), changes, refused)

    def _heard(self, stage: str) -> None:
        """Tell the presenter a stage begins (e.g. a status line)."""
        if self.on_stage is not None:
            self.on_stage(stage)
