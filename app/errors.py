"""One path from a failure to its HTTP answer: the exception handlers create_app installs.

Backend down or circuit open -> 503 (+ Retry-After while open); refused by the backend (a 4xx, a model not pulled)
-> 503 saying what it answered; a malformed body -> 422 saying what to send; a malformed chat id -> 400.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
import ollama
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from helpers.resilience import CircuitOpenError, describe, failure_kind, is_transient

events = logging.getLogger("rag")
MAX_QUESTION_CHARS = 2000
BACKEND_DOWN = (ConnectionError, httpx.TransportError)


class TurnUnavailableError(Exception):
    """A chat turn that cannot be answered because the LLM backend failed before the first token."""

    def __init__(self, cause: BaseException, *, stage: str, request_id: str, started: float, sources: list) -> None:
        super().__init__(describe(cause))
        self.cause, self.stage, self.request_id, self.started, self.sources = cause, stage, request_id, started, sources


def unavailable_response(svc: Any, exc: BaseException, **extra: Any) -> JSONResponse:
    """503 naming the part that failed and the fix (an open circuit breaker: when to retry, and Retry-After)."""
    host = svc.cfg.ollama_host
    if isinstance(exc, CircuitOpenError):
        detail = (
            f"The LLM backend at {host} failed {svc.breaker.threshold} times in a row, so the app stops sending it "
            f"questions for a while (circuit breaker open). Retry in {exc.retry_after_s:.0f} s; the app then tries "
            "the backend again by itself. GET /healthz shows every part."
        )
        return JSONResponse(
            status_code=503,
            headers={"Retry-After": str(max(1, round(exc.retry_after_s)))},
            content={"detail": detail, "retry_after_s": round(exc.retry_after_s, 1), **extra},
        )
    if isinstance(exc, ollama.ResponseError) and not is_transient(exc):  # e.g. a model not pulled
        return JSONResponse(status_code=503, content={"detail": f"The LLM backend refused: {exc.error}", **extra})
    return JSONResponse(
        status_code=503,
        content={
            "detail": (
                f"The LLM backend at {host} does not answer ({describe(exc)}). Start Ollama (`ollama serve`) or the "
                "workshop's offline stand-in (`.venv/bin/python -m infra.standin start`), set OLLAMA_HOST if it runs "
                "elsewhere, then retry. GET /healthz shows every part."
            ),
            **extra,
        },
    )


async def turn_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A turn the backend could not answer: counted, logged, and a 503 with what was retrieved."""
    assert isinstance(exc, TurnUnavailableError)
    svc = request.app.state.service
    cause, circuit = exc.cause, isinstance(exc.cause, CircuitOpenError)
    kind = failure_kind(cause)
    if exc.stage == "guard":  # the guard's embedding failed: counted like a failed generation (same backend)
        if not circuit:
            svc.breaker.failure()
        svc.telemetry.failures.labels("generate" if circuit else "guard", kind).inc()
    svc.telemetry.latency.labels("unavailable").observe(time.perf_counter() - exc.started)
    svc.turns.labels("unavailable").inc()
    events.error(
        "the LLM backend is unavailable: 503",
        extra={"stage": exc.stage, "kind": kind, "breaker": svc.breaker.state, "request_id": exc.request_id},
    )
    return unavailable_response(svc, cause, request_id=exc.request_id, sources=exc.sources)


async def invalid_body(_request: Request, exc: Exception) -> JSONResponse:
    """422 naming each problem and an example body."""
    assert isinstance(exc, RequestValidationError)
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


def install(app: FastAPI) -> None:
    """Register every handler on the app."""
    app.add_exception_handler(TurnUnavailableError, turn_unavailable)
    app.add_exception_handler(RequestValidationError, invalid_body)
