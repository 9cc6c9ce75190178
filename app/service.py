"""The RAG chat as a web service: POST /chat/{chat_id} streams the answer as Server-Sent Events. Taught in 12_serve.ipynb
(the guardrails, on by default: 14_guardrails.ipynb).

    from app.service import create_app
    app = create_app(cfg)          # cfg from helpers.setup.setup(); uvicorn serves it (python -m app)

Endpoints: POST /chat/{chat_id} (SSE: token, sources, done | error), GET and DELETE /chats/{chat_id},
GET / (the page), GET /metrics (Prometheus text), GET /healthz (each part ok, or what fails: 503).
Resilience (13_resilience.ipynb): timeouts on every client, retries on transient errors before the first token, a
circuit breaker around the LLM (503 + Retry-After while open), retrieval failures degrade the answer, JSON logs with
the request id (logger "rag"), a span per stage, rag_failures_total{stage,kind} and rag_request_seconds{status}.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import httpx
import ollama
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from opentelemetry import trace as otel_trace
from prometheus_client import CONTENT_TYPE_LATEST, Counter
from pydantic import BaseModel, StringConstraints
from qdrant_client import QdrantClient
from starlette.concurrency import run_in_threadpool

from helpers.chunking import chunk_documents
from helpers.corpus import load_documents
from helpers.guardrails import REFUSAL, Guard
from helpers.history import HistoryStore, last_n, open_history, rewrite_query
from helpers.hybrid import hybrid_points
from helpers.index import index_chunks
from helpers.metrics import MetricsLog, generation_record
from helpers.rag import Hit, build_messages, cited_numbers, to_hit
from helpers.resilience import (
    CircuitBreaker,
    CircuitOpenError,
    describe,
    failure_kind,
    is_transient,
    make_client,
    open_stream_async,
    retrying,
)
from helpers.setup import Config
from helpers.telemetry import REQUEST_ID, Telemetry, elapsed_ms, request_context

log = logging.getLogger("app")
events = logging.getLogger("rag")  # one structured line per stage: JSON with `python -m app` (helpers.telemetry)
STATIC = Path(__file__).parent / "static"
CHAT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_QUESTION_CHARS = 2000
OPTIONS = {"temperature": 0, "seed": 42, "num_predict": 120, "num_ctx": 4096}
BATCH_S = 0.05  # token pieces that arrive within 50 ms go out as one SSE event
BACKEND_DOWN = (ConnectionError, httpx.TransportError)
CLOSING: set[asyncio.Task] = set()  # model streams being closed after a hang-up


class Question(BaseModel):
    """The body of POST /chat/{chat_id}."""

    question: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_QUESTION_CHARS)]


@dataclass
class Service:
    """Everything a request needs: the backends, the history store, the metrics, the generation settings."""

    cfg: Config
    qdrant: QdrantClient
    history: HistoryStore
    collection: str = "handbook"
    k: int = 4
    hybrid: bool = False  # True: dense + BM25 fused by RRF (lesson 11)
    max_messages: int = 6  # the last 3 question/answer pairs go into the prompt
    options: dict = field(default_factory=lambda: dict(OPTIONS))
    metrics: MetricsLog = field(default_factory=MetricsLog)
    startup_s: float | None = None
    indexed: int = 0
    read_s: float = 300.0  # the longest silence allowed between two bytes of a model's answer
    deadline_s: float = 600.0  # the longest a whole answer may take
    attempts: int = 3  # tries for a call that fails transiently (before the first token only)
    breaker_failures: int = 3  # failed turns in a row that open the circuit
    breaker_reset_s: float = 10.0  # how long it stays open before one request probes the backend
    guard: Guard | None = None  # lesson 14's guardrails (create_app turns them on unless WORKSHOP_GUARDRAILS=0)

    def __post_init__(self) -> None:
        host = self.cfg.ollama_host
        self.client = make_client(host, read=self.read_s)  # embeddings, rewrites (sync, in the thread pool)
        self.aclient = make_client(host, read=self.read_s, asynchronous=True)  # the answer stream (cancellable)
        self.probe = make_client(host, read=5)  # /healthz answers fast even when the backend hangs
        self.telemetry = Telemetry("rag-app", registry=self.metrics.registry)
        self.breaker = CircuitBreaker(
            "llm", self.breaker_failures, self.breaker_reset_s, on_change=self.telemetry.on_breaker_change("llm")
        )
        self.requests = Counter(
            "http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.metrics.registry,
        )
        self.turns = Counter(
            "rag_chat_turns",
            "Chat turns by outcome (ok, error, disconnected, blocked)",
            ["outcome"],
            registry=self.metrics.registry,
        )
        self.index_lock = threading.Lock()


def sse(event: str, data: dict) -> str:
    """One Server-Sent Event: an `event:` line, a `data:` line of JSON, a blank line."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def ensure_index(svc: Service) -> int:
    """Index the handbook unless the collection already holds every chunk (idempotent); returns the chunk count."""
    with svc.index_lock:
        docs, _ = load_documents()
        chunks = chunk_documents(docs)
        have = svc.qdrant.count(svc.collection).count if svc.qdrant.collection_exists(svc.collection) else 0
        if have != len(chunks):
            index_chunks(svc.qdrant, svc.client, svc.collection, chunks, svc.cfg.embed_model)
        svc.indexed = len(chunks)
        return len(chunks)


