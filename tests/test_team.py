"""Lesson 18, fast tier (no model): the caches, the limits' arithmetic, the key store and its CLI, and 401/403/429 over
real HTTP from an app whose LLM backend is down (nothing listens on its port: keys and limits answer before it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
from fastapi import HTTPException
from prometheus_client import CollectorRegistry
from qdrant_client import QdrantClient

from app.keys import KeyStore, hash_key
from app.limits import Limits
from app.service import create_app
from helpers.cache import (
    AnswerCache,
    CachedAnswer,
    EmbeddingCache,
    LruCache,
    answer_key,
    repeatable,
    semantic_cache_errors,
)
from helpers.config import SettingsError, read_settings
from helpers.history import HistoryStore
from infra.background import BackgroundServer
from tests.conftest import free_port
from tests.support.served import stand_in_config

KEY_ARGS = {"question": "Where is the muster point?", "chunks": [("c1", "MP-1 by the flagpole")], "past": []}


def test_answer_key_changes_with_everything_that_changes_the_answer():
    base = answer_key(**KEY_ARGS, model="m", options={"temperature": 0})
    assert base == answer_key(**KEY_ARGS, model="m", options={"temperature": 0})
    assert base != answer_key(**{**KEY_ARGS, "chunks": [("c1", "MP-2 by the flagpole")]}, model="m", options={})
    assert base != answer_key(**{**KEY_ARGS, "question": "where is the muster point?"}, model="m", options={})
    assert base != answer_key(**{**KEY_ARGS, "past": [{"role": "user", "content": "hi"}]}, model="m", options={})
    assert base != answer_key(**KEY_ARGS, model="other", options={"temperature": 0})
    assert base != answer_key(**KEY_ARGS, model="m", options={"temperature": 0, "num_predict": 5})


def test_answer_cache_only_for_repeatable_options_and_empty_after_invalidate():
    cache = AnswerCache(size=4)
    assert repeatable({"temperature": 0}) and repeatable({"temperature": 0.8, "seed": 1})
    assert not repeatable({"temperature": 0.8})
    cache.store("k", {"temperature": 0.8}, CachedAnswer("a"))
    assert cache.lookup("k", {"temperature": 0}) is None and len(cache) == 0
    cache.store("k", {"temperature": 0}, CachedAnswer("a"))
    assert cache.lookup("k", {"temperature": 0}).text == "a"
    assert cache.lookup("k", {"temperature": 0.8}) is None, "a sampled answer is never served from the cache"
    assert cache.invalidate() == 1 and cache.lookup("k", {"temperature": 0}) is None


def test_lru_cache_is_bounded_and_counts():
    cache = LruCache(size=2)
    for k in "abc":
        cache.put(k, k)
    assert cache.get("a") is None and cache.get("c") == "c"
    assert cache.stats() == {"hits": 1, "misses": 1, "entries": 2, "hit_rate": 0.5}
    with pytest.raises(ValueError, match="at least 1"):
        LruCache(size=0)


def test_embedding_cache_calls_the_embedder_once_per_text():
    calls = []

    class Embedder:  # a fake embedder: this test is about counting calls, not about vectors
        def embed(self, *, model, input):
            calls.append(input)
            return type("R", (), {"embeddings": [[1.0, float(len(input))]]})()

    cache = EmbeddingCache()
    first = cache.embed(Embedder(), "hello", model="m")
    assert cache.embed(Embedder(), "hello", model="m") == first and calls == ["hello"]
    cache.embed(Embedder(), "hello", model="other")
    assert calls == ["hello", "hello"]


def test_semantic_cache_errors_counts_another_questions_answer_as_wrong():
    vectors = [[1.0, 0.0], [0.99, 0.1], [0.0, 1.0]]  # 0 and 1 are near-duplicates with different answers
    result = semantic_cache_errors(vectors, ["12 m/s", "15 m/s", "MP-1"], threshold=0.9)
    assert result["hits"] == 2 and result["wrong"] == 2 and result["questions"] == 3
    assert semantic_cache_errors(vectors, ["12 m/s", "12 m/s", "MP-1"], threshold=0.9)["wrong"] == 0
    assert semantic_cache_errors(vectors, ["a", "b", "c"], threshold=0.999)["hits"] == 0


def test_token_budget_warns_past_80_percent_then_429_with_retry_after():
    now = [1000.0]
    limits = Limits(CollectorRegistry(), token_budget=100, window_s=60, clock=lambda: now[0])
    limits.check("k")
    limits.charge("k", 70)
    assert limits.warning_headers("k") == {} and limits.budget_event("k") is None
    limits.charge("k", 15)
    assert "85%" in limits.warning_headers("k")["X-Budget-Warning"] and limits.budget_event("k")["used"] == 85
    now[0] += 30
    limits.charge("k", 20)
    with pytest.raises(HTTPException) as refused:
        limits.check("k")
    assert refused.value.status_code == 429 and refused.value.headers["Retry-After"] == "30"
    limits.check("other")  # budgets are per key
    now[0] += 31  # the first two charges left the window
    limits.check("k")


def test_queue_answers_503_at_once_when_full():
    limits = Limits(CollectorRegistry(), queue_max=1)
    limits.admit()
    with pytest.raises(HTTPException) as full:
        limits.admit()
    assert full.value.status_code == 503 and int(full.value.headers["Retry-After"]) >= 1
    limits.release(seconds=3.2)
    limits.admit()


def test_key_store_keeps_only_hashes(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    key = store.add("alice")
    text = (tmp_path / "keys.json").read_text()
    assert key not in text and hash_key(key) in text
    assert store.owner(key) == "alice" and store.owner(key + "x") is None
    with pytest.raises(ValueError, match="letters, digits"):
        store.add("al ice")


def test_keys_cli_prints_a_new_key_once(tmp_path):
    env = {**os.environ, "WORKSHOP_STATE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "app.keys", "add", "bob"], capture_output=True, text=True, env=env, check=True
    )
    key = done.stdout.strip()
    assert key.startswith("rag-") and "shown once" in done.stderr
    assert json.loads((tmp_path / "api-keys.json").read_text()) == {"bob": hash_key(key)}


def test_a_bad_limit_setting_says_what_to_set(monkeypatch):
    monkeypatch.setenv("WORKSHOP_QUEUE_MAX", "many")
    with pytest.raises(SettingsError, match="WORKSHOP_QUEUE_MAX=32"):
        read_settings()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """The app with API keys on and 3 requests per minute, its LLM backend down: (http client, a valid key)."""
    tmp = tmp_path_factory.mktemp("keyed")
    keys = KeyStore(tmp / "keys.json")
    key = keys.add("alice")
    app = create_app(
        stand_in_config(f"http://127.0.0.1:{free_port()}"),
        qdrant=QdrantClient(":memory:"),
        history=HistoryStore(tmp / "history.sqlite"),
        tuning={"keys": keys},
    )
    app.state.service.limits.rate_limit = 3
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield http, key


def test_no_key_is_401_with_www_authenticate_and_a_wrong_key_403(keyed):
    http, key = keyed
    missing = http.post("/chat/c1", json={"question": "hi"})
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert "python -m app.keys add" in missing.json()["detail"]
    wrong = http.get("/chats/c1", headers={"Authorization": f"Bearer {key}x"})
    assert wrong.status_code == 403 and "not known" in wrong.json()["detail"]
    assert http.get("/chats/c1", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert http.get("/healthz").status_code == 503, "health and metrics need no key"
    metrics = http.get("/metrics").text
    assert (
        'rag_refused_total{reason="no_key"} 1.0' in metrics and 'rag_refused_total{reason="wrong_key"} 1.0' in metrics
    )


def test_past_the_rate_limit_429_with_retry_after(keyed):
    http, key = keyed
    auth = {"Authorization": f"Bearer {key}"}
    statuses = [http.post("/chat/c2", json={"question": "hi"}, headers=auth).status_code for _ in range(4)]
    assert statuses == [503, 503, 503, 429], "the backend is down (503) until the limit refuses before it"
    refused = http.post("/chat/c2", json={"question": "hi"}, headers=auth)
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "requests in the last minute" in refused.json()["detail"]
    assert 'rag_refused_total{reason="rate"} 2.0' in http.get("/metrics").text
