"""The served app over real HTTP: uvicorn on 127.0.0.1, the official ollama client on the offline stand-in.

The fast tests need no model: the app points at a port where nothing listens (a real refused connection), so
bad input and a down backend are checked in seconds. The slow ones stream real answers from the stand-in.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
from qdrant_client import QdrantClient, models

from app.service import MAX_QUESTION_CHARS, create_app, sse
from helpers.history import HistoryStore
from infra.background import BackgroundServer
from tests.conftest import free_port
from tests.support.served import ask, chat_queue, parse_sse, stand_in_config

QUESTION = "Where is the muster point when the fire alarm sounds?"
FAST_OPTIONS = {"num_predict": 24}  # the checks are on structure: a few tokens are enough


@pytest.fixture(scope="module")
def down(tmp_path_factory):
    """The app with its LLM backend down (nothing listens on its port) and an empty embedded Qdrant."""
    history = HistoryStore(tmp_path_factory.mktemp("down") / "history.sqlite")
    app = create_app(
        stand_in_config(f"http://127.0.0.1:{free_port()}"), qdrant=QdrantClient(":memory:"), history=history
    )
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield http, history


@pytest.fixture(scope="module")
def served_app(stand_in, served_qdrant, tmp_path_factory):
    """The app on the stand-in, handbook indexed once, served over real HTTP: (app, http client, history store)."""
    history = HistoryStore(tmp_path_factory.mktemp("served") / "history.sqlite")
    app = create_app(stand_in_config(stand_in[0]), qdrant=served_qdrant, history=history, options=FAST_OPTIONS)
    app.state.service.k = 2  # shorter prompts: the shared 2-core machine reads them faster
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=600) as http:
        yield app, http, history


@pytest.fixture
def served(served_app, stand_in):
    """(http client, history store, stand-in server) for the served app."""
    _app, http, history = served_app
    return http, history, stand_in[1]


def test_sse_frames_are_event_data_blank_line():
    frame = sse("token", {"text": "a\nb"})
    assert frame == 'event: token\ndata: {"text": "a\\nb"}\n\n'
    assert list(parse_sse(iter(frame.split("\n")[:-1]))) == [("token", {"text": "a\nb"})]


@pytest.mark.parametrize("chat_id", ["bad id", "x" * 65, "semi;colon", "dot.dot"])
def test_malformed_chat_id_is_400(down, chat_id):
    http, _ = down
    for response in (
        http.post(f"/chat/{chat_id}", json={"question": QUESTION}),
        http.get(f"/chats/{chat_id}"),
        http.delete(f"/chats/{chat_id}"),
    ):
        assert response.status_code == 400, response.text
        assert "malformed chat id" in response.json()["detail"] and "letters, digits" in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"question": ""},
        {"question": "   "},
        {"question": "x" * (MAX_QUESTION_CHARS + 1)},
        {},
        {"q": "hi"},
        {"question": 42},
    ],
)
def test_empty_missing_or_over_long_question_is_422_with_a_message(down, body):
    http, history = down
    response = http.post("/chat/c1", json=body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "question" in detail and f"1 to {MAX_QUESTION_CHARS} characters" in detail
    assert history.rows("c1") == []


def test_backend_down_is_503_naming_the_fix(down):
    http, history = down
    response = http.post("/chat/c2", json={"question": QUESTION})
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert "does not answer" in detail and "ollama serve" in detail and "infra.standin start" in detail
    assert history.rows("c2") == []  # nothing was half-written


def test_healthz_names_each_failing_part(down):
    http, _ = down
    response = http.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail" and set(body["parts"]) == {"documents", "llm", "embedding", "qdrant"}
    assert body["parts"]["llm"].startswith("fail: no LLM backend answers") and "infra.standin" in body["parts"]["llm"]
    assert body["parts"]["embedding"].startswith("fail:") and body["parts"]["qdrant"].startswith("fail:")


def test_page_and_static_files_are_served(down):
    http, _ = down
    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="static/app.js"' in page.text and "http" not in page.text.split("<body>")[1].split("</body>")[0]
    script = http.get("/static/app.js")
    assert script.status_code == 200 and "getReader" in script.text and "localStorage" in script.text


def test_metrics_count_requests_by_status(down):
    http, _ = down
    assert http.post("/chat/bad id", json={"question": QUESTION}).status_code == 400
    assert http.post("/chat/c9", json={}).status_code == 422  # its own requests: passes alone or in any order
    text = http.get("/metrics").text
    assert 'http_requests_total{method="POST",route="/chat/{chat_id}",status="400"}' in text
    assert 'http_requests_total{method="POST",route="/chat/{chat_id}",status="422"}' in text


@pytest.mark.slow
def test_chat_streams_tokens_then_sources_then_done_and_stores_the_turn(served):
    http, history, _ = served
    events = ask(http, "turns-1", QUESTION)
    names = [name for name, _ in events]
    assert names[0] == "token" and names[-2:] == ["sources", "done"] and set(names[:-2]) == {"token"}
    answer = "".join(data["text"] for name, data in events if name == "token")
    sources, done = events[-2][1]["sources"], events[-1][1]
    assert [s["n"] for s in sources] == [1, 2] and all(s["chunk_id"] and isinstance(s["cited"], bool) for s in sources)
    assert any(s["doc_id"] in {"emergency-response-plan", "field-safety-handbook"} for s in sources)
    assert 0 < done["completion_tokens"] <= FAST_OPTIONS["num_predict"] and done["prompt_tokens"] > 50
    assert 0 < done["ttft_s"] <= done["total_s"]
    stored = http.get("/chats/turns-1").json()
    assert stored["messages"] == [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": answer.strip()},
    ]
    assert stored["failed"] == [] and history.messages("turns-1") == stored["messages"]


@pytest.mark.slow
def test_follow_up_uses_the_history_then_delete_forgets_it(served):
    http, _, _ = served
    ask(http, "turns-2", "Which course do I need before I can drive a snowmobile?")
    events = ask(http, "turns-2", "How long does it take?")
    assert events[-1][0] == "done" and events[-2][1]["query"] != "How long does it take?"  # rewritten
    assert [m["role"] for m in http.get("/chats/turns-2").json()["messages"]] == ["user", "assistant"] * 2
    assert http.delete("/chats/turns-2").json() == {"chat_id": "turns-2", "deleted": 4}
    assert http.get("/chats/turns-2").json()["messages"] == []


@pytest.mark.slow
def test_healthz_ok_and_metrics_have_lesson_08_counters(served):
    http, _, _ = served
    ask(http, "turns-3", "Who leads the search and rescue team?")
    health = http.get("/healthz")
    assert health.status_code == 200 and health.json()["parts"] == {
        "documents": "ok",
        "llm": "ok",
        "embedding": "ok",
        "qdrant": "ok",
    }
    text = http.get("/metrics").text
    assert 'rag_tokens_total{direction="completion",model="smollm2:135m",stage="generate"}' in text
    assert 'rag_stage_seconds_count{model="all-minilm",stage="retrieve"}' in text
    assert "rag_time_to_first_token_seconds_bucket" in text and 'rag_chat_turns_total{outcome="ok"}' in text
    assert 'http_requests_total{method="POST",route="/chat/{chat_id}",status="200"}' in text


@pytest.mark.slow
def test_client_hang_up_stops_generation_and_records_a_failed_turn(stand_in, served_qdrant, tmp_path):
    url, server = stand_in
    history = HistoryStore(tmp_path / "history.sqlite")
    app = create_app(stand_in_config(url), qdrant=served_qdrant, history=history, options={"num_predict": 3000})
    app.state.service.k = 1
    with BackgroundServer(app) as served_app, httpx.Client(base_url=served_app.url, timeout=600) as http:
        with http.stream("POST", "/chat/hang-up", json={"question": QUESTION}) as response:
            first = next(parse_sse(response.iter_lines()))
            assert first[0] == "token" and chat_queue(server) == 1  # generating
        deadline = time.monotonic() + 30  # 3000 tokens would hold the model for minutes
        while chat_queue(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert chat_queue(server) == 0, "generation kept running after the client hung up"
        deadline = time.monotonic() + 10
        while not history.rows("hang-up") and time.monotonic() < deadline:
            time.sleep(0.1)
        stored = http.get("/chats/hang-up").json()
        assert stored["messages"] == []  # nothing half-written in the conversation
        assert [(r["role"], r["status"]) for r in stored["failed"]] == [("user", "failed"), ("assistant", "failed")]
        assert "disconnected" in stored["failed"][1]["content"]
        assert 'rag_chat_turns_total{outcome="disconnected"} 1.0' in http.get("/metrics").text


class CuttingProxy:
    """A TCP proxy to the stand-in that cuts every /api/chat response after `cut` bytes: a real mid-stream failure."""

    def __init__(self, upstream: tuple[str, int], cut: int) -> None:
        self.upstream, self.cut = upstream, cut
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, socket.create_connection(self.upstream) as up:
            request = conn.recv(65536)
            limit = self.cut if request.startswith(b"POST /api/chat") else None
            up.sendall(request)
            threading.Thread(target=self._pump, args=(conn, up), daemon=True).start()
            sent = 0
            while data := up.recv(4096):
                if limit is not None and sent + len(data) > limit:
                    conn.sendall(data[: limit - sent])
                    for s in (conn, up):  # shutdown, not just close: it wakes the pump thread and sends the FIN
                        s.shutdown(socket.SHUT_RDWR)
                    return
                conn.sendall(data)
                sent += len(data)

    @staticmethod
    def _pump(conn: socket.socket, up: socket.socket) -> None:
        try:
            while data := conn.recv(65536):
                up.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


@pytest.mark.slow
def test_failure_mid_stream_sends_an_error_event_and_records_a_failed_turn(stand_in, served_qdrant, tmp_path):
    host, port = stand_in[0].removeprefix("http://").split(":")
    proxy = CuttingProxy((host, int(port)), cut=1500)  # the headers and a few NDJSON lines, then the cut
    history = HistoryStore(tmp_path / "history.sqlite")
    app = create_app(stand_in_config(proxy.url), qdrant=served_qdrant, history=history, options={"num_predict": 200})
    app.state.service.k = 1
    try:
        with BackgroundServer(app) as served_app, httpx.Client(base_url=served_app.url, timeout=600) as http:
            events = ask(http, "cut", QUESTION)
            names = [name for name, _ in events]
            assert names[-1] == "error" and "done" not in names and "token" in names
            assert "recorded as failed" in events[-1][1]["message"]
            stored = http.get("/chats/cut").json()
            assert stored["messages"] == [] and [r["status"] for r in stored["failed"]] == ["failed", "failed"]
            assert stored["failed"][1]["content"].startswith("generation failed")
    finally:
        proxy.close()


@pytest.mark.slow
def test_healthz_fails_when_the_collection_holds_vectors_of_another_size(served_app):
    app, http, _history = served_app
    assert http.get("/healthz").json()["parts"]["qdrant"] == "ok"
    svc = app.state.service
    svc.qdrant.create_collection(
        "old-model", vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE)
    )
    svc.qdrant.upsert("old-model", [models.PointStruct(id=n, vector=[0.1] * 8, payload={}) for n in range(5)])
    svc.collection, indexed = "old-model", svc.collection  # what an app finds on a Qdrant server indexed elsewhere
    try:
        response = http.get("/healthz")
    finally:
        svc.collection = indexed
    assert response.status_code == 503
    assert "8-d" in response.json()["parts"]["qdrant"] and "384-d" in response.json()["parts"]["qdrant"]


@pytest.mark.slow
def test_time_to_first_token_counts_from_the_request(served):
    http, _history, _server = served
    start = time.perf_counter()
    seen_first = None
    with http.stream("POST", "/chat/ttft", json={"question": QUESTION}) as response:
        assert response.status_code == 200
        events = []
        for event, data in parse_sse(response.iter_lines()):
            if event == "token" and seen_first is None:
                seen_first = time.perf_counter() - start
            events.append((event, data))
    done = dict(events)["done"]
    assert seen_first is not None and done["ttft_s"] > 0.5 * seen_first, (done["ttft_s"], seen_first)
    assert done["ttft_s"] <= seen_first + 0.05, "the server's clock cannot start before the request"


def test_python_m_app_prints_its_url_only_once_the_app_answers(capsys):
    import contextlib

    import uvicorn
    from fastapi import FastAPI

    from app.__main__ import announce_when_ready

    @contextlib.asynccontextmanager
    async def slow_start(_app):  # start-up indexing, in short
        time.sleep(1.5)
        yield

    app = FastAPI(lifespan=slow_start)
    app.get("/healthz")(lambda: {"status": "ok"})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    start = time.perf_counter()
    thread.start()
    try:
        announce_when_ready(server, f"http://127.0.0.1:{port}/", poll_s=0.05)
        waited = time.perf_counter() - start
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200, "the printed URL answers"
    finally:
        server.should_exit = True
        thread.join(10)
    assert waited >= 1.5 and f"serving the chat page on http://127.0.0.1:{port}/" in capsys.readouterr().out