def backend_down(svc: Service, exc: Exception, **extra: object) -> JSONResponse:
    """503 naming the part that failed and the fix (an open circuit breaker: when to retry, and Retry-After)."""
    if isinstance(exc, CircuitOpenError):
        detail = (
            f"The LLM backend at {svc.cfg.ollama_host} failed {svc.breaker.threshold} times in a row, so the "
            f"app stops sending it questions for a while (circuit breaker open). Retry in "
            f"{exc.retry_after_s:.0f} s; the app then tries the backend again by itself. GET /healthz shows "
            "every part."
        )
        return JSONResponse(
            status_code=503,
            headers={"Retry-After": str(max(1, round(exc.retry_after_s)))},
            content={"detail": detail, "retry_after_s": round(exc.retry_after_s, 1), **extra},
        )
    return JSONResponse(
        status_code=503,
        content={
            "detail": (
                f"The LLM backend at {svc.cfg.ollama_host} does not answer ({describe(exc)}). Start Ollama "
                "(`ollama serve`) or the workshop's offline stand-in (`.venv/bin/python -m infra.standin start`), "
                "set OLLAMA_HOST if it runs elsewhere, then retry. GET /healthz shows every part."
            ),
            **extra,
        },
    )


def counted_retries(svc: Service, stage: str, asynchronous: bool = False) -> object:
    """The retry policy of one stage; each retry moves rag_retries_total{stage}. Generation never retries a timeout."""
    return retrying(
        svc.attempts,
        on_retry=lambda _state: svc.telemetry.retries.labels(stage).inc(),
        asynchronous=asynchronous,
        retry_timeouts=stage != "generate",
    )


def search(svc: Service, query: str, request_id: str) -> list[Hit]:
    """Embed the query (retried) and search Qdrant: one span each (lesson 06's retrieve, split for the trace)."""
    tel = svc.telemetry
    with svc.metrics.timed("retrieve", svc.cfg.embed_model, request_id):
        if svc.indexed == 0:
            ensure_index(svc)  # the backend was down at start-up
        with tel.span("embed", model=svc.cfg.embed_model, query_chars=len(query)):
            vector = counted_retries(svc, "embed")(svc.client.embed, model=svc.cfg.embed_model, input=query).embeddings[
                0
            ]
        with tel.span("search", collection=svc.collection, k=svc.k, hybrid=svc.hybrid) as span:
            points = (
                hybrid_points(svc.qdrant, svc.collection, vector, query, k=svc.k)
                if svc.hybrid
                else svc.qdrant.query_points(svc.collection, query=vector, limit=svc.k, with_payload=True).points
            )
            span.set_attribute("hits", len(points))
    return [to_hit(p) for p in points]


