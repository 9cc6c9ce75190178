"""Chat backends from configuration and the fallback chain (helpers/providers.py, lesson 19).

Fast: parsing CHAT_BACKENDS and the option mapping. Slow: the served app with a dead first backend and the stand-in's
OpenAI-compatible /v1 second, over real HTTP: the first one's breaker opens, the second answers, `done` names it.
"""

from __future__ import annotations

import httpx
import pytest

from helpers.providers import BackendsError, BackendSpec, openai_options, parse_backends
from tests.conftest import free_port


def test_chat_backends_are_read_in_order_with_their_models():
    specs = parse_backends(" ollama=http://127.0.0.1:11434 , openai=http://127.0.0.1:11435/v1/#smollm2:135m ")
    assert specs == [
        BackendSpec("ollama", "http://127.0.0.1:11434"),
        BackendSpec("openai", "http://127.0.0.1:11435/v1", "smollm2:135m"),
    ]
    assert [s.name for s in specs] == ["ollama@127.0.0.1:11434", "openai@127.0.0.1:11435"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [("", "names no backend"), ("vllm=http://x:1", "kind must be ollama or openai"), ("ollama=x:1", "not an http")],
)
def test_a_bad_chat_backends_value_says_what_to_set(text, problem):
    with pytest.raises(BackendsError, match=f"{problem}.*Set CHAT_BACKENDS"):
        parse_backends(text)


def test_ollama_options_become_openai_arguments():
    options = {"num_predict": 64, "temperature": 0, "seed": 7, "num_ctx": 4096, "stop": ["\n"]}
    assert openai_options(options) == {"max_tokens": 64, "temperature": 0, "seed": 7, "stop": ["\n"]}


@pytest.mark.slow
def test_the_second_backend_answers_while_the_first_ones_breaker_is_open(stand_in, served_qdrant, tmp_path):
    from app.service import create_app
    from helpers.config import STAND_IN_CHAT_MODEL
    from helpers.history import HistoryStore
    from infra.background import BackgroundServer
    from tests.support.served import ask, stand_in_config

    url = stand_in[0]
    dead = BackendSpec("ollama", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    second = BackendSpec("openai", f"{url}/v1", STAND_IN_CHAT_MODEL)
    app = create_app(
        stand_in_config(url),
        qdrant=served_qdrant,
        history=HistoryStore(tmp_path / "history.sqlite"),
        options={"num_predict": 16},
        guardrails=False,
        tuning={"backends": [dead, second], "attempts": 1, "breaker_failures": 1, "breaker_reset_s": 600},
    )
    svc = app.state.service
    svc.k = 1
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=600) as http:
        first = dict(ask(http, "fallback", "Who approves a field trip on the glacier?"))
        assert first["done"]["backend"] == second.name and first["done"]["model"] == STAND_IN_CHAT_MODEL
        assert first["done"]["completion_tokens"] > 0, "the OpenAI stream's usage is counted"
        assert svc.chain.backends[0].breaker.state == "open", "the connection refused opened the first breaker"
        later = dict(ask(http, "fallback", "What must a diver log before going under the sea ice?"))
        assert later["done"]["backend"] == second.name, "skipped at once while its breaker is open"
        health = http.get("/healthz").json()["backends"]
        assert health[dead.name]["breaker"] == "open" and health[second.name]["breaker"] == "closed"
        metrics = http.get("/metrics").text
        stored = http.get("/chats/fallback").json()
    assert f'rag_answers_total{{backend="{second.name}",model="{STAND_IN_CHAT_MODEL}"}} 2.0' in metrics
    assert f'rag_fallbacks_total{{backend="{dead.name}",kind="connection"}} 1.0' in metrics
    assert f'rag_fallbacks_total{{backend="{dead.name}",kind="circuit_open"}} 1.0' in metrics
    rows = svc.history.rows("fallback")
    assert [r["model"] for r in rows if r["role"] == "assistant"] == [f"{STAND_IN_CHAT_MODEL} ({second.name})"] * 2
    assert len(stored["messages"]) == 4
