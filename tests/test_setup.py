"""The notebooks' setup call: backend discovery, model checks and clear errors."""

from __future__ import annotations

import pytest

from helpers.setup import SetupError, setup
from tests.conftest import free_port, needs_offline

pytestmark = pytest.mark.slow  # setup() starts (or reuses) the real stand-in


@needs_offline
def test_setup_uses_stand_in_when_forced(monkeypatch, capsys):
    monkeypatch.setenv("WORKSHOP_OFFLINE", "1")
    monkeypatch.delenv("CHAT_MODEL", raising=False)
    monkeypatch.delenv("QDRANT_URL", raising=False)
    cfg = setup()
    out = capsys.readouterr().out
    assert cfg.backend == "stand-in" and cfg.offline and cfg.chat_model == "smollm2:135m"
    assert cfg.embed_dim == 384 and cfg.qdrant_url is None
    for word in ("LLM backend", "chat model", "embedding model", "vector store", "versions"):
        assert word in out
    assert "at most 400 tokens unless num_predict is set" in out  # the stand-in's default cap, said out loud


@needs_offline
def test_setup_missing_model_says_what_to_do(monkeypatch):
    monkeypatch.setenv("WORKSHOP_OFFLINE", "1")
    monkeypatch.setenv("CHAT_MODEL", "llama3.2:3b")
    with pytest.raises(SetupError, match="does not serve llama3.2:3b"):
        setup(quiet=True)


@needs_offline
def test_setup_unreachable_qdrant_says_what_to_do(monkeypatch):
    monkeypatch.setenv("WORKSHOP_OFFLINE", "1")
    monkeypatch.delenv("CHAT_MODEL", raising=False)
    monkeypatch.setenv("QDRANT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(SetupError, match="unset QDRANT_URL"):
        setup(quiet=True)


def test_missing_model_on_ollama_prints_exact_pull(client):
    from helpers.setup import check_models

    with pytest.raises(SetupError) as err:
        check_models(client, "ollama", ["llama3.2:3b", "all-minilm"])
    assert "ollama pull llama3.2:3b" in str(err.value) and "ollama pull all-minilm" not in str(err.value)
