"""Lesson 18 over real HTTP on the real stand-in, behind a recording proxy that counts the answers the model was asked
for: an answer-cache hit with no model call and a miss after re-indexing; the token budget's soft-cap warning (header
and SSE event) then a 429 with Retry-After; a 503 at once while the generation queue is full."""

from __future__ import annotations

import math
import threading
import time

import httpx
import pytest

from app.keys import KeyStore
from app.service import create_app, ensure_index
from helpers.cache import TurnCaches
from helpers.history import HistoryStore
from infra.background import BackgroundServer
from tests.support.recording import RecordingProxy
from tests.support.served import ask, parse_sse, stand_in_config

SHORT = {"num_predict": 8}  # the checks are on status codes, headers, events and model calls: a few tokens do


@pytest.fixture(scope="module")
def team(stand_in, served_qdrant, tmp_path_factory):
    """(service, http client with alice's key, the recording proxy): keys on, the answer cache on, k=2."""
    tmp = tmp_path_factory.mktemp("team")
    keys = KeyStore(tmp / "keys.json")
    with RecordingProxy(stand_in[0]) as proxy:
        app = create_app(
            stand_in_config(proxy.url),
            qdrant=served_qdrant,
            history=HistoryStore(tmp / "history.sqlite"),
            options=SHORT,
            guardrails=False,
            tuning={"keys": keys, "caches": TurnCaches(answers=True)},
        )
        svc = app.state.service
        svc.k = 2
        auth = {"Authorization": f"Bearer {keys.add('alice')}"}
        with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=600, headers=auth) as http:
            yield svc, http, proxy


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two answers and the handbook indexed again, on a busy shared machine
def test_answer_cache_hit_makes_no_model_call_and_misses_after_reindexing(team):
    svc, http, proxy = team
    question = "Where is the muster point when the fire alarm sounds?"
    first = dict(ask(http, "cache-1", question))
    asked = len(proxy.answers())
    second = dict(ask(http, "cache-2", question))  # a new chat: the same question, no earlier turns
    assert second["done"]["cached"] is True and len(proxy.answers()) == asked, "served without a model call"
    assert second["sources"]["answer"] == first["sources"]["answer"]
    assert [s["chunk_id"] for s in second["sources"]["sources"]] == [s["chunk_id"] for s in first["sources"]["sources"]]
    one = svc.qdrant.scroll(svc.collection, limit=1)[0][0].id
    svc.qdrant.delete(svc.collection, points_selector=[one])
    assert ensure_index(svc) and svc.caches is not None and len(svc.caches.answer_cache) == 0, "re-indexing empties it"
    third = dict(ask(http, "cache-3", question))
    assert "cached" not in third["done"] and len(proxy.answers()) == asked + 1, "after re-indexing the model answers"
    assert 'rag_chat_turns_total{outcome="cached"} 1.0' in http.get("/metrics").text


def stream(
    http: httpx.Client, question: str, chat_id: str, *, headers: dict | None = None
) -> tuple[httpx.Response, list[tuple[str, dict]]]:
    """POST a question; the response (read) and its SSE events (none unless 200)."""
    with http.stream("POST", f"/chat/{chat_id}", json={"question": question}, headers=headers) as response:
        if response.status_code != 200:
            response.read()
            return response, []
        events = list(parse_sse(response.iter_lines()))
    return response, events


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_token_budget_warns_past_80_percent_then_answers_429_with_retry_after(team):
    svc, http, _proxy = team
    assert svc.keys is not None
    bob = {"Authorization": f"Bearer {svc.keys.add('bob')}"}  # a key of its own: nothing charged to it yet
    svc.limits.token_budget = 0
    _, events = stream(http, "Which station boat is used for diving?", "budget-1", headers=bob)
    done = dict(events)["done"]
    used = done["prompt_tokens"] + done["completion_tokens"]
    assert used > 0, "the backend reported token counts"
    svc.limits.token_budget = math.ceil(used / 0.9)  # bob has now used about 90 % of his budget
    try:
        warned, events = stream(http, "How many beds are there in Driftwood Annexe?", "budget-2", headers=bob)
        assert warned.status_code == 200 and "X-Budget-Warning" in warned.headers
        budget = dict(events)["budget"]
        assert budget["used"] > svc.limits.token_budget and budget["fraction"] > 1, "charged with the reported counts"
        assert [e for e, _ in events][-2:] == ["budget", "done"]
        refused, _ = stream(http, "What is the capacity of each fresh-water storage tank?", "budget-3", headers=bob)
        assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= svc.limits.window_s
        metrics = http.get("/metrics").text
        assert 'rag_refused_total{reason="budget"} 1.0' in metrics and "rag_budget_warnings_total 1.0" in metrics
    finally:
        svc.limits.token_budget = 0


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_full_generation_queue_answers_503_at_once(team):
    svc, http, _proxy = team
    svc.limits.queue_max = 1
    statuses: list[int] = []
    try:
        first = threading.Thread(
            target=lambda: statuses.append(
                stream(http, "Above what wind speed must snowmobile trips stop?", "q-1")[0].status_code
            )
        )
        first.start()
        deadline = time.monotonic() + 60
        while svc.limits.active < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert svc.limits.active == 1, "the first answer holds the only place in the queue"
        started = time.perf_counter()
        full = http.post("/chat/q-2", json={"question": "Who has to approve a boat trip?"})
        waited = time.perf_counter() - started
        first.join(timeout=600)
    finally:
        svc.limits.queue_max = 32
    assert full.status_code == 503 and int(full.headers["Retry-After"]) >= 1 and "WORKSHOP_QUEUE_MAX" in full.text
    assert waited < 5, f"refused at once, not after waiting ({waited:.1f} s)"
    assert statuses == [200] and svc.limits.active == 0
    assert 'rag_refused_total{reason="queue"} 1.0' in http.get("/metrics").text
