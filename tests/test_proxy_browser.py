"""Lesson 13's page through JupyterLab's jupyter-server-proxy (`/proxy/<port>/`, as on a hub or Binder), real Chromium.

jupyter-server-proxy streams a response only when the request asks for `text/event-stream`; otherwise the answer
would arrive in one piece at the end. The page is opened under the proxy's prefix, so every path it uses must be
relative. Asserted: every request the page makes stays under the prefix, the POST asks for text/event-stream, and the
answer's token events arrive spread over time (not all in one read).
"""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from app.service import create_app
from helpers.history import HistoryStore
from infra.background import BackgroundServer
from tests.support.served import stand_in_config
from tests.test_lab_links_browser import repo_lab  # noqa: F401 - the fixture: JupyterLab as `make lab` starts it

QUESTION = "Where is the muster point when the fire alarm sounds?"


@pytest.mark.slow
def test_the_page_streams_tokens_progressively_through_jupyterlabs_proxy(
    repo_lab,  # noqa: F811
    browser,
    stand_in,
    served_qdrant,
    tmp_path,
):
    lab, token = repo_lab
    url = stand_in[0]
    app = create_app(
        stand_in_config(url),
        qdrant=served_qdrant,
        history=HistoryStore(tmp_path / "h.sqlite"),
        options={"num_predict": 60},
    )
    app.state.service.k = 3
    with BackgroundServer(app) as server:
        prefix = f"{lab}/proxy/{urlparse(server.url).port}/"
        page = browser.new_page(viewport={"width": 1200, "height": 760})
        requests = []
        page.on("request", lambda r: requests.append((r.method, r.url, r.headers.get("accept", ""))))
        response = page.goto(f"{prefix}?token={token}")
        assert response and response.status == 200
        page.wait_for_selector("#chat-id")
        page.fill("#question", QUESTION)
        page.click("#send")
        page.wait_for_function("window.chatEvents.some(e => e.event === 'done')", timeout=600_000)
        events = page.evaluate("window.chatEvents")
        tokens = [e for e in events if e["event"] == "token"]
        assert len(tokens) >= 2 and events[-1]["event"] == "done"
        spread_ms = tokens[-1]["t"] - tokens[0]["t"]
        print(f"{len(tokens)} token events over {spread_ms:.0f} ms through {prefix}")
        assert spread_ms > 100, "the answer arrived in one piece: the proxy buffered the stream"
        assert len({round(e["t"]) for e in tokens}) > 1
        assert page.locator(".msg.failed").count() == 0

    posts = [(u, accept) for method, u, accept in requests if method == "POST"]
    assert posts and all(u.startswith(prefix) and "text/event-stream" in accept for u, accept in posts), posts
    outside = [u for _, u, _ in requests if u.startswith(lab) and not u.startswith(prefix)]
    assert not outside, f"the page left the proxy's prefix: {outside}"
