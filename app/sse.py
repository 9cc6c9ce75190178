"""The answer as Server-Sent Events: token batches, then sources and done (or error); the turn stored once complete."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from opentelemetry import trace as otel_trace
from starlette.concurrency import run_in_threadpool

from app.state import Service
from helpers.metrics import generation_record
from helpers.providers import Backend
from helpers.resilience import describe, failure_kind
from helpers.telemetry import REQUEST_ID, elapsed_ms
from helpers.turn import Prepared

log = logging.getLogger("app")
events = logging.getLogger("rag")  # one structured line per stage: JSON with `python -m app` (helpers.telemetry)
BATCH_S = 0.05  # pieces that arrive within 50 ms go out as one SSE event
CLOSING: set[asyncio.Task] = set()  # model streams being closed after a hang-up
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(event: str, data: dict) -> str:
    """One Server-Sent Event: an `event:` line, a `data:` line of JSON, a blank line."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def record_failed(svc: Service, chat_id: str, question: str, reason: str) -> None:
    """Record a failed turn; a history outage is logged, never raised over the answer's own error."""
    try:
        svc.history.add_failed(chat_id, question, reason)
    except Exception:  # noqa: BLE001
        log.exception("chat %s: the failed turn was not recorded", chat_id)


async def blocked_events(
    svc: Service, chat_id: str, question: str, reasons: list[str], request_id: str, started: float
) -> AsyncIterator[str]:
    """A question the guardrails refuse: a `guard` event with the refusal, then `done`; recorded as a failed turn."""
    await run_in_threadpool(
        svc.history.add_failed, chat_id, question, f"blocked by the guardrails: {'; '.join(reasons)}"
    )
    svc.turns.labels("blocked").inc()
    yield sse("guard", {"action": "refused", "text": svc.guard.refusal if svc.guard else "", "reasons": reasons})
    yield sse("done", {"blocked": True, "total_s": time.perf_counter() - started, "request_id": request_id})


async def cached_events(
    svc: Service, chat_id: str, prepared: Prepared, *, request_id: str, started: float
) -> AsyncIterator[str]:
    """Lesson 18: an answer cache hit replayed as one token event, sources and done (cached, no tokens spent)."""
    assert prepared.cached is not None
    finished = svc.turn().finish(prepared.cached.text, prepared.hits)
    await run_in_threadpool(svc.history.add_turn, chat_id, prepared.question, finished.text)
    svc.turns.labels("cached").inc()
    yield sse("token", {"text": finished.text})
    yield sse("sources", {"query": prepared.query, "answer": finished.text, "sources": finished.sources})
    total = time.perf_counter() - started
    yield sse("done", {"cached": True, "prompt_tokens": 0, "completion_tokens": 0, "ttft_s": total, "total_s": total,
                       "request_id": request_id})  # fmt: skip


async def start_answer(svc: Service, prepared: Prepared) -> tuple[Any, Any, float, float, Backend]:
    """Open the model's stream through the fallback chain (lesson 19): each backend behind its own circuit breaker,
    retried until its first piece only, the next backend tried when one fails or its breaker is open.

    Returns (first piece, the stream for the rest, when it was asked for, when the first piece arrived, the backend
    that answered), the times as time.perf_counter() readings. Every backend failing raises the last failure.
    """
    asked_at = time.perf_counter()

    def passed_over(backend: Backend, exc: BaseException) -> None:
        svc.fallbacks.labels(backend.name, failure_kind(exc)).inc()
        events.warning(
            "backend passed over", extra={"stage": "generate", "backend": backend.name, "kind": failure_kind(exc)}
        )

    backend, first, stream = await svc.chain.open(
        prepared.messages,
        options=prepared.options,
        policy=lambda: svc.retry("generate", asynchronous=True),
        on_fallback=passed_over,
    )
    return first, stream, asked_at, time.perf_counter(), backend


async def pieces_of(first: Any, stream: Any, deadline_s: float) -> AsyncIterator[Any]:
    """The first piece, then the rest of the stream, until the answer's deadline (checked at every piece)."""
    start = time.monotonic()
    yield first
    async for piece in stream:
        if time.monotonic() - start > deadline_s:
            raise TimeoutError(f"the answer was not complete after {deadline_s:g} s (deadline); it was cut")
        yield piece