def prepare(svc: Service, past: list[dict], question: str, request_id: str) -> tuple[str, list[Hit], list[dict], str]:
    """Rewrite a follow-up, retrieve, build the prompt (lesson 10's turn): (query, hits, messages, what was skipped).

    A failing rewrite falls back to the question itself, a failing retrieval to no sources (the answer says it has
    none); neither stops the turn. The last item says what was skipped ("" if nothing).
    """
    query, notes = question, []
    if past and svc.breaker.state == "closed":  # an open breaker: the LLM is down, do not wait for a rewrite
        start = time.perf_counter()
        try:
            with svc.metrics.timed("rewrite", svc.cfg.chat_model, request_id), svc.telemetry.span("rewrite"):
                query = counted_retries(svc, "rewrite")(rewrite_query, svc.client, svc.cfg.chat_model, past, question)
            events.info("rewrote the follow-up", extra={"stage": "rewrite", "query": query, "ms": elapsed_ms(start)})
        except Exception as exc:  # noqa: BLE001 - the question itself is a worse query, not a failure
            notes.append(f"the follow-up was not rewritten ({failure_kind(exc)})")
            events.warning(
                "rewrite failed: searching with the question itself",
                extra={"stage": "rewrite", "kind": failure_kind(exc), "ms": elapsed_ms(start)},
            )
    start = time.perf_counter()
    try:
        hits = search(svc, query, request_id)
        events.info(
            "retrieved",
            extra={
                "stage": "search",
                "chunks": [h.chunk_id for h in hits],
                "scores": [round(h.score, 3) for h in hits],
                "ms": elapsed_ms(start),
            },
        )
    except Exception as exc:  # noqa: BLE001 - an answer without sources, said so, beats no answer
        hits = []
        notes.append(f"the handbook could not be searched ({describe(exc)}); this answer has no sources")
        events.warning(
            "retrieval failed: answering without sources",
            extra={"stage": "search", "kind": failure_kind(exc), "ms": elapsed_ms(start)},
        )
    if svc.guard is not None:  # chunks that carry instructions are left out; the sources are fenced as data
        hits, dropped = svc.guard.filter_hits(hits)
        for hit, reasons in dropped:
            events.warning(
                "dropped a retrieved chunk (guardrails)",
                extra={"stage": "guard", "chunk": hit.chunk_id, "reasons": reasons},
            )
        return query, hits, svc.guard.messages(query, hits, past), "; ".join(notes)
    system, user = build_messages(query, hits)
    return query, hits, [system, *past, user], "; ".join(notes)


def blocked_events(
    svc: Service, chat_id: str, question: str, reasons: list[str], request_id: str, started: float
) -> AsyncIterator[str]:
    """A question the guardrails refuse: a `guard` event with the refusal, then `done`; recorded as a failed turn."""

    async def refused() -> AsyncIterator[str]:
        await run_in_threadpool(
            svc.history.add_failed, chat_id, question, f"blocked by the guardrails: {'; '.join(reasons)}"
        )
        svc.turns.labels("blocked").inc()
        yield sse("guard", {"action": "refused", "text": REFUSAL, "reasons": reasons})
        yield sse("done", {"blocked": True, "total_s": time.perf_counter() - started, "request_id": request_id})

    return refused()


def sources(hits: list[Hit], answer: str) -> list[dict]:
    """The retrieved chunks, numbered as in the prompt, each marked cited or not."""
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


