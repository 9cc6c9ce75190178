"""The HTTP routes: one APIRouter; each route gets the Service and a checked chat id from dependencies.

POST /chat/{chat_id} (SSE: token, sources, done | guard | error), GET and DELETE /chats/{chat_id}, GET / (the page),
GET /metrics (Prometheus text), GET /healthz (each part ok, or what fails: 503). Failures before the first token
raise TurnUnavailableError; app/errors.py turns it into the 503.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import ollama
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from opentelemetry import trace as otel_trace
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, StringConstraints
from starlette.concurrency import run_in_threadpool

from app.errors import BACKEND_DOWN, MAX_QUESTION_CHARS, TurnUnavailableError
from app.keys import caller
from app.sse import HEADERS, answer_events, blocked_events, cached_events, start_answer
from app.state import Service, health, index_handbook
from helpers.resilience import CircuitOpenError
from helpers.telemetry import request_context
from helpers.turn import Prepared, cited_sources

events = logging.getLogger("rag")
STATIC = Path(__file__).parent / "static"
CHAT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
UNAVAILABLE = (*BACKEND_DOWN, CircuitOpenError, ollama.ResponseError)

router = APIRouter()


class Question(BaseModel):
    """The body of POST /chat/{chat_id}."""

    question: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_QUESTION_CHARS)]


def service(request: Request) -> Service:
    """The app's Service (create_app puts it in app.state)."""
    return request.app.state.service


def chat_id(chat_id: str) -> str:
    """The path's chat id, checked: 400 saying what a chat id may hold."""
    if not CHAT_ID.fullmatch(chat_id):
        raise HTTPException(400, f"malformed chat id {chat_id[:80]!r}: use 1 to 64 letters, digits, '-' or '_'")
    return chat_id


ServiceDep = Annotated[Service, Depends(service)]
ChatId = Annotated[str, Depends(chat_id)]
Caller = Annotated[str, Depends(caller)]  # lesson 18: the API key's name (401/403), "anonymous" while keys are off


def read_past(svc: Service, chat_id: str) -> list[dict]:
    """The chat's last max_messages messages (the LIMIT in SQL); a history outage answers without them (lesson 19)."""
    try:
        return svc.history.messages(chat_id, limit=svc.max_messages)
    except Exception as exc:  # noqa: BLE001 - the answer still streams, marked unsaved when its turn cannot be stored
        events.error(
            "history unavailable: answering without it", extra={"stage": "history", "kind": type(exc).__name__}
        )
        return []


def prepare(svc: Service, question: str, past: list[dict], request_id: str) -> Prepared:
    """The one RAG turn's prepare step, in a worker thread (the handbook indexed first if start-up could not)."""
    if svc.indexed == 0:
        try:
            index_handbook(svc)  # the backend was down at start-up
        except Exception:  # noqa: BLE001 - the search below fails too and degrades the answer, said so
            events.warning("the handbook is still not indexed", extra={"stage": "index"})
    prepared = svc.turn().prepare(question, past=past, request_id=request_id, rewrite=svc.breaker.state == "closed")
    events.info(
        "prompt built",
        extra={
            "stage": "prompt",
            "messages": len(prepared.messages),
            "prompt_chars": sum(len(m["content"]) for m in prepared.messages),
        },
    )
    return prepared


@router.post("/chat/{chat_id}")
async def chat(svc: ServiceDep, chat_id: ChatId, body: Question, who: Caller) -> Response:
    """Answer a question in a chat, streamed as SSE; 503 (from app/errors.py) while the backend is unavailable."""
    started, request_id = time.perf_counter(), uuid.uuid4().hex[:8]
    svc.limits.check(who)  # lesson 18: 429 past the key's rate limit or token budget
    past = await run_in_threadpool(read_past, svc, chat_id)
    if svc.guard is not None:
        try:  # the similarity check embeds the question: it needs the backend too (no answer without it)
            if svc.chain.open_breakers():  # every backend is known to be down: refuse fast, before any embedding
                raise CircuitOpenError(svc.breaker.name, svc.chain.retry_after())
            verdict = await run_in_threadpool(svc.guard.check_input, body.question)
        except UNAVAILABLE as exc:
            raise TurnUnavailableError(exc, stage="guard", request_id=request_id, started=started, sources=[]) from exc
        if verdict.blocked:  # refused before any model call
            stream = blocked_events(svc, chat_id, body.question, verdict.reasons, request_id, started)
            return StreamingResponse(stream, media_type="text/event-stream", headers=HEADERS)
    svc.limits.admit()  # lesson 18: 503 at once when the generation queue is full; metered() below leaves it
    try:
        stream = await answer_stream(svc, chat_id, body.question, past, request_id, started)
    except BaseException:
        svc.limits.release()
        raise
    headers = {**HEADERS, **svc.limits.warning_headers(who)}
    metered = svc.limits.metered(stream, who, started=started)
    return StreamingResponse(metered, media_type="text/event-stream", headers=headers)


async def answer_stream(
    svc: Service, chat_id: str, question: str, past: list[dict], request_id: str, started: float
) -> AsyncIterator[str]:
    """The turn prepared and the model's stream opened (503 before the first token), or a cached answer replayed."""
    tel = svc.telemetry
    with request_context(request_id):
        root = tel.tracer.start_span(
            "chat", attributes={"request_id": request_id, "chat_id": chat_id, "question_chars": len(question)}
        )
        prepared = None
        try:
            with otel_trace.use_span(root, end_on_exit=False):
                prepared = await run_in_threadpool(prepare, svc, question, past, request_id)
            if prepared.cached is not None:  # lesson 18: an answer cache hit, no model call
                root.end()
                return cached_events(svc, chat_id, prepared, request_id=request_id, started=started)
            opened = await start_answer(svc, prepared)
        except UNAVAILABLE as exc:
            tel.failed(root, "generate", exc)
            root.end()
            found = cited_sources(prepared.hits, "") if prepared else []  # what was retrieved is shown
            raise TurnUnavailableError(
                exc, stage="generate", request_id=request_id, started=started, sources=found
            ) from exc
    return answer_events(svc, chat_id, prepared, opened, request_id=request_id, started=started, span=root)


@router.get("/chats/{chat_id}")
async def get_chat(svc: ServiceDep, chat_id: ChatId, _who: Caller) -> dict:
    """A chat's messages, and its failed turns apart."""
    rows = await run_in_threadpool(svc.history.rows, chat_id)
    return {
        "chat_id": chat_id,
        "messages": [{"role": r["role"], "content": r["content"]} for r in rows if r["status"] == "ok"],
        "failed": [r for r in rows if r["status"] == "failed"],
    }


@router.delete("/chats/{chat_id}")
async def delete_chat(svc: ServiceDep, chat_id: ChatId, _who: Caller) -> dict:
    """Forget a chat."""
    return {"chat_id": chat_id, "deleted": await run_in_threadpool(svc.history.delete, chat_id)}


@router.get("/")
async def page() -> FileResponse:
    """The chat page."""
    return FileResponse(STATIC / "index.html")


@router.get("/metrics")
async def metrics(svc: ServiceDep) -> Response:
    """Prometheus text."""
    return Response(svc.metrics.prometheus_text(), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz")
async def healthz(svc: ServiceDep) -> JSONResponse:
    """Each part ok (200), or what fails and its fix (503)."""
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
            "backends": {b.name: {"model": b.model, "breaker": b.breaker.state} for b in svc.chain.backends},
        },
    )
