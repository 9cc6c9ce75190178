"""Fixtures: an in-process stand-in on a free loopback port, reached over real HTTP; the indexed handbook.

Test tiers: every test that uses the real models (the fixtures in SLOW_FIXTURES, or the @needs_offline marker)
and every notebook is marked `slow` here, so `pytest tests -m "not slow"` (make test-fast) needs no
llama.cpp and runs in seconds. A test that is not slow runs with WORKSHOP_NO_REAL_MODELS=1: if it loads a real
model anyway (in this process or in a stand-in it starts), the model refuses to load and the test fails.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from infra.standin.launcher import missing_packages
from infra.standin.settings import NO_MODELS_VARIABLE


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


OFFLINE_REASON = "offline extra not installed (make install-offline)"
needs_offline = pytest.mark.skipif(bool(missing_packages()), reason=OFFLINE_REASON)


SLOW_FIXTURES = {"stand_in", "client", "handbook_index", "served_qdrant", "browser", "bench_stand_in"}


def needs_real_models(item: pytest.Item) -> bool:
    """True for a notebook, a test using a real-model fixture, or a test marked @needs_offline."""
    offline = any(m.name == "skipif" and m.kwargs.get("reason") == OFFLINE_REASON for m in item.iter_markers())
    return item.path.suffix == ".ipynb" or offline or bool(SLOW_FIXTURES & set(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark slow every test that needs the real models and every notebook (nbmake item)."""
    for item in items:
        if needs_real_models(item):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture of a test that is not slow: forbid real models (WORKSHOP_NO_REAL_MODELS=1), else allow."""
    if item.get_closest_marker("slow") is None:
        os.environ[NO_MODELS_VARIABLE] = "1"
    else:
        os.environ.pop(NO_MODELS_VARIABLE, None)


def wait_until_serving(url: str, timeout: float = 30.0) -> None:
    """Return once GET /api/version answers at url."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url + "/api/version", timeout=1.0)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="session")
def stand_in() -> Iterator[tuple[str, object]]:
    """(base URL, server) of a stand-in serving the real models in a background thread."""
    if missing_packages():
        pytest.skip("offline extra not installed (make install-offline)")
    from infra.standin.registry import Registry
    from infra.standin.server import make_server

    server = make_server(free_port(), Registry())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    url = f"http://{host}:{port}"
    wait_until_serving(url)
    yield url, server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def client(stand_in):
    """The official ollama client pointed at the stand-in."""
    import ollama

    return ollama.Client(host=stand_in[0])


@pytest.fixture(scope="session")
def browser():
    """A headless system Chromium driven by Playwright for the whole session (see tests/browser.py)."""
    pytest.importorskip("playwright", reason="playwright is in requirements/base.txt: run make install")
    from playwright.sync_api import sync_playwright

    from tests.support.browser import launch, require_chromium

    require_chromium()
    with sync_playwright() as p:
        chromium = launch(p)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def handbook_index(client):
    """(qdrant, chunks, collection name): the whole handbook chunked and indexed once per session, embedded Qdrant.

    Read-only for its users: a test that writes makes its own collection.
    """
    from qdrant_client import QdrantClient

    from helpers.chunking import chunk_documents
    from helpers.config import EMBED_MODEL
    from helpers.corpus import load_documents
    from helpers.index import index_chunks

    docs, skipped = load_documents()
    assert docs and not skipped
    chunks = chunk_documents(docs)
    qdrant = QdrantClient(":memory:")
    assert index_chunks(client, qdrant, "handbook", chunks, embed_model=EMBED_MODEL) == len(chunks)
    return qdrant, chunks, "handbook"


@pytest.fixture(scope="session")
def served_qdrant(stand_in, handbook_index):
    """Embedded Qdrant holding the handbook as the served app indexes it, built once per session from handbook_index.

    The app's own sync runs (tests/support/served.py indexed_qdrant) and finds every document unchanged; with another
    EMBED_MODEL than handbook_index's the app indexes it all itself. A test that changes it restores it.
    """
    from helpers.config import EMBED_MODEL
    from tests.support.served import indexed_qdrant, stand_in_config

    qdrant, _, name = handbook_index
    same_embedder = stand_in_config(stand_in[0]).embed_model == EMBED_MODEL
    return indexed_qdrant(stand_in[0], seed=(qdrant, name) if same_embedder else None)
