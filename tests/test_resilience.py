"""helpers.resilience and helpers.telemetry driven by real injected faults (infra.faults.FaultProxy).

Fast tier: the proxy (real uvicorn, real TCP, the official ollama client) in front of a FAKE upstream, a 30-line
Ollama-shaped app defined below, so the faults run in milliseconds without a model. The same faults against the real
offline stand-in are the `slow` tests at the end (the `stand_in` fixture).
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time

import httpx
import ollama
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from helpers.resilience import (
    CircuitBreaker,
    CircuitOpenError,
    DeadlineExceededError,
    failure_kind,
    is_transient,
    make_client,
    open_stream,
    retrying,
    with_deadline,
)
from helpers.telemetry import Telemetry, json_logs, request_context, span_tree
from infra.background import BackgroundServer
from infra.faults import Fault, FaultProxy
from tests.conftest import free_port

MODEL = "fake:latest"
USER = [{"role": "user", "content": "hello"}]
FAST = {"base_s": 0.01, "max_wait_s": 0.05}  # backoff waits of a few ms: the tests count attempts, not seconds


async def fake_chat(request: Request) -> StreamingResponse | JSONResponse:
    """A FAKE /api/chat: 10 words, 20 ms apart (2 s if the message says "slow"), then the final line (done=true)."""
    body = await request.json()
    pause = 2.0 if "slow" in body["messages"][-1]["content"] else 0.02

    async def lines():
        import asyncio

        try:
            for i in range(10):
                await asyncio.sleep(pause)
                yield (
                    json.dumps({"model": MODEL, "message": {"role": "assistant", "content": f"w{i} "}, "done": False})
                    + "\n"
                )
            yield (
                json.dumps(
                    {
                        "model": MODEL,
                        "message": {"role": "assistant", "content": ""},
                        "done": True,
                        "done_reason": "stop",
                        "eval_count": 10,
                        "prompt_eval_count": 3,
                    }
                )
                + "\n"
            )
        finally:
            UPSTREAM_CALLS.append("chat stream ended")

    if body.get("stream", True):
        return StreamingResponse(lines(), media_type="application/x-ndjson")
    return JSONResponse({"model": MODEL, "message": {"role": "assistant", "content": "w0"}, "done": True})


UPSTREAM_CALLS: list[str] = []


async def fake_embed(request: Request) -> JSONResponse:
    """A FAKE /api/embed: one 4-d vector per input."""
    UPSTREAM_CALLS.append(request.url.path)
    body = await request.json()
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    return JSONResponse({"model": "fake-embed", "embeddings": [[0.5, 0.5, 0.5, 0.5] for _ in inputs]})


@pytest.fixture(scope="module")
def upstream():
    """The fake upstream served on 127.0.0.1 (a free port): its URL."""
    app = Starlette(
        routes=[Route("/api/chat", fake_chat, methods=["POST"]), Route("/api/embed", fake_embed, methods=["POST"])]
    )
    with BackgroundServer(app) as up:
        yield up.url


@pytest.fixture(scope="module")
def proxy(upstream):
    """A FaultProxy in front of the fake upstream; each test starts with no fault and an empty request log."""
    with FaultProxy(upstream) as fault_proxy:
        yield fault_proxy


@pytest.fixture(autouse=True)
def healed(request):
    """No fault left over from the previous test."""
    if "proxy" in request.fixturenames:
        fault_proxy = request.getfixturevalue("proxy")
        fault_proxy.clear()
        fault_proxy.seen.clear()
    yield


def embed(client: ollama.Client) -> list[float]:
    return client.embed(model="fake-embed", input="hi").embeddings[0]


def test_fault_specs_parse_and_a_bad_one_says_what_is_allowed():
    assert Fault.parse("503") == Fault("503") and Fault.parse("die:3") == Fault("die", 3.0)
    assert Fault.parse("slow-first:1.5") == Fault("slow-first", 1.5) and Fault.parse("reset") == Fault("reset")
    for bad in ("502", "die", "reset:1", "lag:2", "delay:soon"):
        with pytest.raises(ValueError, match="use one of"):
            Fault.parse(bad)


def test_a_bad_fault_header_is_a_400_naming_the_faults(proxy):
    with pytest.raises(ollama.ResponseError) as caught:
        embed(make_client(proxy.url, headers={"X-Fault": "explode"}))
    assert caught.value.status_code == 400 and "use one of" in caught.value.error


def test_the_proxy_as_a_process_is_driven_over_http_and_stops_on_terminate(upstream, tmp_path):
    """`python -m infra.faults` as lesson 14 runs it: URL on stdout, faults set over /_faults, seen, then stopped."""
    url_file = tmp_path / "url"
    cmd = [sys.executable, "-m", "infra.faults", "--upstream", upstream, "--url-file", str(url_file)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url_file.read_text().strip() == url
        admin = httpx.Client(base_url=url, timeout=10)
        assert admin.post("/_faults", json={"fault": "503", "times": 1, "path": "/api/embed"}).json() == {
            "fault": "503",
            "times": 1,
            "path": "/api/embed",
        }
        with pytest.raises(ollama.ResponseError) as caught:
            embed(make_client(url))
        assert caught.value.status_code == 503 and len(embed(make_client(url))) == 4  # once, then healed
        with pytest.raises(ollama.ResponseError) as caught:
            embed(make_client(url, headers={"X-Fault": "404"}))
        assert caught.value.status_code == 404
        assert [x["fault"] for x in admin.get("/_faults/seen").json()] == ["503:0", None, "404:0"]
        assert admin.delete("/_faults/seen").json() == {"cleared": 3} and admin.get("/_faults/seen").json() == []
        bad = admin.post("/_faults", json={"fault": "explode"})
        assert bad.status_code == 400 and "use one of" in bad.json()["error"]
        assert admin.post("/_faults", json={"fault": "503", "times": -1}).status_code == 400
        assert admin.get("/_faults/nothing").status_code == 404
        admin.close()
    finally:
        process.terminate()
        code = process.wait(timeout=15)
    assert code == 0


def test_no_fault_passes_the_real_answer_through(proxy):
    chunks = list(make_client(proxy.url).chat(model=MODEL, messages=USER, stream=True))
    assert "".join(c.message.content for c in chunks).split() == [f"w{i}" for i in range(10)] and chunks[-1].done
    assert [s.fault for s in proxy.seen] == [None]


@pytest.mark.parametrize("status", ["500", "503", "429"])
def test_retry_succeeds_after_n_transient_failures(proxy, status):
    proxy.set(status, times=2)
    assert len(retrying(attempts=3, **FAST)(embed, make_client(proxy.url))) == 4
    assert [s.fault is not None for s in proxy.seen] == [True, True, False]  # two failures, then the real answer


def test_retry_gives_up_after_the_limit_with_the_last_error(proxy):
    proxy.set("503")
    with pytest.raises(ollama.ResponseError) as caught:
        retrying(attempts=4, **FAST)(embed, make_client(proxy.url))
    assert caught.value.status_code == 503 and len(proxy.seen) == 4


@pytest.mark.parametrize("status", ["400", "404"])
def test_no_retry_on_a_client_error(proxy, status):
    proxy.set(status)
    with pytest.raises(ollama.ResponseError) as caught:
        retrying(attempts=5, **FAST)(embed, make_client(proxy.url))
    assert caught.value.status_code == int(status) and len(proxy.seen) == 1  # asked once, never again


def test_a_reset_connection_is_transient_and_retried(proxy):
    proxy.set("reset", times=1)
    assert retrying(attempts=2, **FAST)(embed, make_client(proxy.url))
    assert len(proxy.seen) == 2


def test_nothing_listening_is_a_transient_connection_error():
    client = make_client(f"http://127.0.0.1:{free_port()}", connect=0.5)
    with pytest.raises(ConnectionError) as caught:
        embed(client)
    assert is_transient(caught.value) and failure_kind(caught.value) == "connection"


def test_read_timeout_fires_within_its_bound(proxy):
    proxy.set("delay:10")
    start = time.perf_counter()
    with pytest.raises(httpx.ReadTimeout) as caught:
        embed(make_client(proxy.url, read=0.5))
    elapsed = time.perf_counter() - start
    assert 0.4 <= elapsed < 0.5 + 3.0, elapsed  # generous margin: a shared machine
    assert is_transient(caught.value) and failure_kind(caught.value) == "timeout"


def test_a_client_that_gave_up_during_a_delay_is_never_forwarded(proxy):
    proxy.set("delay:1")
    UPSTREAM_CALLS.clear()
    with pytest.raises(httpx.ReadTimeout):
        embed(make_client(proxy.url, read=0.2))
    time.sleep(1.3)
    assert UPSTREAM_CALLS == [] and len(proxy.seen) == 1  # the backend never worked for nobody


def test_timeouts_can_be_left_out_of_the_retries(proxy):
    proxy.set("delay:1")
    with pytest.raises(httpx.ReadTimeout):
        retrying(attempts=3, retry_timeouts=False, **FAST)(embed, make_client(proxy.url, read=0.2))
    assert len(proxy.seen) == 1 and not is_transient(httpx.ReadTimeout("t"), timeouts=False)


def test_a_client_hanging_up_ends_the_upstream_stream_at_once(proxy):
    UPSTREAM_CALLS.clear()
    with pytest.raises(httpx.ReadTimeout):
        list(
            make_client(proxy.url, read=0.3).chat(
                model=MODEL, messages=[{"role": "user", "content": "slow"}], stream=True
            )
        )
    deadline = time.monotonic() + 1.5  # the upstream's first line comes after 2 s, the whole stream after 20 s
    while not UPSTREAM_CALLS and time.monotonic() < deadline:
        time.sleep(0.02)
    assert UPSTREAM_CALLS == ["chat stream ended"]


def test_a_stalled_stream_is_cut_by_the_read_timeout(proxy):
    proxy.set("stall:3")
    received, start = [], time.perf_counter()
    with pytest.raises(httpx.ReadTimeout):
        for chunk in make_client(proxy.url, read=0.5).chat(model=MODEL, messages=USER, stream=True):
            received.append(chunk.message.content)
    assert len(received) == 3 and time.perf_counter() - start < 0.5 + 3.0


def test_a_deadline_cuts_a_slow_but_steady_stream(proxy):
    start = time.perf_counter()
    stream = make_client(proxy.url).chat(model=MODEL, messages=USER, stream=True)  # 10 words over ~0.2 s
    with pytest.raises(DeadlineExceededError, match="deadline"):
        list(with_deadline(stream, seconds=0.08))
    assert time.perf_counter() - start < 0.08 + 3.0


def test_open_stream_retries_until_the_first_chunk(proxy):
    proxy.set("503", times=2, path="/api/chat")
    client = make_client(proxy.url)
    chunks = list(
        open_stream(lambda: client.chat(model=MODEL, messages=USER, stream=True), policy=retrying(attempts=3, **FAST))
    )
    assert chunks[-1].done and len(proxy.seen) == 3


def test_a_stream_that_dies_mid_answer_is_never_sent_again(proxy):
    client = make_client(proxy.url, headers={"X-Fault": "die:4"})  # per request: this client's requests only
    received = []
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)) as caught:
        for chunk in open_stream(
            lambda: client.chat(model=MODEL, messages=USER, stream=True), policy=retrying(attempts=5, **FAST)
        ):
            received.append(chunk.message.content)
    assert len(received) == 4 and len(proxy.seen) == 1  # the half answer was shown once and not asked for again
    assert failure_kind(caught.value) == "connection_lost"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def guarded(breaker: CircuitBreaker, client: ollama.Client) -> object:
    with breaker:
        return embed(client)


def test_breaker_opens_after_k_failures_rejects_fast_and_closes_after_a_probe(proxy):
    clock, changes = Clock(), []
    breaker = CircuitBreaker(
        "fake", failures=3, reset_after=10, clock=clock, on_change=lambda old, new: changes.append(new)
    )
    client = make_client(proxy.url)
    proxy.set("503")
    for _ in range(3):
        with pytest.raises(ollama.ResponseError):
            guarded(breaker, client)
    assert breaker.state == "open" and len(proxy.seen) == 3
    start = time.perf_counter()
    with pytest.raises(CircuitOpenError) as caught:
        guarded(breaker, client)
    assert time.perf_counter() - start < 0.05 and len(proxy.seen) == 3  # rejected without calling the backend
    assert caught.value.retry_after_s == pytest.approx(10)
    clock.now = 10.0
    assert breaker.state == "half-open"
    with pytest.raises(ollama.ResponseError):  # the probe fails: open again, for another reset_after
        guarded(breaker, client)
    assert breaker.state == "open" and breaker.retry_after() == pytest.approx(10)
    proxy.clear()
    clock.now = 20.0
    assert guarded(breaker, client) and breaker.state == "closed"
    assert changes == ["open", "half-open", "open", "half-open", "closed"]


def test_breaker_lets_one_probe_through_and_ignores_client_errors(proxy):
    clock = Clock()
    breaker = CircuitBreaker("fake", failures=1, reset_after=5, clock=clock)
    breaker.failure()
    clock.now = 5.0
    breaker.before()  # the probe
    with pytest.raises(CircuitOpenError):  # a second caller while the probe runs
        breaker.before()
    proxy.set("400")
    with pytest.raises(ollama.ResponseError):
        guarded(CircuitBreaker("other", failures=1), make_client(proxy.url))
    breaker.release()
    assert breaker.state == "half-open"
    four_hundreds = CircuitBreaker("x", failures=1)
    for _ in range(3):
        with pytest.raises(ollama.ResponseError):
            guarded(four_hundreds, make_client(proxy.url))
    assert four_hundreds.state == "closed"  # the caller's mistakes say nothing about the backend


def test_spans_logs_and_failure_counters_follow_a_request(proxy):
    tel, out = Telemetry("test", registry=CollectorRegistry(), endpoint=""), io.StringIO()
    logger = json_logs("rag-test", stream=out)
    proxy.set("503", times=1)
    with request_context("req12345") as rid, tel.span("chat"):
        with tel.span("embed", model="fake-embed"):
            retrying(attempts=2, on_retry=lambda _s: tel.retries.labels("embed").inc(), **FAST)(
                embed, make_client(proxy.url)
            )
        logger.info("retrieved", extra={"stage": "search", "chunks": ["a#0"]})
        with pytest.raises(ollama.ResponseError), tel.span("generate"):
            proxy.set("404")
            embed(make_client(proxy.url))
    spans = tel.finished(rid)
    assert [s.name for s in spans] == ["embed", "generate", "chat"]
    assert all(s.attributes["request_id"] == "req12345" for s in spans)
    assert spans[1].attributes["error.kind"] == "http_404" and spans[0].parent.span_id == spans[2].context.span_id
    assert span_tree(spans).splitlines()[0].startswith("chat") and "ERROR(http_404" in span_tree(spans)
    line = json.loads(out.getvalue().splitlines()[0])
    assert line["request_id"] == "req12345" and line["stage"] == "search" and line["chunks"] == ["a#0"]
    assert tel.registry.get_sample_value("rag_failures_total", {"stage": "generate", "kind": "http_404"}) == 1
    assert tel.registry.get_sample_value("rag_retries_total", {"stage": "embed"}) == 1
    logging.getLogger("rag-test").handlers.clear()


def test_otlp_endpoint_switches_the_exporter_from_memory_to_a_collector():
    tel = Telemetry("test", registry=CollectorRegistry(), endpoint="http://127.0.0.1:9")
    assert tel.memory is None and tel.finished() == []
    tel.provider.shutdown = lambda: None  # nothing listens on port 9: do not try to send at exit


@pytest.mark.slow
def test_real_stand_in_behind_the_proxy_retries_and_times_out(stand_in):
    with FaultProxy(stand_in[0]) as fault_proxy:
        fault_proxy.set("503", times=2)
        patient = make_client(fault_proxy.url)  # the first calls may load the models
        vector = retrying(attempts=3, **FAST)(patient.embed, model="all-minilm", input="muster point").embeddings[0]
        assert len(vector) == 384 and len(fault_proxy.seen) == 3
        patient.chat(model="smollm2:135m", messages=USER, options={"num_predict": 1})
        fault_proxy.set("stall:2", path="/api/chat")
        received, start = [], time.perf_counter()
        with pytest.raises(httpx.ReadTimeout):  # read 5 s: longer than a token's gap, even on a busy machine
            for chunk in make_client(fault_proxy.url, read=5).chat(
                model="smollm2:135m", messages=USER, stream=True, options={"num_predict": 40}
            ):
                received.append(chunk)
        assert len(received) == 2 and time.perf_counter() - start < 120  # the first tokens' time, plus 5 s


def test_one_stage_records_the_metric_the_span_and_the_log_line_together():
    from helpers.metrics import MetricsLog

    metrics, out = MetricsLog(), io.StringIO()
    tel = Telemetry("test", registry=metrics.registry, endpoint="")
    logger = json_logs("rag-stage-test", stream=out)
    with request_context("stage123"):
        with tel.stage("retrieve", metrics=metrics, model="all-minilm", logger=logger, k=4) as stage:
            stage.span.set_attribute("hits", 4)
        with pytest.raises(TimeoutError), tel.stage("rewrite", metrics=metrics, model="m", logger=logger):
            raise TimeoutError("slow")
    assert [(r.stage, r.model, r.request_id) for r in metrics.records] == [
        ("retrieve", "all-minilm", "stage123"),
        ("rewrite", "m", "stage123"),
    ]
    spans = {s.name: s for s in tel.finished("stage123")}
    assert spans["retrieve"].attributes["hits"] == 4 and spans["rewrite"].status.status_code.name == "ERROR"
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["stage"], line["level"]) for line in lines] == [("retrieve", "info"), ("rewrite", "warning")]
    assert lines[0]["hits"] == 4 and lines[0]["k"] == 4 and lines[1]["kind"] == "timeout" and "ms" in lines[1]
    assert 'rag_failures_total{kind="timeout",stage="rewrite"} 1.0' in metrics.prometheus_text()
