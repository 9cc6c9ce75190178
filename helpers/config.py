"""Workshop configuration: every environment variable is read here, and nowhere else.

Standard library only, so the Makefile can ask "is Ollama up?" before the virtualenv exists:
    python3 -m helpers.config --ollama-up      (exit 0 when an Ollama answers at OLLAMA_HOST)
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"
DEFAULT_STAND_IN_PORT = 11435
OLLAMA_CHAT_MODEL = "llama3.2:3b"  # default chat model with a real Ollama
STAND_IN_CHAT_MODEL = "smollm2:135m"  # the model the offline stand-in serves
EMBED_MODEL = "all-minilm"  # all-MiniLM-L6-v2, 384-d, on both backends


TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
HISTORY_SCHEMES = ("postgresql://", "postgres://", "sqlite:///")
N = TypeVar("N", int, float)  # what _number reads
LANGUAGE_CHOICES = ("auto", "en", "ru")  # WORKSHOP_LANGUAGE; the texts of each: helpers/language.py


class SettingsError(ValueError):
    """An environment variable holds a value the workshop cannot use; the message names it and what to set."""


def _flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    """A yes/no variable: 1/true/yes/on or 0/false/no/off (any case); unset or empty gives default."""
    raw = env.get(name, "")
    value = raw.strip().lower()
    if not value:
        return default
    if value in TRUE_WORDS | FALSE_WORDS:
        return value in TRUE_WORDS
    raise SettingsError(f"{name}={raw!r} is not a yes/no value: set {name}=1 (on) or {name}=0 (off), or unset it.")


def _number(
    env: Mapping[str, str],
    name: str,
    *,
    kind: type[N],
    default: N,
    minimum: N,
    maximum: N | None = None,
    noun: str = "",
) -> N:
    """A number variable read as kind (int or float), within minimum..maximum; unset or empty gives default."""
    raw = env.get(name, "")
    if not raw.strip():
        return default
    try:
        value: N | None = kind(raw.strip())
    except ValueError:
        value = None
    if value is not None and math.isfinite(value) and minimum <= value and (maximum is None or value <= maximum):
        return value
    noun = noun or ("a whole number" if kind is int else "a number")
    bounds = f"from {minimum:g} to {maximum:g}" if maximum is not None else f"of {minimum:g} or more"
    raise SettingsError(
        f"{name}={raw!r} is not {noun} {bounds}: set e.g. {name}={default:g}, or unset it for {default:g}."
    )


def _history_url(env: Mapping[str, str]) -> str | None:
    """HISTORY_URL if it names a supported store (PostgreSQL or an explicit SQLite file); unset gives None."""
    raw = env.get("HISTORY_URL", "").strip()
    if raw and not raw.startswith(HISTORY_SCHEMES):
        raise SettingsError(
            f"HISTORY_URL={raw!r} is not supported: set it to postgresql://user:password@host:5432/dbname or "
            "sqlite:///path/to/history.sqlite, or unset it for SQLite in the state folder."
        )
    return raw or None


def _language(env: Mapping[str, str]) -> str:
    """WORKSHOP_LANGUAGE: auto (from the documents), en or ru; unset or empty gives auto."""
    raw = env.get("WORKSHOP_LANGUAGE", "")
    value = raw.strip().lower() or "auto"
    if value not in LANGUAGE_CHOICES:
        raise SettingsError(
            f"WORKSHOP_LANGUAGE={raw!r} is not supported: set it to auto (the documents' language), en or ru, "
            "or unset it for auto."
        )
    return value


def normalize_host(host: str | None) -> str:
    """An OLLAMA_HOST value as a base URL, with the official client's rules (`ollama._client._parse_host`).

    No scheme: http and port 11434; `http://` without a port: 80; `https://`: 443; a path is kept. One
    addition: the bind-all address 0.0.0.0 (a common OLLAMA_HOST for the server) is reached as 127.0.0.1.
    """
    host, port = (host or "").strip(), 11434
    scheme, _, hostport = host.partition("://")
    if not hostport:
        scheme, hostport = "http", host
    elif scheme == "http":
        port = 80
    elif scheme == "https":
        port = 443
    split = urllib.parse.urlsplit(f"{scheme}://{hostport}")
    name = split.hostname or "127.0.0.1"
    name = "127.0.0.1" if name == "0.0.0.0" else name
    port = split.port or port
    try:
        if isinstance(ipaddress.ip_address(name), ipaddress.IPv6Address):
            name = f"[{name}]"  # urlsplit drops the brackets
    except ValueError:
        pass
    path = split.path.strip("/")
    return f"{scheme}://{name}:{port}/{path}" if path else f"{scheme}://{name}:{port}"


@dataclass(frozen=True)
class Settings:
    """What the environment asks for; defaults are local."""

    ollama_host: str
    chat_model: str | None  # None: the backend's default
    embed_model: str
    qdrant_url: str | None  # None: Qdrant embedded in the process
    force_offline: bool  # WORKSHOP_OFFLINE=1: always use the stand-in (CI does)
    fast: bool  # WORKSHOP_FAST=1: smaller sweeps and samples (CI does)
    stand_in_port: int
    chat_gguf: str | None  # WORKSHOP_CHAT_GGUF: serve this GGUF file instead of SmolLM2
    state_dir: Path  # logs, pid file, SQLite history, caches (gitignored)
    history_url: str | None = None  # HISTORY_URL: postgresql://... for the served app's history; None: SQLite
    guardrails: bool = True  # WORKSHOP_GUARDRAILS=0: the served app runs without lesson 15's guardrails
    language: str = "auto"  # WORKSHOP_LANGUAGE: prompts and refusals in en or ru; auto: the documents' language
    corpus_dir: Path | None = None  # CORPUS_DIR: the folder of documents lessons and the app read; None: data/corpus
    answer_cache: bool = False  # WORKSHOP_CACHE=1: the served app caches query embeddings and repeatable answers
    api_keys: bool = False  # WORKSHOP_API_KEYS=1: the served app asks for a bearer key (app/keys.py)
    rate_limit: int = 0  # WORKSHOP_RATE_LIMIT: chat requests per key per minute; 0: no limit
    token_budget: int = 0  # WORKSHOP_TOKEN_BUDGET: tokens per key per budget window; 0: no budget
    budget_window_s: int = 3600  # WORKSHOP_BUDGET_WINDOW_S: the token budget's sliding window
    queue_max: int = 32  # WORKSHOP_QUEUE_MAX: answers generating or waiting at once; more get 503; 0: unbounded
    chat_backends: str | None = None  # CHAT_BACKENDS: kind=url[#model],... tried in order (helpers/providers.py)
    history_timeout_s: float = (
        5.0  # HISTORY_TIMEOUT_S: the longest one history statement (or a free connection) may take
    )
    history_ttl_days: float = 30.0  # HISTORY_TTL_DAYS: chats idle longer are deleted (0: kept forever)
    mem_limit: int = 0  # MEM_LIMIT (bytes; Binder sets it): the session's memory limit for setup()'s warning; 0: none


def _corpus_dir(env: Mapping[str, str]) -> Path | None:
    """CORPUS_DIR as an absolute folder; unset gives None (the workshop's handbook), a path that is no folder an error."""
    raw = env.get("CORPUS_DIR", "")
    if not raw.strip():
        return None
    folder = Path(raw.strip()).expanduser().resolve()
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise SettingsError(
            f"CORPUS_DIR={raw!r} {what}: set CORPUS_DIR to a folder of .md, .txt, .pdf or .html files "
            "(e.g. CORPUS_DIR=~/my-documents), or unset it for the workshop's handbook (data/corpus)."
        )
    return folder


def _ollama_host(env: Mapping[str, str]) -> str:
    """OLLAMA_HOST as a base URL; a value the client's rules cannot read is a SettingsError."""
    raw = env.get("OLLAMA_HOST")
    try:
        return normalize_host(raw)
    except ValueError as exc:  # urlsplit: a port that is not a number, a bad IPv6 literal...
        raise SettingsError(
            f"OLLAMA_HOST={raw!r} is not a host Ollama's client can reach ({exc}): set it to host:port "
            f"(e.g. OLLAMA_HOST=127.0.0.1:11434) or a URL (http://gpu-box:11434), or unset it for {DEFAULT_OLLAMA_HOST}."
        ) from None


def read_settings() -> Settings:
    """Read the workshop's environment variables once, with local defaults; SettingsError says what to fix."""
    env = os.environ
    return Settings(
        ollama_host=_ollama_host(env),
        chat_model=env.get("CHAT_MODEL") or None,
        embed_model=env.get("EMBED_MODEL") or EMBED_MODEL,
        qdrant_url=env.get("QDRANT_URL") or None,
        force_offline=_flag(env, "WORKSHOP_OFFLINE", default=False),
        fast=_flag(env, "WORKSHOP_FAST", default=False),
        stand_in_port=_number(
            env,
            "WORKSHOP_STAND_IN_PORT",
            kind=int,
            default=DEFAULT_STAND_IN_PORT,
            minimum=1,
            maximum=65535,
            noun="a port number",
        ),
        chat_gguf=env.get("WORKSHOP_CHAT_GGUF") or None,
        state_dir=Path(env.get("WORKSHOP_STATE_DIR") or REPO_ROOT / ".workshop"),
        history_url=_history_url(env),
        guardrails=_flag(env, "WORKSHOP_GUARDRAILS", default=True),
        corpus_dir=_corpus_dir(env),
        language=_language(env),
        answer_cache=_flag(env, "WORKSHOP_CACHE", default=False),
        api_keys=_flag(env, "WORKSHOP_API_KEYS", default=False),
        rate_limit=_number(env, "WORKSHOP_RATE_LIMIT", kind=int, default=0, minimum=0),
        token_budget=_number(env, "WORKSHOP_TOKEN_BUDGET", kind=int, default=0, minimum=0),
        budget_window_s=_number(env, "WORKSHOP_BUDGET_WINDOW_S", kind=int, default=3600, minimum=1),
        queue_max=_number(env, "WORKSHOP_QUEUE_MAX", kind=int, default=32, minimum=0),
        chat_backends=env.get("CHAT_BACKENDS", "").strip() or None,
        history_timeout_s=_number(
            env, "HISTORY_TIMEOUT_S", kind=float, default=5.0, minimum=0.001, noun="a number of seconds"
        ),
        history_ttl_days=_number(
            env, "HISTORY_TTL_DAYS", kind=float, default=30.0, minimum=0.0, noun="a number of days"
        ),
        mem_limit=_number(env, "MEM_LIMIT", kind=int, default=0, minimum=0, noun="a number of bytes"),
    )


def probe_ollama(base_url: str, *, timeout: float = 2.0) -> dict | None:
    """GET /api/version; the JSON body if an Ollama-compatible server answers, else None."""
    try:
        with urllib.request.urlopen(f"{base_url}/api/version", timeout=timeout) as resp:
            body = json.loads(resp.read().decode("utf-8"))
            return body if isinstance(body, dict) and "version" in body else None
    except (OSError, ValueError, urllib.error.URLError):
        return None


def _main(argv: list[str]) -> int:
    """`--ollama-up`: exit 0 when a real Ollama (not the stand-in) answers at OLLAMA_HOST."""
    if argv != ["--ollama-up"]:
        print("usage: python3 -m helpers.config --ollama-up", file=sys.stderr)
        return 2
    try:
        settings = read_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    info = probe_ollama(settings.ollama_host)
    real = info is not None and not info.get("workshop_stand_in")
    print(f"Ollama at {settings.ollama_host}: {'answers' if real else 'not reachable'}")
    return 0 if real and not settings.force_offline else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
