"""Shared by the service tests, the page test and the load benchmark: the app served on 127.0.0.1 over real HTTP."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
from qdrant_client import QdrantClient, models

from helpers.config import REPO_ROOT, STAND_IN_CHAT_MODEL, read_settings
from helpers.setup import Config
from tests.support.processes import stop_process


def stand_in_config(host: str) -> Config:
    """A Config for a stand-in (or any Ollama API) at host, as setup() would make it."""
    settings = read_settings()
    return Config(
        backend="stand-in",
        ollama_host=host,
        chat_model=STAND_IN_CHAT_MODEL,
        embed_model=settings.embed_model,
        embed_dim=384,
        qdrant_url=None,
        fast=settings.fast,
        settings=settings,
    )


def copy_collection(source: QdrantClient, name: str, target: QdrantClient, *, target_name: str) -> int:
    """Copy every point of source's collection name (vectors and payloads) into target_name; the points copied."""
    from helpers.index import ensure_collection

    points, offset = [], None
    while True:
        page, offset = source.scroll(name, limit=256, offset=offset, with_payload=True, with_vectors=True)
        points += [models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in page]
        if offset is None:
            break
    ensure_collection(target, target_name, size=len(points[0].vector))
    target.upsert(target_name, points=points, wait=True)
    return len(points)


def indexed_qdrant(host: str, *, seed: tuple[QdrantClient, str] | None = None) -> QdrantClient:
    """Embedded Qdrant with the handbook indexed by the app through the stand-in at host (tests: served_qdrant).

    seed (qdrant, collection): a handbook index the session already made (tests/conftest.py handbook_index), copied
    under the app's collection name first, so the app's own sync finds every document unchanged and embeds none.
    """
    from app.service import Service, ensure_index
    from helpers.history import HistoryStore

    qdrant = QdrantClient(":memory:")
    svc = Service(cfg=stand_in_config(host), qdrant=qdrant, history=HistoryStore(":memory:"))
    if seed is not None:
        copy_collection(*seed, qdrant, target_name=svc.collection)
    ensure_index(svc)
    return qdrant


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, dict]]:
    """(event, data) pairs from the lines of a text/event-stream body; each frame ends with a blank line."""
    event, data = None, []
    for line in lines:
        if line == "":
            if event is not None or data:
                yield event or "message", json.loads("".join(data) or "{}")
            event, data = None, []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        else:
            raise AssertionError(f"not an SSE line: {line!r}")


def ask(http: httpx.Client, chat_id: str, question: str) -> list[tuple[str, dict]]:
    """POST one question and collect every SSE event of the answer."""
    with http.stream("POST", f"/chat/{chat_id}", json={"question": question}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(parse_sse(response.iter_lines()))


def chat_queue(server: object, model: str = STAND_IN_CHAT_MODEL) -> int:
    """Requests holding or waiting for the in-process stand-in's chat model."""
    return server.registry.models[model].lock.waiting


@contextlib.contextmanager
def app_process(env: dict[str, str], *, log: Path, timeout: float = 600.0) -> Iterator[str]:
    """`python -m app` in a child process on a free loopback port; its base URL once it says it serves, then stopped.

    Its stderr (the app's log) goes to log; a start that fails or takes longer than timeout fails with the log's tail.
    """
    from tests.conftest import free_port

    port = free_port()
    argv = [sys.executable, "-m", "app", "--port", str(port)]
    with open(log, "w", encoding="utf-8") as err:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:  # __main__ prints this line once the app answers /healthz
                if line.startswith("serving the chat page on "):
                    break
            else:
                raise AssertionError(
                    f"python -m app stopped ({proc.wait()}) before serving:\n{log.read_text()[-3000:]}"
                )
            timer.cancel()
            yield f"http://127.0.0.1:{port}"
        finally:
            timer.cancel()
            stop_process(proc, grace_s=30)
