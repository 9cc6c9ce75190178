"""The stand-in's HTTP layer against Ollama's API reference, with FAKE models (fast tier, no llama.cpp).

The models here are fakes on purpose: they make failures that real models can't be made to produce on
demand (an error after two tokens, a template that rejects two user turns in a row, a slow generation to
give up on) and they record the order in which requests were served. Everything else is real: the
stand-in's own app on uvicorn, on a loopback port, reached over HTTP by the official `ollama` api,
httpx or a raw socket. tests/test_stand_in_api.py checks the same server with the real models; the tools and the OpenAI-compatible API
over the same fakes are in tests/test_stand_in_fake_tools.py. The fakes: tests/support/fake_standin.py.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import ollama
import pytest

from helpers.config import REPO_ROOT
from tests.support.fake_standin import CHAT, EMBED, REQUEST_TIMEOUT_S, USER, Record, chat_lock, serve_fake, wait_until


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> Iterator[tuple[str, object, Record]]:
    """(base URL, server, record) of the stand-in's real HTTP server over fake models."""
    with serve_fake(tmp_path_factory.mktemp("fake-models")) as running:
        yield running


@pytest.fixture
def api(fake) -> ollama.Client:
    """The official client on the fake-model stand-in (this module's own, not conftest's real one)."""
    return ollama.Client(host=fake[0])


# ---- streaming, errors, cancellation -----------------------------------------------------------------


def outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None without a network."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: routing only
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_binds_loopback_only(fake):
    port = fake[1].server_address[1]
    assert fake[1].server_address[0] == "127.0.0.1"
    address = outward_address()
    if address is None:
        pytest.skip("no non-loopback address on this machine")
    with pytest.raises(OSError):
        socket.create_connection((address, port), timeout=2).close()


def test_version_says_who_it_is(fake):
    body = httpx.get(fake[0] + "/api/version").json()
    assert body["version"] and body["workshop_stand_in"] is True
    assert body["pid"] == os.getpid() and body["checkout"] == str(REPO_ROOT)
    assert body["port"] == fake[1].server_address[1] and body["models"] == [CHAT, EMBED]


def test_template_error_before_the_first_line_is_a_proper_status(api):
    messages = [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]
    with pytest.raises(ollama.ResponseError) as err:
        list(api.chat(model=CHAT, messages=messages, stream=True))
    assert err.value.status_code == 400 and "alternate" in err.value.error
    assert api.list().models  # the connection is still usable


def test_error_after_the_stream_started_is_an_ndjson_error_line(fake, api):
    parts = []
    with pytest.raises(ollama.ResponseError) as err:
        for part in api.chat(model=CHAT, messages=[{"role": "user", "content": "FAIL"}], stream=True):
            parts.append(part)
    assert len(parts) == 2 and "broke down" in err.value.error
    with httpx.stream("POST", fake[0] + "/api/generate", json={"model": CHAT, "prompt": "FAIL"}) as r:
        lines = [json.loads(x) for x in r.iter_lines() if x]
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    assert [x.get("response") for x in lines[:2]] == ["w0 ", "w1 "] and set(lines[-1]) == {"error"}
    assert api.list().models


def test_non_streamed_error_is_a_500_with_json(api):
    with pytest.raises(ollama.ResponseError) as err:
        api.chat(model=CHAT, messages=[{"role": "user", "content": "FAIL"}])
    assert err.value.status_code == 500 and "broke down" in err.value.error


def test_non_streamed_request_stops_when_the_client_gives_up(fake):
    record = fake[2]
    body = {
        "model": CHAT,
        "messages": [{"role": "user", "content": "SLOW give-up"}],
        "stream": False,
        "options": {"num_predict": 2000},
    }  # 2000 tokens at 20 ms: 40 s if nobody stops it
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(fake[0] + "/api/chat", json=body, timeout=0.5)
    assert wait_until(lambda: record.running == 0 and chat_lock(fake).waiting == 0, 3), "generation kept running"
    made = record.tokens
    time.sleep(0.2)
    assert record.tokens == made


def test_hang_up_mid_stream_stops_generation(fake):
    record = fake[2]
    body = {"model": CHAT, "messages": [{"role": "user", "content": "SLOW hang-up"}], "options": {"num_predict": 2000}}
    with httpx.stream("POST", fake[0] + "/api/chat", json=body, timeout=10) as r:
        lines = r.iter_lines()
        first = [json.loads(next(lines)) for _ in range(3)]
    assert all(not x["done"] for x in first)
    assert wait_until(lambda: record.running == 0 and chat_lock(fake).waiting == 0, 3), "generation kept running"