async def start_answer(svc: Service, messages: list[dict]) -> tuple[object, AsyncIterator]:
    """Open the model's stream through the circuit breaker, retrying transient errors until the first chunk only."""
    svc.breaker.before()  # CircuitOpenError at once while the backend is known to be down
    try:
        first, stream = await open_stream_async(
            lambda: svc.aclient.chat(model=svc.cfg.chat_model, messages=messages, stream=True, options=svc.options),
            counted_retries(svc, "generate", asynchronous=True),
        )
    except BaseException as exc:
        svc.breaker.__exit__(type(exc), exc, None)  # transient: one more failure; a 4xx: the probe slot is freed
        raise
    svc.breaker.success()  # the backend answers: a half-open circuit closes
    return first, stream


async def chunks_of(first: object, stream: AsyncIterator, deadline_s: float) -> AsyncIterator:
    """The first chunk, then the rest of the stream, until the answer's deadline (checked at every chunk)."""
    start = time.monotonic()
    yield first
    async for chunk in stream:
        if time.monotonic() - start > deadline_s:
            raise TimeoutError(f"the answer was not complete after {deadline_s:g} s (deadline); it was cut")
        yield chunk


async def answer_events(
    svc: Service,
    chat_id: str,
    question: str,
    query: str,
    hits: list[Hit],
    messages: list[dict],
    request_id: str,
    started: float,
    opened: tuple | None = None,
    span: object = None,
    degraded: str = "",
) -> AsyncIterator[str]:
    """Stream token batches, then sources and done; store the turn only once it is complete.

    opened: (first chunk, stream) from start_answer (opened here if None); span: the turn's root span, ended here.
    """
    pieces: list[str] = []
    batch: list[str] = []
    final, ttft, last_sent, stored, outcome, stream = None, None, 0.0, [], "error", None
    generate_start = time.perf_counter()
    tel, opened_here, usage = svc.telemetry, False, {}
    REQUEST_ID.set(request_id)  # this stream's task has its own context: every log line below carries the id
    gen = tel.tracer.start_span(
        "generate",
        context=otel_trace.set_span_in_context(span) if span else None,
        attributes={
            "request_id": request_id,
            "model": svc.cfg.chat_model,
            "prompt_chars": sum(len(m["content"]) for m in messages),
        },
    )
    try:
        first, stream = opened or await start_answer(svc, messages)
        opened_here = True
        async for chunk in chunks_of(first, stream, svc.deadline_s):
            text = chunk.message.content or ""
            if text:
                now = time.perf_counter()
                ttft = now - generate_start if ttft is None else ttft
                pieces.append(text)
                batch.append(text)
                if now - last_sent >= BATCH_S:
                    yield sse("token", {"text": "".join(batch)})
                    batch, last_sent = [], now
            if chunk.done:
                final = chunk
        if batch:
            yield sse("token", {"text": "".join(batch)})
        if final is None:
            raise RuntimeError("the model's stream ended without its final message")
        answer = "".join(pieces).strip()
        if svc.guard is not None:  # links, canary-like codes, bad citations stripped; a prompt echo refused
            checked = svc.guard.check_output(answer, hits)
            if checked.changes:
                answer = checked.text
                yield sse(
                    "guard",
                    {
                        "action": "refused" if checked.refused else "stripped",
                        "text": answer,
                        "reasons": checked.changes,
                    },
                )

        def store() -> None:
            svc.history.add_turn(chat_id, question, answer)
            stored.append(True)

        await run_in_threadpool(store)
        record = svc.metrics.add(
            generation_record("generate", final, time.perf_counter() - generate_start, ttft, request_id)
        )
        del svc.metrics.records[:-1000]  # a server runs for days: keep the Prometheus counters, not every row
        usage = {"prompt_tokens": record.prompt_tokens, "completion_tokens": record.completion_tokens}
        gen.set_attributes(usage)
        yield sse(
            "sources",
            {"query": query, "sources": sources(hits, answer), **({"degraded": degraded} if degraded else {})},
        )
        yield sse(
            "done",
            {
                "prompt_tokens": record.prompt_tokens,
                "completion_tokens": record.completion_tokens,
                "ttft_s": ttft,
                "total_s": time.perf_counter() - started,
                "tokens_per_s": record.tokens_per_s,
                "request_id": request_id,
            },
        )
        outcome = "ok"
    except (asyncio.CancelledError, GeneratorExit):  # the client hung up: the response is cancelled or closed
        outcome = "disconnected"
        if not stored:
            svc.history.add_failed(chat_id, question, "the client disconnected before the answer was complete")
        raise
    except Exception as exc:  # noqa: BLE001 - any failure mid-stream becomes an error event, and a failed turn
        kind = tel.failed(gen, "generate", exc)
        if opened_here:  # the backend broke after it had started answering: one more failure for the breaker
            svc.breaker.failure()
        events.error(
            "generation failed mid-stream",
            extra={"stage": "generate", "kind": kind, "chat_id": chat_id, "pieces_sent": len(pieces)},
        )
        log.exception("chat %s failed mid-stream", chat_id)
        if not stored:
            svc.history.add_failed(chat_id, question, f"generation failed: {describe(exc)}")
        yield sse(
            "error",
            {
                "message": f"The answer failed mid-way ({describe(exc)}); the turn was "
                "recorded as failed and left out of the conversation. Ask again.",
                "kind": kind,
                "request_id": request_id,
            },
        )
    finally:
        svc.turns.labels(outcome).inc()
        tel.latency.labels(outcome).observe(time.perf_counter() - started)
        gen.end()
        if span is not None:
            span.set_attribute("outcome", outcome)
            span.end()
        events.info(
            "turn finished",
            extra={
                "stage": "turn",
                "outcome": outcome,
                "chat_id": chat_id,
                "pieces": len(pieces),
                **usage,
                "ms": elapsed_ms(started),
            },
        )
        if stream is not None:  # closing the model's stream hangs up on the backend, which stops generating
            task = asyncio.get_running_loop().create_task(stream.aclose())
            CLOSING.add(task)  # keep a reference until it is done
            task.add_done_callback(CLOSING.discard)


