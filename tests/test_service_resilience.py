"""The lesson-13 service under injected faults: the FaultProxy in front of the real offline stand-in, real HTTP.

Breaker 503 with Retry-After and recovery by itself, a stream dying mid-answer, retrieval degrading, spans and JSON
logs with the request id, failure counters. The fast test at the top needs no model (nothing listens: refused).
"""

from __future__ import annotations

import io
import json
import logging
import time

import httpx
import pytest
from qdrant_client import QdrantClient

from app.service import create_app
from helpers.history import HistoryStore
from helpers.telemetry import json_logs
from infra.background import BackgroundServer
from infra.faults import FaultProxy
from tests.conftest import free_port
from tests.support.served import ask, stand_in_config

QUESTION = "Where is the muster point when the fire alarm sounds?"
TUNING = {"attempts": 2, "breaker_failures": 2, "breaker_reset_s": 1.5}  # read timeout: the default 300 s


def sample(http: httpx.Client, name: str, labels: dict) -> float:
    """One sample of the app's /metrics (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(http.get("/metrics").text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


@pytest.mark.parametrize("guardrails", [False, True])
def test_backend_down_opens_the_breaker_then_503_says_when_to_retry(tmp_path, guardrails):
    """With the guardrails on (the default), the question's embedding is the first call to fail (stage "guard")."""
    app = create_app(
        stand_in_config(f"http://127.0.0.1:{free_port()}"),
        qdrant=QdrantClient(":memory:"),
        history=HistoryStore(tmp_path / "h.sqlite"),
        tuning={**TUNING, "breaker_reset_s": 60},
        guardrails=guardrails,
    )
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        for _ in range(2):
            response = http.post("/chat/down", json={"question": QUESTION})
            assert response.status_code == 503 and "does not answer" in response.json()["detail"]
        start = time.perf_counter()
        response = http.post("/chat/down", json={"question": QUESTION})
        assert response.status_code == 503 and "circuit breaker open" in response.json()["detail"]
        assert 50 <= response.json()["retry_after_s"] <= 60 and 50 <= int(response.headers["Retry-After"]) <= 60
        assert time.perf_counter() - start < 10  # no retries against a backend known to be down (embeds aside)
        assert http.get("/healthz").json()["breaker"] == "open"
        first = "guard" if guardrails else "generate"
        assert sample(http, "rag_failures_total", {"stage": first, "kind": "connection"}) == 2
        assert sample(http, "rag_failures_total", {"stage": "generate", "kind": "circuit_open"}) == 1
        assert sample(http, "rag_circuit_state", {"breaker": "llm"}) == 2
        assert sample(http, "rag_request_seconds_count", {"status": "unavailable"}) == 3
        assert http.get("/chats/down").json() == {"chat_id": "down", "messages": [], "failed": []}


@pytest.fixture
def faulty(stand_in, served_qdrant, tmp_path):
    """(http client, fault proxy, service, JSON log buffer): the app on the proxy in front of the real stand-in."""
    out = io.StringIO()
    json_logs("rag", stream=out)
    with FaultProxy(stand_in[0]) as proxy:
        app = create_app(
            stand_in_config(proxy.url),
            qdrant=served_qdrant,
            history=HistoryStore(tmp_path / "h.sqlite"),
            options={"num_predict": 8},
            tuning=TUNING,
            guardrails=False,
        )  # the pipeline's own behaviour (the guard fails closed: a 503)
        app.state.service.k = 1
        with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=600) as http:
            yield http, proxy, app.state.service, out
    logging.getLogger("rag").handlers.clear()


