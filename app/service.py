"""The RAG chat as a web service: POST /chat/{chat_id} streams the answer as Server-Sent Events. Taught in 12_serve.ipynb
(the guardrails, on by default: 14_guardrails.ipynb).

    from app.service import create_app
    app = create_app(cfg)          # cfg from helpers.setup.setup(); uvicorn serves it (python -m app)

Endpoints: POST /chat/{chat_id} (SSE: token, sources, done | error), GET and DELETE /chats/{chat_id},
GET / (the page), GET /metrics (Prometheus text), GET /healthz (each part ok, or what fails: 503).
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
from prometheus_client import CONTENT_TYPE_LATEST, Counter
from pydantic import BaseModel, StringConstraints
from qdrant_client import QdrantClient
from starlette.concurrency import run_in_threadpool

from helpers.chunking import chunk_documents
from helpers.corpus import load_documents
from helpers.guardrails import REFUSAL, Guard
from helpers.history import HistoryStore, last_n, open_history, rewrite_query
from helpers.index import index_chunks
from helpers.metrics import MetricsLog, generation_record
from helpers.rag import Hit, build_messages, cited_numbers, retrieve
from helpers.setup import Config

log = logging.getLogger("app")
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
    guard: Guard | None = None  # lesson 14's guardrails (create_app turns them on unless WORKSHOP_GUARDRAILS=0)

    def __post_init__(self) -> None:
        host = self.cfg.ollama_host
        self.client = ollama.Client(host=host)  # embeddings, rewrites (sync, in the thread pool)
        self.aclient = ollama.AsyncClient(host=host)  # the answer stream: cancelled when the client hangs up
        self.probe = ollama.Client(host=host, timeout=5)  # /healthz answers fast even when the backend hangs
        self.requests = Counter("http_requests", "HTTP requests by method, route and status",
                                ["method", "route", "status"], registry=self.metrics.registry)
        self.turns = Counter("rag_chat_turns", "Chat turns by outcome (ok, error, disconnected, blocked)", ["outcome"],
                             registry=self.metrics.registry)
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


def backend_down(svc: Service, exc: Exception) -> JSONResponse:
    """503 naming the part that failed and the fix."""
    return JSONResponse(status_code=503, content={"detail": (
        f"The LLM backend at {svc.cfg.ollama_host} does not answer ({type(exc).__name__}: {exc}). Start Ollama "
        "(`ollama serve`) or the workshop's offline stand-in (`.venv/bin/python -m helpers.offline start`), "
        "set OLLAMA_HOST if it runs elsewhere, then retry. GET /healthz shows every part.")})


def prepare(svc: Service, past: list[dict], question: str, request_id: str) -> tuple[str, list[Hit], list[dict]]:
    """Rewrite a follow-up, retrieve, build the prompt (lesson 10's turn): (query, hits, messages)."""
    if svc.indexed == 0:
        ensure_index(svc)  # the backend was down at start-up
    query = question
    if past:
        with svc.metrics.timed("rewrite", svc.cfg.chat_model, request_id):
            query = rewrite_query(svc.client, svc.cfg.chat_model, past, question)
    with svc.metrics.timed("retrieve", svc.cfg.embed_model, request_id):
        hits = retrieve(svc.qdrant, svc.client, svc.collection, svc.cfg.embed_model, query, k=svc.k,
                        hybrid=svc.hybrid)
    if svc.guard is not None:  # chunks that carry instructions are left out; the sources are fenced as data
        hits, dropped = svc.guard.filter_hits(hits)
        for hit, reasons in dropped:
            log.warning("request %s: dropped chunk %s (%s)", request_id, hit.chunk_id, "; ".join(reasons))
        return query, hits, svc.guard.messages(query, hits, past)
    system, user = build_messages(query, hits)
    return query, hits, [system, *past, user]


def blocked_events(svc: Service, chat_id: str, question: str, reasons: list[str], request_id: str,
                   started: float) -> AsyncIterator[str]:
    """A question the guardrails refuse: a `guard` event with the refusal, then `done`; recorded as a failed turn."""

    async def events() -> AsyncIterator[str]:
        await run_in_threadpool(svc.history.add_failed, chat_id, question,
                                f"blocked by the guardrails: {'; '.join(reasons)}")
        svc.turns.labels("blocked").inc()
        yield sse("guard", {"action": "refused", "text": REFUSAL, "reasons": reasons})
        yield sse("done", {"blocked": True, "total_s": time.perf_counter() - started, "request_id": request_id})

    return events()


def sources(hits: list[Hit], answer: str) -> list[dict]:
    """The retrieved chunks, numbered as in the prompt, each marked cited or not."""
    cited = set(cited_numbers(answer))
    return [{"n": n, "chunk_id": h.chunk_id, "doc_id": h.doc_id, "title": h.title, "score": round(h.score, 4),
             "text": h.text, "cited": n in cited} for n, h in enumerate(hits, 1)]


async def answer_events(svc: Service, chat_id: str, question: str, query: str, hits: list[Hit],
                        messages: list[dict], request_id: str, started: float) -> AsyncIterator[str]:
    """Stream token batches, then sources and done; store the turn only once it is complete."""
    pieces: list[str] = []
    batch: list[str] = []
    final, ttft, last_sent, stored, outcome, stream = None, None, 0.0, [], "error", None
    generate_start = time.perf_counter()
    try:
        stream = await svc.aclient.chat(model=svc.cfg.chat_model, messages=messages, stream=True, options=svc.options)
        async for chunk in stream:
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
                yield sse("guard", {"action": "refused" if checked.refused else "stripped", "text": answer,
                                    "reasons": checked.changes})

        def store() -> None:
            svc.history.add_turn(chat_id, question, answer)
            stored.append(True)

        await run_in_threadpool(store)
        record = svc.metrics.add(generation_record("generate", final, time.perf_counter() - generate_start, ttft,
                                                   request_id))
        del svc.metrics.records[:-1000]  # a server runs for days: keep the Prometheus counters, not every row
        yield sse("sources", {"query": query, "sources": sources(hits, answer)})
        yield sse("done", {"prompt_tokens": record.prompt_tokens, "completion_tokens": record.completion_tokens,
                           "ttft_s": ttft, "total_s": time.perf_counter() - started,
                           "tokens_per_s": record.tokens_per_s, "request_id": request_id})
        outcome = "ok"
    except (asyncio.CancelledError, GeneratorExit):  # the client hung up: the response is cancelled or closed
        outcome = "disconnected"
        if not stored:
            svc.history.add_failed(chat_id, question, "the client disconnected before the answer was complete")
        raise
    except Exception as exc:  # noqa: BLE001 - any failure mid-stream becomes an error event, and a failed turn
        log.exception("chat %s failed mid-stream", chat_id)
        if not stored:
            svc.history.add_failed(chat_id, question, f"generation failed: {type(exc).__name__}: {exc}")
        yield sse("error", {"message": f"The answer failed mid-way ({type(exc).__name__}: {exc}); the turn was "
                                       "recorded as failed and left out of the conversation. Ask again.",
                            "request_id": request_id})
    finally:
        svc.turns.labels(outcome).inc()
        if stream is not None:  # closing the model's stream hangs up on the backend, which stops generating
            task = asyncio.get_running_loop().create_task(stream.aclose())
            CLOSING.add(task)  # keep a reference until it is done
            task.add_done_callback(CLOSING.discard)


def health(svc: Service) -> dict[str, str]:
    """Each part: "ok", or what fails and how to fix it."""
    parts, cfg = {}, svc.cfg
    try:
        names = {n for m in svc.probe.list().models for n in (m.model, m.model.removesuffix(":latest"))}
        parts["llm"] = "ok" if cfg.chat_model in names else (
            f"fail: {cfg.ollama_host} does not serve {cfg.chat_model}: run `ollama pull {cfg.chat_model}`")
    except Exception as exc:  # noqa: BLE001 - every failure is reported, not raised
        parts["llm"] = f"fail: no LLM backend answers at {cfg.ollama_host} ({type(exc).__name__}): start Ollama or " \
                       "the offline stand-in (`.venv/bin/python -m helpers.offline start`)"
    try:
        dim = len(svc.probe.embed(model=cfg.embed_model, input="health check").embeddings[0])
        parts["embedding"] = "ok" if dim == cfg.embed_dim else f"fail: {cfg.embed_model} makes {dim}-d vectors, " \
                                                               f"the index holds {cfg.embed_dim}-d"
    except Exception as exc:  # noqa: BLE001
        parts["embedding"] = f"fail: {cfg.embed_model} does not embed ({type(exc).__name__}: {exc})"
    try:
        count = svc.qdrant.count(svc.collection).count
        parts["qdrant"] = "ok" if count else f"fail: collection {svc.collection!r} is empty: restart the app to index"
    except Exception as exc:  # noqa: BLE001
        parts["qdrant"] = f"fail: Qdrant ({svc.cfg.qdrant_url or 'embedded'}) does not answer " \
                          f"({type(exc).__name__}: {exc})"
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


def create_app(cfg: Config | None = None, qdrant: QdrantClient | None = None, history: HistoryStore | None = None,
               options: dict | None = None, hybrid: bool = False, guardrails: bool | None = None) -> FastAPI:
    """The FastAPI app; cfg defaults to setup(), qdrant to QDRANT_URL or embedded, history to HISTORY_URL or SQLite.

    guardrails: lesson 14's Guard on every turn; None reads WORKSHOP_GUARDRAILS (on unless it is 0).
    """
    if cfg is None:
        from helpers.setup import setup

        cfg = setup()
    if qdrant is None:
        qdrant = QdrantClient(url=cfg.qdrant_url) if cfg.qdrant_url else QdrantClient(":memory:")
    own_history = history is None
    if history is None:
        history = open_history(cfg.settings.history_url or cfg.settings.state_dir / "history.sqlite")
    svc = Service(cfg=cfg, qdrant=qdrant, history=history, options={**OPTIONS, **(options or {})}, hybrid=hybrid)
    if cfg.settings.guardrails if guardrails is None else guardrails:
        svc.guard = Guard(svc.client, cfg.embed_model)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        start = time.perf_counter()
        try:
            n = await run_in_threadpool(ensure_index, svc)
            svc.startup_s = time.perf_counter() - start
            log.info("app ready in %.1f s: %d chunks in %r (%s), history in %s, chat model %s at %s", svc.startup_s,
                        n, svc.collection, cfg.qdrant_url or "embedded Qdrant", svc.history.path, cfg.chat_model,
                        cfg.ollama_host)
        except BACKEND_DOWN as exc:
            log.error("the handbook is not indexed: the LLM backend at %s does not answer (%s); chats get 503 "
                      "until it does, /healthz shows what fails", cfg.ollama_host, exc)
        yield
        if own_history:
            svc.history.close()

    app = FastAPI(title="Halvorsen Ridge Station handbook chat", lifespan=lifespan)
    app.state.service = svc
    app.add_middleware(CountRequests, svc=svc)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"
                             for e in exc.errors())
        return JSONResponse(status_code=422, content={"detail": (
            f"{problems}. Send JSON like {{\"question\": \"Where is the muster point?\"}}, "
            f"a question of 1 to {MAX_QUESTION_CHARS} characters.")})

    def check_chat_id(chat_id: str) -> None:
        if not CHAT_ID.fullmatch(chat_id):
            raise HTTPException(400, f"malformed chat id {chat_id[:80]!r}: use 1 to 64 letters, digits, '-' or '_'")

    @app.post("/chat/{chat_id}")
    async def chat(chat_id: str, body: Question) -> Response:
        check_chat_id(chat_id)
        started, request_id = time.perf_counter(), uuid.uuid4().hex[:8]
        past = last_n(await run_in_threadpool(svc.history.messages, chat_id), svc.max_messages)
        try:
            verdict = await run_in_threadpool(svc.guard.check_input, body.question) if svc.guard else None
            if verdict is not None and verdict.blocked:  # refused before any model call
                return StreamingResponse(blocked_events(svc, chat_id, body.question, verdict.reasons, request_id,
                                                        started), media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            query, hits, messages = await run_in_threadpool(prepare, svc, past, body.question, request_id)
        except BACKEND_DOWN as exc:
            return backend_down(svc, exc)
        except ollama.ResponseError as exc:  # e.g. a model that is not pulled
            return JSONResponse(status_code=503, content={"detail": f"The LLM backend refused: {exc.error}"})
        events = answer_events(svc, chat_id, body.question, query, hits, messages, request_id, started)
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/chats/{chat_id}")
    async def get_chat(chat_id: str) -> dict:
        check_chat_id(chat_id)
        rows = await run_in_threadpool(svc.history.rows, chat_id)
        return {"chat_id": chat_id, "messages": [{"role": r["role"], "content": r["content"]} for r in rows
                                                 if r["status"] == "ok"],
                "failed": [r for r in rows if r["status"] == "failed"]}

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
        return JSONResponse(status_code=200 if ok else 503, content={
            "status": "ok" if ok else "fail", "parts": parts, "chat_model": svc.cfg.chat_model,
            "startup_s": svc.startup_s})

    return app
