"""Unit tests of configuration and the stand-in's small pure parts."""

from __future__ import annotations

import pytest

from helpers.config import normalize_host, read_settings
from helpers.offline.models import SamplingOptions, StopScanner


@pytest.mark.parametrize("raw, url", [
    (None, "http://127.0.0.1:11434"), ("", "http://127.0.0.1:11434"), ("0.0.0.0", "http://127.0.0.1:11434"),
    ("gpu-box:8080", "http://gpu-box:8080"), ("https://ollama.example:443/", "https://ollama.example:443"),
    ("http://10.0.0.5", "http://10.0.0.5:11434"),
])
def test_normalize_host(raw, url):
    assert normalize_host(raw) == url


def test_settings_read_from_environment(monkeypatch, tmp_path):
    for key in ("OLLAMA_HOST", "CHAT_MODEL", "EMBED_MODEL", "QDRANT_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WORKSHOP_OFFLINE", "yes")
    monkeypatch.setenv("WORKSHOP_STATE_DIR", str(tmp_path))
    s = read_settings()
    assert s.force_offline and s.chat_model is None and s.embed_model == "all-minilm" and s.qdrant_url is None
    assert s.state_dir == tmp_path
    monkeypatch.setenv("QDRANT_URL", "http://localhost:6333")
    monkeypatch.setenv("WORKSHOP_OFFLINE", "0")
    s = read_settings()
    assert s.qdrant_url == "http://localhost:6333" and not s.force_offline


def feed_all(scanner: StopScanner, pieces: list[str]) -> str:
    return "".join(scanner.feed(p) for p in pieces) + scanner.flush()


def test_stop_scanner_cuts_at_stop_split_across_pieces():
    assert feed_all(StopScanner(["###"]), ["abc #", "#", "# def"]) == "abc "


def test_stop_scanner_releases_false_alarm():
    assert feed_all(StopScanner(["###"]), ["a #", "# b"]) == "a ## b"


def test_stop_scanner_without_stops_passes_through():
    assert feed_all(StopScanner([]), ["x", "y"]) == "xy"


def test_stop_scanner_earliest_of_several_stops():
    s = StopScanner(["END", "\n\n"])
    assert feed_all(s, ["one\n\ntwo END"]) == "one" and s.stopped


def test_sampling_options_defaults_and_values():
    o = SamplingOptions.from_request(None)
    assert o.temperature == 0.8 and o.seed is None and o.stop == []
    o = SamplingOptions.from_request({"temperature": 0, "seed": 7, "num_predict": 3, "stop": "x", "num_ctx": 2048})
    assert (o.temperature, o.seed, o.num_predict, o.stop, o.num_ctx) == (0.0, 7, 3, ["x"], 2048)


@pytest.mark.parametrize("bad", [{"temperature": "hot"}, {"seed": True}, {"stop": [1]}, {"num_ctx": 8}, []])
def test_sampling_options_reject_bad_values(bad):
    with pytest.raises(ValueError):
        SamplingOptions.from_request(bad)