def ask_in_thread(url: str, content: str, results: dict, timeout: float = 30) -> threading.Thread:
    def run() -> None:
        try:
            results[content] = httpx.post(
                url + "/api/chat",
                timeout=timeout,
                json={
                    "model": CHAT,
                    "messages": [{"role": "user", "content": content}],
                    "stream": False,
                    "options": {"num_predict": 3},
                },
            ).status_code
        except httpx.HTTPError as exc:
            results[content] = type(exc).__name__

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_queue_serves_requests_in_arrival_order(fake):
    record, lock = fake[2], chat_lock(fake)
    blocker = {"model": CHAT, "messages": [{"role": "user", "content": "GATE blocker"}], "options": {"num_predict": 3}}
    results: dict = {}
    record.gate.clear()
    with httpx.stream("POST", fake[0] + "/api/chat", json=blocker, timeout=30) as r:
        stream = r.iter_lines()
        next(stream)  # the blocker holds the model now
        start = len(record.served)
        threads = []
        for i in range(6):
            threads.append(ask_in_thread(fake[0], f"queued {i}", results))
            assert wait_until(lambda n=i: lock.waiting == n + 2), "request did not join the queue"
        record.gate.set()
        lines = [json.loads(x) for x in stream if x]
    for t in threads:
        t.join(30)
    assert lines[-1]["done"] and results == {f"queued {i}": 200 for i in range(6)}
    assert record.served[start:] == [f"user: queued {i}" for i in range(6)]


def test_a_queued_request_whose_client_gives_up_leaves_the_queue(fake):
    record, lock = fake[2], chat_lock(fake)
    blocker = {
        "model": CHAT,
        "messages": [{"role": "user", "content": "GATE blocker 2"}],
        "options": {"num_predict": 3},
    }
    results: dict = {}
    record.gate.clear()
    with httpx.stream("POST", fake[0] + "/api/chat", json=blocker, timeout=30) as r:
        next(r.iter_lines())
        ask_in_thread(fake[0], "impatient", results, timeout=0.3).join(5)
        assert results == {"impatient": "ReadTimeout"}
        assert wait_until(lambda: lock.waiting == 1, 2), "the abandoned request stayed in the queue"
        record.gate.set()
    assert wait_until(lambda: lock.waiting == 0, 5)
    assert "user: impatient" not in record.served


# ---- HTTP framing ---------------------------------------------------------------------------------------