def health(svc: Service) -> dict[str, str]:
    """Each part: "ok", or what fails and how to fix it."""
    parts, cfg = {}, svc.cfg
    try:
        names = {n for m in svc.probe.list().models for n in (m.model, m.model.removesuffix(":latest"))}
        parts["llm"] = (
            "ok"
            if cfg.chat_model in names
            else (f"fail: {cfg.ollama_host} does not serve {cfg.chat_model}: run `ollama pull {cfg.chat_model}`")
        )
    except Exception as exc:  # noqa: BLE001 - every failure is reported, not raised
        parts["llm"] = (
            f"fail: no LLM backend answers at {cfg.ollama_host} ({type(exc).__name__}): start Ollama or "
            "the offline stand-in (`.venv/bin/python -m infra.standin start`)"
        )
    try:
        dim = len(svc.probe.embed(model=cfg.embed_model, input="health check").embeddings[0])
        parts["embedding"] = (
            "ok"
            if dim == cfg.embed_dim
            else f"fail: {cfg.embed_model} makes {dim}-d vectors, the index holds {cfg.embed_dim}-d"
        )
    except Exception as exc:  # noqa: BLE001
        parts["embedding"] = f"fail: {cfg.embed_model} does not embed ({type(exc).__name__}: {exc})"
    try:
        count = svc.qdrant.count(svc.collection).count
        parts["qdrant"] = "ok" if count else f"fail: collection {svc.collection!r} is empty: restart the app to index"
    except Exception as exc:  # noqa: BLE001
        parts["qdrant"] = (
            f"fail: Qdrant ({svc.cfg.qdrant_url or 'embedded'}) does not answer ({type(exc).__name__}: {exc})"
        )
    return parts


