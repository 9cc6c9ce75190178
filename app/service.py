"""The RAG chat as a web service: POST /chat/{chat_id} streams the answer as Server-Sent Events. Taught in 13_serve.ipynb
(the guardrails, on by default: 15_guardrails.ipynb).

    from app.service import create_app
    app = create_app(cfg)          # cfg from helpers.setup.setup(); uvicorn serves it (python -m app)

The turn itself is helpers/turn.py (the same as the notebook's ChatApp); here: the state (app/state.py), the routes
(app/routes.py), the SSE stream (app/sse.py) and one path from a failure to its HTTP answer (app/errors.py).
Resilience (14_resilience.ipynb): timeouts on every client, retries on transient errors before the first token, a
circuit breaker around the LLM (503 + Retry-After while open), retrieval failures degrade the answer, JSON logs with
the request id (logger "rag"), a span per stage, rag_failures_total{stage,kind} and rag_request_seconds{status}.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from qdrant_client import QdrantClient
from starlette.concurrency import run_in_threadpool

from app import errors
from app.errors import BACKEND_DOWN, MAX_QUESTION_CHARS
from app.routes import STATIC, router
from app.sse import answer_events, sse
from app.state import Service, index_handbook
from helpers.guardrails import SERVED, Guard
from helpers.history import HistoryStore, open_history
from helpers.setup import Config
from helpers.turn import generation_options

__all__ = ["MAX_QUESTION_CHARS", "Service", "answer_events", "create_app", "ensure_index", "sse"]
log = logging.getLogger("app")
ensure_index = index_handbook  # the name tests/support/served.py knows


class CountRequests:
    """ASGI middleware: count every response by method, route template and status (streams untouched)."""

    def __init__(self, app: Any, svc: Service) -> None:
        self.app, self.svc = app, svc

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
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


async def expire_chats(svc: Service, *, every_s: float = 3600.0) -> None:
    """Delete chats idle longer than HISTORY_TTL_DAYS at start-up, then every hour (lesson 19); 0 days: never."""
    days = svc.cfg.settings.history_ttl_days if svc.history_ttl_days is None else svc.history_ttl_days
    while days > 0:
        try:
            gone = await run_in_threadpool(svc.history.expire, days=days)
            log.info("expired %d messages of chats idle for more than %g days", gone, days)
        except Exception:  # noqa: BLE001 - a history outage: try again at the next round
            log.exception("chat expiry failed")
        await asyncio.sleep(every_s)


def lifespan_for(svc: Service, *, own_history: bool) -> Any:
    """Start-up indexes the handbook (re-indexing a collection of another vector size); shut-down closes history."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        start, cfg = time.perf_counter(), svc.cfg
        log.info("indexing %s into %r (%s) ...", svc.corpus_dir, svc.collection, cfg.qdrant_url or "embedded Qdrant")
        try:
            n = await run_in_threadpool(index_handbook, svc)
            svc.startup_s = time.perf_counter() - start
            log.info(
                "app ready in %.1f s: %d chunks in %r, history in %s, chat model %s at %s",
                svc.startup_s,
                n,
                svc.collection,
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
        expiring = asyncio.get_running_loop().create_task(expire_chats(svc))
        yield
        expiring.cancel()
        if own_history:
            svc.history.close()

    return lifespan


def create_app(
    cfg: Config | None = None,
    *,
    qdrant: QdrantClient | None = None,
    history: HistoryStore | None = None,
    options: dict | None = None,
    hybrid: bool = False,
    tuning: dict | None = None,
    guardrails: bool | None = None,
) -> FastAPI:
    """The FastAPI app; cfg defaults to setup(), qdrant to QDRANT_URL or embedded, history to HISTORY_URL or SQLite.

    tuning: Service fields such as read_s, deadline_s, attempts, breaker_failures, breaker_reset_s (lesson 14).
    guardrails: lesson 15's Guard (helpers.guardrails.SERVED) on every turn; None reads WORKSHOP_GUARDRAILS
    (on unless it is 0).
    """
    if cfg is None:
        from helpers.setup import setup

        cfg = setup()
    if qdrant is None:
        qdrant = QdrantClient(url=cfg.qdrant_url, timeout=10) if cfg.qdrant_url else QdrantClient(":memory:")
    own_history = history is None
    if history is None:
        history = open_history(
            cfg.settings.history_url or cfg.settings.state_dir / "history.sqlite",
            timeout_s=cfg.settings.history_timeout_s,
        )
    svc = Service(
        cfg=cfg, qdrant=qdrant, history=history, options=generation_options(options), hybrid=hybrid, **(tuning or {})
    )
    if cfg.settings.guardrails if guardrails is None else guardrails:
        svc.guard = Guard(svc.client, settings=SERVED)  # every layer but the marked sources: docs/benchmarks.md
    app = FastAPI(title="Halvorsen Ridge Station handbook chat", lifespan=lifespan_for(svc, own_history=own_history))
    app.state.service = svc
    app.add_middleware(CountRequests, svc=svc)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    errors.install(app)
    app.include_router(router)
    return app
