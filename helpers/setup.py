"""The one setup call of every notebook: find an LLM backend and a vector store, print the status.

from helpers.setup import setup
cfg = setup()
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import ollama

from helpers.config import (
    OLLAMA_CHAT_MODEL,
    REPO_ROOT,
    STAND_IN_CHAT_MODEL,
    Settings,
    probe_ollama,
    read_settings,
)
from helpers.memory import memory_line, memory_use, memory_warning
from helpers.resilience import make_client

STAND_IN_START_S = 180.0  # loading both models on a busy 2-core machine; the launcher itself waits 120 s


class SetupError(RuntimeError):
    """Something the workshop needs is missing; the message says how to fix it."""


@dataclass(frozen=True)
class Config:
    """What a notebook needs to know about its backends."""

    backend: str  # "ollama" (a real Ollama) or "stand-in" (the workshop's offline server)
    ollama_host: str
    chat_model: str
    embed_model: str
    embed_dim: int
    qdrant_url: str | None  # None: Qdrant embedded in the notebook's process
    fast: bool  # WORKSHOP_FAST=1 (CI): smaller samples and sweeps
    settings: Settings

    @property
    def offline(self) -> bool:
        """True when answers come from the small stand-in model."""
        return self.backend == "stand-in"


def _pkg(name: str) -> str:
    """Installed version of a distribution, or '-'."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def start_stand_in(settings: Settings) -> str:
    """Start (or reuse) the offline stand-in as a process, `python -m infra.standin start`; its URL, or SetupError."""
    env = {
        **os.environ,
        "WORKSHOP_STAND_IN_PORT": str(settings.stand_in_port),
        "WORKSHOP_STATE_DIR": str(settings.state_dir),
    }
    if settings.chat_gguf:
        env["WORKSHOP_CHAT_GGUF"] = settings.chat_gguf
    try:
        done = subprocess.run(
            [sys.executable, "-m", "infra.standin", "start"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=STAND_IN_START_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise SetupError(
            f"The offline stand-in did not start within {STAND_IN_START_S:.0f} s: see "
            f"{settings.state_dir / 'stand-in.log'}, or run `.venv/bin/python -m infra.standin start` in a terminal."
        ) from exc
    if done.returncode != 0:
        raise SetupError(
            done.stderr.strip() or done.stdout.strip() or f"`python -m infra.standin start` failed ({done.returncode})"
        )
    found = re.search(r"http://127\.0\.0\.1:\d+", done.stdout)
    return found.group(0) if found else f"http://127.0.0.1:{settings.stand_in_port}"


def find_backend(settings: Settings) -> tuple[str, str, dict]:
    """(backend, host, /api/version answer) of the Ollama to use, starting the stand-in when none answers."""
    if not settings.force_offline:
        info = probe_ollama(settings.ollama_host)
        if info is not None:
            backend = "stand-in" if info.get("workshop_stand_in") else "ollama"
            return backend, settings.ollama_host, info
    host = start_stand_in(settings)
    return "stand-in", host, probe_ollama(host) or {}


def check_models(client: ollama.Client, backend: str, wanted: list[str]) -> None:
    """Raise SetupError naming the exact `ollama pull` for every wanted model that is missing."""
    names: set[str] = set()
    for m in client.list().models:
        if m.model:
            names |= {m.model, m.model.removesuffix(":latest")}
    missing = [w for w in wanted if w not in names]
    if not missing:
        return
    if backend == "ollama":
        pulls = "\n".join(f"    ollama pull {m}" for m in missing)
        raise SetupError(
            f"Ollama is running but these models are not pulled yet. In a terminal run:\n"
            f"{pulls}\nthen re-run this cell. (Or set CHAT_MODEL / EMBED_MODEL to models you "
            f"have: {', '.join(sorted(names)) or 'none'}.)"
        )
    raise SetupError(
        f"The offline stand-in does not serve {', '.join(missing)}; it serves "
        f"{', '.join(sorted(names))}. Unset CHAT_MODEL / EMBED_MODEL, or run a real Ollama."
    )


def check_qdrant(url: str) -> str:
    """Version of the Qdrant server at url, or SetupError with the fix."""
    from qdrant_client import QdrantClient

    try:
        info = QdrantClient(url=url, timeout=5, check_compatibility=False).info()  # info() reports the version
    except Exception as exc:  # connection refused, DNS, TLS...
        raise SetupError(
            f"QDRANT_URL is {url} but no Qdrant answers there ({type(exc).__name__}). "
            "Start one (e.g. `docker run -p 6333:6333 qdrant/qdrant`) or unset QDRANT_URL "
            "to use Qdrant embedded in the notebook."
        ) from exc
    return info.version


def setup(*, quiet: bool = False) -> Config:
    """Find Ollama or start the stand-in, check models and Qdrant, print a status table."""
    settings = read_settings()
    backend, host, info = find_backend(settings)
    default_chat = OLLAMA_CHAT_MODEL if backend == "ollama" else STAND_IN_CHAT_MODEL
    chat_model = settings.chat_model or default_chat
    client = make_client(host)  # connect and read timeouts (lesson 14): a stalled server cannot hang setup()
    assert isinstance(client, ollama.Client)  # make_client is synchronous unless asked otherwise
    check_models(client, backend, [chat_model, settings.embed_model])
    embed_dim = len(client.embed(model=settings.embed_model, input="dimension probe").embeddings[0])
    qdrant = (
        f"server {settings.qdrant_url} (v{check_qdrant(settings.qdrant_url)})"
        if settings.qdrant_url
        else "embedded (in this process)"
    )
    cfg = Config(
        backend=backend,
        ollama_host=host,
        chat_model=chat_model,
        embed_model=settings.embed_model,
        embed_dim=embed_dim,
        qdrant_url=settings.qdrant_url,
        fast=settings.fast,
        settings=settings,
    )
    use = memory_use(mem_limit=settings.mem_limit)  # the session's cgroup (Binder, a hub, a container), or MEM_LIMIT
    if not quiet:
        label = "Ollama" if backend == "ollama" else "offline stand-in (small model: weaker answers)"
        rows = [
            ("LLM backend", f"{label}, API {info.get('version')}"),
            ("host", host),
            ("chat model", chat_model),
            ("embedding model", f"{settings.embed_model} ({embed_dim}-d)"),
            ("vector store", f"Qdrant {qdrant}"),
            (
                "documents",
                f"{settings.corpus_dir} (CORPUS_DIR)" if settings.corpus_dir else "data/corpus (the handbook)",
            ),
            ("fast mode", "on" if settings.fast else "off"),
            (
                "versions",
                f"python {platform.python_version()}, ollama {_pkg('ollama')}, qdrant-client {_pkg('qdrant-client')}",
            ),
        ]
        if info.get("num_predict_default"):  # the stand-in's one silent difference, said out loud
            rows.insert(
                3,
                (
                    "answer length",
                    f"at most {info['num_predict_default']} tokens unless num_predict "
                    "is set (a real Ollama has no such cap)",
                ),
            )
        if use is not None:
            rows.append(("memory", memory_line(use)))
        width = max(len(k) for k, _ in rows)
        print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    warning = memory_warning(use)
    if warning:
        print(warning)
    return cfg
