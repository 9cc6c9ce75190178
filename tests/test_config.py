"""Unit tests of configuration and the stand-in's small pure parts."""

from __future__ import annotations

import ast
import doctest

import pytest

from helpers.config import normalize_host, read_settings
from infra.standin.models import SamplingOptions, StopScanner


def client_cases() -> list[tuple[str | None, str]]:
    """(input, expected) from the official client's own `_parse_host` docstring, so the two cannot drift apart."""
    from ollama._client import _parse_host

    cases = []
    for example in doctest.DocTestParser().get_examples(_parse_host.__doc__):
        call = ast.parse(example.source.strip(), mode="eval").body
        cases.append((ast.literal_eval(call.args[0]), ast.literal_eval(example.want.strip())))
    return cases


def test_normalize_host_follows_the_official_client():
    cases = client_cases()
    assert len(cases) >= 30 and ("https://example.com", "https://example.com:443") in cases
    for raw, url in cases:
        assert normalize_host(raw) == url, raw


@pytest.mark.parametrize(
    "raw, url",
    [
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:8080", "http://127.0.0.1:8080"),
        ("https://ollama.example/", "https://ollama.example:443"),
        ("http://10.0.0.5", "http://10.0.0.5:80"),
        ("gpu-box:8080/ollama/", "http://gpu-box:8080/ollama"),
        ("  http://h:1  ", "http://h:1"),
    ],
)
def test_normalize_host_workshop_cases(raw, url):
    assert normalize_host(raw) == url


def test_settings_read_from_environment(monkeypatch, tmp_path):
    for key in ("OLLAMA_HOST", "CHAT_MODEL", "EMBED_MODEL", "QDRANT_URL", "WORKSHOP_STAND_IN_PORT", "WORKSHOP_FAST"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WORKSHOP_OFFLINE", "yes")
    monkeypatch.setenv("WORKSHOP_STATE_DIR", str(tmp_path))
    s = read_settings()
    assert s.force_offline and not s.fast and s.chat_model is None and s.embed_model == "all-minilm"
    assert s.qdrant_url is None and s.stand_in_port == 11435 and s.ollama_host == "http://127.0.0.1:11434"
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box")  # converted, not read back: the client's rules apply
    monkeypatch.setenv("WORKSHOP_OFFLINE", "0")
    monkeypatch.setenv("WORKSHOP_FAST", "ON")
    monkeypatch.setenv("CHAT_MODEL", "")
    monkeypatch.setenv("WORKSHOP_STAND_IN_PORT", "11600")
    s = read_settings()
    assert s.ollama_host == "http://gpu-box:11434" and not s.force_offline and s.fast
    assert s.chat_model is None and s.stand_in_port == 11600


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


BAD_SETTINGS = [
    ("WORKSHOP_STAND_IN_PORT", "12x01", "not a port number"),
    ("WORKSHOP_STAND_IN_PORT", "70000", "from 1 to 65535"),
    ("WORKSHOP_FAST", "maybe", "WORKSHOP_FAST=1 (on) or WORKSHOP_FAST=0 (off)"),
    ("WORKSHOP_OFFLINE", "sure", "WORKSHOP_OFFLINE=1 (on)"),
    ("WORKSHOP_GUARDRAILS", "of", "WORKSHOP_GUARDRAILS=0 (off)"),
    ("OLLAMA_HOST", "http://gpu-box:eleven", "OLLAMA_HOST=127.0.0.1:11434"),
    ("HISTORY_URL", "mysql://db/history", "postgresql://"),
    ("HISTORY_URL", "history.sqlite", "sqlite:///"),
    ("HISTORY_TIMEOUT_S", "0", "HISTORY_TIMEOUT_S=5"),  # 0 was read as the default of 5 s, silently
    ("HISTORY_TIMEOUT_S", "-2", "a number of seconds of 0.001 or more"),
    ("HISTORY_TIMEOUT_S", "inf", "HISTORY_TIMEOUT_S=5"),
    ("HISTORY_TIMEOUT_S", "soon", "HISTORY_TIMEOUT_S=5"),
    ("HISTORY_TTL_DAYS", "-1", "a number of days of 0 or more"),
    ("WORKSHOP_BUDGET_WINDOW_S", "0", "WORKSHOP_BUDGET_WINDOW_S=3600"),  # a window of 0 s budgets nothing
    ("WORKSHOP_QUEUE_MAX", "-1", "a whole number of 0 or more"),
    ("WORKSHOP_RATE_LIMIT", "2.5", "WORKSHOP_RATE_LIMIT=0"),
]


@pytest.mark.parametrize("name, value, fix", BAD_SETTINGS)
def test_bad_setting_is_a_clear_error_naming_the_variable(monkeypatch, name, value, fix):
    """A value the workshop cannot use raises SettingsError with the variable, its value and what to set."""
    from helpers.config import SettingsError

    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        read_settings()
    message = str(info.value)
    assert f"{name}={value!r}" in message and fix in message


@pytest.mark.parametrize(
    "name, value, field, expected",
    [
        ("HISTORY_TIMEOUT_S", "0.25", "history_timeout_s", 0.25),
        ("HISTORY_TIMEOUT_S", "", "history_timeout_s", 5.0),
        ("HISTORY_TTL_DAYS", "0", "history_ttl_days", 0.0),  # 0 days: kept forever, a meaning of its own
        ("WORKSHOP_QUEUE_MAX", " 0 ", "queue_max", 0),  # 0: unbounded
        ("WORKSHOP_STAND_IN_PORT", "65535", "stand_in_port", 65535),
    ],
)
def test_number_settings_read_their_value_and_type(monkeypatch, name, value, field, expected):
    monkeypatch.setenv(name, value)
    read = getattr(read_settings(), field)
    assert read == expected and type(read) is type(expected)


@pytest.mark.parametrize("value, expected", [("", True), ("1", True), ("Yes", True), ("0", False), (" OFF ", False)])
def test_guardrails_flag_words(monkeypatch, value, expected):
    monkeypatch.setenv("WORKSHOP_GUARDRAILS", value)
    assert read_settings().guardrails is expected


def test_history_url_schemes_kept(monkeypatch):
    for url in ("postgresql://u:p@h:5432/db", "postgres://h/db", "sqlite:////tmp/h.sqlite"):
        monkeypatch.setenv("HISTORY_URL", url)
        assert read_settings().history_url == url


def test_config_cli_reports_a_bad_setting_without_a_traceback(monkeypatch, capsys):
    from helpers.config import _main

    monkeypatch.setenv("WORKSHOP_STAND_IN_PORT", "abc")
    assert _main(["--ollama-up"]) == 2
    err = capsys.readouterr().err
    assert "WORKSHOP_STAND_IN_PORT='abc'" in err and "Traceback" not in err