def raw_exchange(url: str, data: bytes, wait: float = 5.0) -> bytes:
    """Send bytes on a fresh connection; everything the server sends until it closes (or `wait` passes)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
    return out


def test_malformed_content_length_is_400(fake):
    out = raw_exchange(fake[0], b"POST /api/show HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}")
    assert out.startswith(b"HTTP/1.1 400") and b'"error"' in out


def test_chunked_request_body_is_read(fake):
    payload = json.dumps({"model": CHAT}).encode()
    r = httpx.post(fake[0] + "/api/show", content=iter([payload[:5], payload[5:]]))  # an iterator: chunked
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert r.status_code == 200 and r.json()["details"]["format"] == "gguf"


@pytest.mark.parametrize(
    "partial",
    [
        b"POST /api/chat HTTP/1.1\r\nHost: x\r\n",
        b'POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"model"',
    ],
)
def test_half_sent_request_times_out(fake, partial):
    started = time.monotonic()
    out = raw_exchange(fake[0], partial, wait=REQUEST_TIMEOUT_S + 4)
    assert time.monotonic() - started < REQUEST_TIMEOUT_S + 3, "the server kept waiting for the rest"
    assert out.startswith(b"HTTP/1.1 408") and b'"error"' in out


@pytest.mark.parametrize("call", ["copy", "create", "push", "delete"])
def test_unsupported_endpoint_is_json_404_and_the_connection_stays_usable(api, call):
    calls = {
        "copy": lambda: api.copy(CHAT, "mine"),
        "create": lambda: api.create("mine", from_=CHAT),
        "push": lambda: api.push(CHAT),
        "delete": lambda: api.delete(CHAT),
    }
    with pytest.raises(ollama.ResponseError) as err:
        calls[call]()
    assert err.value.status_code == 404 and "WORKSHOP_OFFLINE is not set" in err.value.error
    assert {m.model for m in api.list().models} == {CHAT, EMBED}  # same kept-alive connection


def test_errors_leave_a_kept_alive_connection_usable(fake):
    with httpx.Client(base_url=fake[0]) as c:
        assert c.post("/api/copy", json={"source": CHAT, "destination": "x"}).status_code == 404
        assert c.post("/api/chat", content=b"{not json").status_code == 400
        assert c.get("/api/chat").status_code == 405
        assert c.post("/api/nothing", json={"x": 1}).status_code == 404
        r = c.get("/api/tags")
        assert r.status_code == 200 and len(r.json()["models"]) == 2


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/api/chat", 405),
        ("POST", "/api/tags", 405),
        ("PUT", "/api/embed", 405),
        ("DELETE", "/api/delete", 404),
        ("POST", "/api/nothing", 404),
        ("POST", "/v1/completions", 404),
    ],
)
def test_status_codes_are_ollamas_and_bodies_are_json(fake, method, path, status):
    r = httpx.request(method, fake[0] + path, json={"model": CHAT})
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/json") and r.json()["error"]


# ---- request validation, as Ollama's API reference has it --------------------------------------------


@pytest.mark.parametrize(
    "body, needle",
    [
        (
            {"model": CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
            "must be a string",
        ),
        ({"model": CHAT, "messages": USER, "stream": "false"}, "'stream' must be true or false"),
        ({"model": CHAT, "messages": USER, "options": {"temperature": "hot"}}, "temperature"),
        ({"model": CHAT, "messages": USER, "format": "xml"}, "format"),
        ({"model": CHAT, "messages": USER, "think": True}, "does not support thinking"),
        ({"model": CHAT, "messages": USER, "tools": [{"type": "function"}]}, "tools[0] must be"),
        (
            {"model": CHAT, "messages": USER, "tools": [{"function": {"name": "f", "parameters": "x"}}]},
            "parameters must be",
        ),
        ({"model": CHAT, "messages": [{"role": "assistant", "tool_calls": [{"name": "f"}]}]}, "tool_calls must be"),
        ({"model": CHAT, "messages": USER, "keep_alive": "soon"}, "keep_alive"),
        ({"model": CHAT, "messages": "hi"}, "messages"),
        ({"model": 5, "messages": USER}, "model is required"),
    ],
)
def test_chat_rejects_what_ollama_rejects(fake, body, needle):
    r = httpx.post(fake[0] + "/api/chat", json=body)
    assert r.status_code == 400 and needle in r.json()["error"]


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"model": CHAT, "prompt": "hi", "raw": True, "system": "be brief"}, "raw mode does not support"),
        ({"model": CHAT, "prompt": "def f(", "suffix": "return 1"}, "does not support insert"),
        ({"model": CHAT, "prompt": "hi", "stream": "false"}, "'stream' must be true or false"),
        ({"model": CHAT, "prompt": ["hi"]}, "'prompt' must be a string"),
    ],
)
def test_generate_rejects_what_ollama_rejects(fake, body, needle):
    r = httpx.post(fake[0] + "/api/generate", json=body)
    assert r.status_code == 400 and needle in r.json()["error"]


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate", "/api/embed", "/api/show"])
def test_missing_body_is_400(fake, path):
    r = httpx.post(fake[0] + path)
    assert r.status_code == 400 and r.json()["error"] == "missing request body"


def test_unknown_model_404_says_how_to_use_a_real_ollama(api):
    with pytest.raises(ollama.ResponseError) as err:
        api.chat(model="llama3.2:3b", messages=USER)
    message = err.value.error
    assert err.value.status_code == 404 and CHAT in message and "ollama pull llama3.2:3b" in message
    assert "unset WORKSHOP_OFFLINE" not in message and "make sure WORKSHOP_OFFLINE is not set" in message


def test_keep_alive_zero_unloads(fake, api):
    chat_model = fake[1].registry.models[CHAT]
    api.chat(model=CHAT, messages=USER, options={"num_predict": 2})
    assert CHAT in {m.model for m in api.ps().models}
    r = api.chat(model=CHAT, messages=[], keep_alive=0)
    assert r.done and r.done_reason == "unload" and chat_model.instance is None
    assert CHAT not in {m.model for m in api.ps().models}
    assert api.generate(model=CHAT, prompt="").done_reason == "load"  # loads it again
    assert CHAT in {m.model for m in api.ps().models}
    r = api.generate(model=CHAT, prompt="hi", keep_alive="0s", options={"num_predict": 2})
    assert r.response == "w0 w1 " and r.done_reason == "length"  # answered, then unloaded
    assert CHAT not in {m.model for m in api.ps().models}
    assert api.embed(model=EMBED, input="x", keep_alive=0).embeddings
    assert EMBED not in {m.model for m in api.ps().models}


def test_chat_streamed_and_whole_agree(api):
    whole = api.chat(model=CHAT, messages=USER, options={"num_predict": 4})
    parts = list(api.chat(model=CHAT, messages=USER, stream=True, options={"num_predict": 4}))
    assert whole.message.content == "".join(p.message.content for p in parts) == "w0 w1 w2 w3 "
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    assert whole.eval_count == parts[-1].eval_count == 4 and whole.prompt_eval_count == 2


def test_embed_and_legacy_embeddings(api):
    r = api.embed(model=EMBED, input=["a", "b c"])
    assert np.array(r.embeddings).shape == (2, 384) and r.prompt_eval_count == 7
    assert api.embed(model=EMBED, input=[]).embeddings == []
    assert len(api.embeddings(model=EMBED, prompt="hello").embedding) == 384
    with pytest.raises(ollama.ResponseError) as err:
        api.embed(model=EMBED, input="x", dimensions=12)
    assert err.value.status_code == 400