async def answer_events(
    svc: Service,
    chat_id: str,
    prepared: Prepared,
    opened: tuple[Any, Any, float, float, Backend],
    *,
    request_id: str,
    started: float,
    span: Any = None,
) -> AsyncIterator[str]:
    """Stream token batches, then sources and done; store the turn only once it is complete.

    opened: (first piece, stream, when asked, when it came, the backend) from start_answer; started: when the request arrived (time to first
    token counts from there); span: the turn's root span, ended here.
    """
    pieces: list[str] = []
    batch: list[str] = []
    last_sent, stored, outcome, usage = 0.0, [], "error", {}
    first, stream, asked_at, first_at, backend = opened
    ttft = first_at - started  # from the request to the first piece: rewrite, search and prompt reading included
    tel, question = svc.telemetry, prepared.question
    REQUEST_ID.set(request_id)  # this stream's task has its own context: every log line below carries the id
    gen = tel.tracer.start_span(
        "generate",
        context=otel_trace.set_span_in_context(span) if span else None,
        attributes={
            "request_id": request_id,
            "model": backend.model,
            "backend": backend.name,
            "ttft_s": round(ttft, 3),
        },
    )
    try:
        final = None
        async for piece in pieces_of(first, stream, svc.deadline_s):
            text = piece.message.content or ""
            if text:
                now = time.perf_counter()
                pieces.append(text)
                batch.append(text)
                if now - last_sent >= BATCH_S:
                    yield sse("token", {"text": "".join(batch)})
                    batch, last_sent = [], now
            if piece.done:
                final = piece
        if batch:
            yield sse("token", {"text": "".join(batch)})
        if final is None:
            raise RuntimeError("the model's stream ended without its final message")
        finished = svc.turn().finish("".join(pieces), prepared.hits)
        if finished.changes:
            action = "refused" if finished.refused else "stripped"
            yield sse("guard", {"action": action, "text": finished.text, "reasons": finished.changes})

        def store() -> bool:
            stored.append(True)  # saved or not, the turn is settled: no failed row on a later hang-up
            try:
                svc.history.add_turn(chat_id, question, finished.text, model=f"{backend.model} ({backend.name})")
                return True
            except Exception:  # noqa: BLE001 - a database outage must not cost the user the answer (lesson 19)
                log.exception("chat %s: the answer was not saved", chat_id)
                svc.unsaved.inc()
                return False

        saved = await run_in_threadpool(store)
        svc.answers.labels(backend.name, backend.model).inc()
        record = svc.metrics.add(
            generation_record(
                "generate", final, wall_s=time.perf_counter() - asked_at, ttft_s=ttft, request_id=request_id
            )
        )
        del svc.metrics.records[:-1000]  # a server runs for days: keep the Prometheus counters, not every row
        usage = {"prompt_tokens": record.prompt_tokens, "completion_tokens": record.completion_tokens}
        svc.turn().remember(prepared, finished, usage=usage)  # lesson 18: the answer cache, when it is on
        gen.set_attributes(usage)
        degraded = {"degraded": "; ".join(prepared.notes)} if prepared.notes else {}
        yield sse(
            "sources", {"query": prepared.query, "answer": finished.text, "sources": finished.sources, **degraded}
        )
        yield sse(
            "done",
            {
                **usage,
                "ttft_s": ttft,  # from the request's arrival: what the user waited
                "model_ttft_s": first_at - asked_at,  # from the prompt's sending: the model's own
                "total_s": time.perf_counter() - started,
                "tokens_per_s": record.tokens_per_s,
                "request_id": request_id,
                "model": backend.model,  # the model and backend that answered (a fallback names the second one)
                "backend": backend.name,
                "saved": saved,  # False: the history store was down; the answer is not in the chat's history
            },
        )
        outcome = "ok"
    except (asyncio.CancelledError, GeneratorExit):  # the client hung up: the response is cancelled or closed
        outcome = "disconnected"
        if not stored:
            record_failed(svc, chat_id, question, "the client disconnected before the answer was complete")
        raise
    except Exception as exc:  # noqa: BLE001 - any failure mid-stream becomes an error event, and a failed turn
        kind = tel.failed(gen, "generate", exc)
        backend.breaker.failure()  # the backend broke after it had started answering: one more failure for the breaker
        events.error(
            "generation failed mid-stream",
            extra={"stage": "generate", "kind": kind, "chat_id": chat_id, "pieces_sent": len(pieces)},
        )
        log.exception("chat %s failed mid-stream", chat_id)
        if not stored:
            record_failed(svc, chat_id, question, f"generation failed: {describe(exc)}")
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