def test_breaker_opens_shows_sources_and_recovers_by_itself(faulty):
    http, proxy, svc, _ = faulty
    proxy.set("503", path="/api/chat")  # generation fails, embedding still works
    for _ in range(2):
        response = http.post("/chat/b", json={"question": QUESTION})
        body = response.json()
        assert response.status_code == 503 and "does not answer" in body["detail"]
        assert body["sources"] and body["sources"][0]["chunk_id"]  # what was retrieved is still shown
    chats_seen = sum(s.path == "/api/chat" for s in proxy.seen)
    assert chats_seen == 4  # 2 turns x 2 attempts
    response = http.post("/chat/b", json={"question": QUESTION})
    assert response.status_code == 503 and "circuit breaker open" in response.json()["detail"]
    assert int(response.headers["Retry-After"]) >= 1
    assert sum(s.path == "/api/chat" for s in proxy.seen) == chats_seen  # rejected without calling the model
    proxy.clear()  # the backend comes back
    time.sleep(TUNING["breaker_reset_s"] + 0.2)
    assert http.get("/healthz").json()["breaker"] == "half-open"
    events = ask(http, "b", QUESTION)  # the probe
    assert events[-1][0] == "done" and svc.breaker.state == "closed"
    assert http.get("/chats/b").json()["failed"] == []  # a 503 writes nothing
    assert sample(http, "rag_failures_total", {"stage": "generate", "kind": "http_503"}) == 2
    assert sample(http, "rag_retries_total", {"stage": "generate"}) == 2
    assert sample(http, "rag_request_seconds_count", {"status": "ok"}) == 1


def test_a_stream_dying_mid_answer_is_an_error_event_and_no_half_turn(faulty):
    http, proxy, _, _ = faulty
    proxy.set("die:3", times=1, path="/api/chat")
    events = ask(http, "d", QUESTION)
    names = [name for name, _ in events]
    assert "token" in names and names[-1] == "error" and "done" not in names
    assert events[-1][1]["kind"] == "connection_lost" and "recorded as failed" in events[-1][1]["message"]
    stored = http.get("/chats/d").json()
    assert stored["messages"] == [] and [r["status"] for r in stored["failed"]] == ["failed", "failed"]
    assert sum(s.path == "/api/chat" for s in proxy.seen) == 1  # a half-sent answer is never asked for again
    assert sample(http, "rag_failures_total", {"stage": "generate", "kind": "connection_lost"}) == 1
    assert sample(http, "rag_request_seconds_count", {"status": "error"}) == 1


def test_retrieval_failing_degrades_the_answer_and_traces_every_stage(faulty):
    http, proxy, svc, out = faulty
    proxy.set("503", path="/api/embed")
    events = ask(http, "r", QUESTION)
    assert events[-1][0] == "done" and events[-2][1]["sources"] == []
    assert "could not be searched" in events[-2][1]["degraded"]
    assert sample(http, "rag_failures_total", {"stage": "embed", "kind": "http_503"}) == 1
    proxy.clear()
    events = ask(http, "r", "And who checks it?")  # a follow-up: rewrite, embed, search, generate
    rid = events[-1][1]["request_id"]
    spans = svc.telemetry.finished(rid)
    assert {"chat", "rewrite", "retrieve", "embed", "search", "generate"} <= {s.name for s in spans}
    root = next(s for s in spans if s.name == "chat")
    parents = {s.context.span_id: s.parent.span_id if s.parent else None for s in spans}

    def descends(span_id: int | None) -> bool:  # every stage's span is under the turn's root span
        while span_id is not None and span_id != root.context.span_id:
            span_id = parents.get(span_id)
        return span_id == root.context.span_id

    assert all(descends(s.context.span_id) for s in spans)
    by_name = {s.name: s for s in spans}
    assert by_name["embed"].parent.span_id == by_name["retrieve"].context.span_id, "retrieve = embed + search"
    assert root.attributes["outcome"] == "ok"
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    mine = [line for line in lines if line["request_id"] == rid]
    assert {line["stage"] for line in mine} >= {"rewrite", "search", "prompt", "turn"}
    turn = next(line for line in mine if line["stage"] == "turn")
    assert turn["outcome"] == "ok" and turn["completion_tokens"] == events[-1][1]["completion_tokens"]
    assert next(line for line in mine if line["stage"] == "search")["chunks"] == [
        events[-2][1]["sources"][0]["chunk_id"]
    ]