class CountRequests:
    """ASGI middleware: count every response by method, route template and status (streams untouched)."""

    def __init__(self, app: object, svc: Service) -> None:
        self.app, self.svc = app, svc

    async def __call__(self, scope: dict, receive: object, send: object) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.svc.requests.labels(scope["method"], route, str(status[0])).inc()


def create_app(
    cfg: Config | None = None,
    qdrant: QdrantClient | None = None,
    history: HistoryStore | None = None,
    options: dict | None = None,
    hybrid: bool = False,
    tuning: dict | None = None,
    guardrails: bool | None = None,
) -> FastAPI:
    """The FastAPI app; cfg defaults to setup(), qdrant to QDRANT_URL or embedded, history to HISTORY_URL or SQLite.

    tuning: Service fields such as read_s, deadline_s, attempts, breaker_failures, breaker_reset_s (lesson 13).
    guardrails: lesson 14's Guard on every turn; None reads WORKSHOP_GUARDRAILS (on unless it is 0).
    """
    if cfg is None:
        from helpers.setup import setup

        cfg = setup()
    if qdrant is None:
        qdrant = QdrantClient(url=cfg.qdrant_url, timeout=10) if cfg.qdrant_url else QdrantClient(":memory:")
    own_history = history is None
    if history is None:
        history = open_history(cfg.settings.history_url or cfg.settings.state_dir / "history.sqlite")
    svc = Service(
        cfg=cfg, qdrant=qdrant, history=history, options={**OPTIONS, **(options or {})}, hybrid=hybrid, **(tuning or {})
    )
    if cfg.settings.guardrails if guardrails is None else guardrails:
        svc.guard = Guard(svc.client, embed_model=cfg.embed_model)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        start = time.perf_counter()
        try:
            n = await run_in_threadpool(ensure_index, svc)
            svc.startup_s = time.perf_counter() - start
            log.info(
                "app ready in %.1f s: %d chunks in %r (%s), history in %s, chat model %s at %s",
                svc.startup_s,
                n,
                svc.collection,
                cfg.qdrant_url or "embedded Qdrant",
                svc.history.path,
                cfg.chat_model,
                cfg.ollama_host,
            )
        except BACKEND_DOWN as exc:
            log.error(
                "the handbook is not indexed: the LLM backend at %s does not answer (%s); chats get 503 "
                "until it does, /healthz shows what fails",
                cfg.ollama_host,
                exc,
            )
        yield
        if own_history:
            svc.history.close()

    app = FastAPI(title="Halvorsen Ridge Station handbook chat", lifespan=lifespan)
    app.state.service = svc
    app.add_middleware(CountRequests, svc=svc)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return JSONResponse(
            status_code=422,
            content={
                "detail": (
                    f'{problems}. Send JSON like {{"question": "Where is the muster point?"}}, '
                    f"a question of 1 to {MAX_QUESTION_CHARS} characters."
                )
            },
        )

    def check_chat_id(chat_id: str) -> None:
        if not CHAT_ID.fullmatch(chat_id):
            raise HTTPException(400, f"malformed chat id {chat_id[:80]!r}: use 1 to 64 letters, digits, '-' or '_'")

    @app.post("/chat/{chat_id}")
    async def chat(chat_id: str, body: Question) -> Response:
        check_chat_id(chat_id)
        started, request_id = time.perf_counter(), uuid.uuid4().hex[:8]
        past = last_n(await run_in_threadpool(svc.history.messages, chat_id), svc.max_messages)
        if svc.guard is not None:
            try:  # the similarity check embeds the question: it needs the backend too (no answer without it)
                if svc.breaker.state == "open":  # the backend is known to be down: refuse fast, before any embedding
                    raise CircuitOpenError(svc.breaker.name, svc.breaker.retry_after())
                verdict = await run_in_threadpool(svc.guard.check_input, body.question)
            except (*BACKEND_DOWN, CircuitOpenError) as exc:
                circuit = isinstance(exc, CircuitOpenError)
                if not circuit:
                    svc.breaker.failure()  # the same backend serves both models: counted like a failed generation
                kind = failure_kind(exc)
                svc.telemetry.failures.labels("generate" if circuit else "guard", kind).inc()
                svc.telemetry.latency.labels("unavailable").observe(time.perf_counter() - started)
                svc.turns.labels("unavailable").inc()
                events.error(
                    "the guardrails could not check the question: 503",
                    extra={"stage": "guard", "kind": kind, "breaker": svc.breaker.state},
                )
                return backend_down(svc, exc, request_id=request_id, sources=[])
            except ollama.ResponseError as exc:  # e.g. the embedding model is not pulled
                return JSONResponse(
                    status_code=503,
                    content={"detail": f"The LLM backend refused: {exc.error}", "request_id": request_id},
                )
            if verdict.blocked:  # refused before any model call
                return StreamingResponse(
                    blocked_events(svc, chat_id, body.question, verdict.reasons, request_id, started),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )
        tel = svc.telemetry
        with request_context(request_id):
            hits: list[Hit] = []
            root = tel.tracer.start_span(
                "chat", attributes={"request_id": request_id, "chat_id": chat_id, "question_chars": len(body.question)}
            )
            try:
                with otel_trace.use_span(root, end_on_exit=False):
                    query, hits, messages, degraded = await run_in_threadpool(
                        prepare, svc, past, body.question, request_id
                    )
                    events.info(
                        "prompt built",
                        extra={
                            "stage": "prompt",
                            "messages": len(messages),
                            "prompt_chars": sum(len(m["content"]) for m in messages),
                        },
                    )
                opened = await start_answer(svc, messages)
            except (*BACKEND_DOWN, CircuitOpenError, ollama.ResponseError) as exc:
                kind = tel.failed(root, "generate", exc)
                tel.latency.labels("unavailable").observe(time.perf_counter() - started)
                svc.turns.labels("unavailable").inc()
                root.end()
                events.error(
                    "the LLM backend is unavailable: 503",
                    extra={"stage": "generate", "kind": kind, "breaker": svc.breaker.state},
                )
                found = {"request_id": request_id, "sources": sources(hits, "")}  # what was retrieved is shown
                if isinstance(exc, ollama.ResponseError) and not is_transient(exc):  # e.g. a model not pulled
                    return JSONResponse(
                        status_code=503, content={"detail": f"The LLM backend refused: {exc.error}", **found}
                    )
                return backend_down(svc, exc, **found)
        stream = answer_events(
            svc, chat_id, body.question, query, hits, messages, request_id, started, opened, root, degraded
        )
        return StreamingResponse(
            stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    @app.get("/chats/{chat_id}")
    async def get_chat(chat_id: str) -> dict:
        check_chat_id(chat_id)
        rows = await run_in_threadpool(svc.history.rows, chat_id)
        return {
            "chat_id": chat_id,
            "messages": [{"role": r["role"], "content": r["content"]} for r in rows if r["status"] == "ok"],
            "failed": [r for r in rows if r["status"] == "failed"],
        }

    @app.delete("/chats/{chat_id}")
    async def delete_chat(chat_id: str) -> dict:
        check_chat_id(chat_id)
        return {"chat_id": chat_id, "deleted": await run_in_threadpool(svc.history.delete, chat_id)}

    @app.get("/")
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(svc.metrics.prometheus_text(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        parts = await run_in_threadpool(health, svc)
        ok = all(v == "ok" for v in parts.values())
        return JSONResponse(
            status_code=200 if ok else 503,
            content={
                "status": "ok" if ok else "fail",
                "parts": parts,
                "chat_model": svc.cfg.chat_model,
                "startup_s": svc.startup_s,
                "breaker": svc.breaker.state,
            },
        )

    return app
