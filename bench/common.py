"""Shared pieces of the benchmarks: a private stand-in in a child process, and plain-text tables.

The benchmarks never use the shared stand-in on WORKSHOP_STAND_IN_PORT. They start their own on a free
port, in a child process as the workshop runs it (a client and a server in one process would share the
GIL, which the real setup does not), and stop it when done. `python -m bench.common PORT [THREADS]`
is that child: the stand-in's Registry and HTTP server, models loaded before it answers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from helpers.config import EMBED_MODEL, REPO_ROOT, STAND_IN_CHAT_MODEL
from infra.standin.launcher import is_stand_in
from tests.support.processes import stop_process

if TYPE_CHECKING:  # not imported at run time: this module is also the stand-in's process, whose memory is measured
    import ollama

START_TIMEOUT_S = 120.0
E5_MODEL = "multilingual-e5-small"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(port: int, chat_threads: int | None = None) -> None:
    """Load the stand-in's models (chat model with chat_threads llama.cpp threads if given) and serve port."""
    from infra.standin.models import ChatModel
    from infra.standin.registry import Registry, canonical
    from infra.standin.server import make_server

    registry = Registry()
    if chat_threads:
        chat = registry.models[canonical(STAND_IN_CHAT_MODEL)]
        chat.loader = lambda: ChatModel(chat.path, threads=chat_threads)
    for served in registry.models.values():
        if served.warm:
            served.get()  # as the stand-in starts: the others (multilingual-e5-small) load on first use
    make_server(port, registry).serve_forever()


def wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    """Return once the stand-in answers at url; raise with its log if it exits or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        if is_stand_in(url, timeout=0.5):
            return
        time.sleep(0.2)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    raise RuntimeError(f"the benchmark's stand-in did not start at {url}:\n{tail}")


@contextmanager
def private_stand_in(chat_threads: int | None = None) -> Iterator[str]:
    """Base URL of a stand-in of our own, in a child process on a free port; stopped on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "bench.common", str(port), *([str(chat_threads)] if chat_threads else [])]
    with tempfile.TemporaryDirectory(prefix="bench-stand-in-") as tmp:
        log = Path(tmp) / "stand-in.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "WORKSHOP_STATE_DIR": tmp},
            )
        try:
            wait_ready(url, proc, log)
            yield url
        finally:
            stop_process(proc, grace_s=10)


def rss_mb(pid: int) -> float:
    """Resident memory of process pid in MB (Linux /proc, else `ps`)."""
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        line = next(x for x in status.read_text().splitlines() if x.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024
    out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True, check=True).stdout
    return int(out.strip()) / 1024


def stand_in_memory(client: ollama.Client, url: str, texts: Sequence[str], batch_size: int) -> dict[str, float]:
    """The stand-in's resident MB: started, after each embedder (all-minilm, then e5) embedded the longest texts."""
    import httpx

    pid = int(httpx.get(url + "/api/version", timeout=10).json()["pid"])
    out = {"started (chat model and all-minilm loaded)": rss_mb(pid)}
    longest = sorted(texts, key=len)[-batch_size:]
    client.embed(model=EMBED_MODEL, input=longest)
    out[f"after embedding the {batch_size} longest chunks"] = rss_mb(pid)
    client.embed(model=E5_MODEL, input=[f"passage: {t}" for t in longest])
    out["multilingual-e5-small loaded too, after the same chunks"] = rss_mb(pid)
    return out


def load_note() -> str:
    """The machine's load while we measure: other work on the same cores skews timings."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) / {five:.2f} (5 min) on {os.cpu_count()} cores"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows as left-aligned text columns under a header and a rule."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def progress(message: str) -> None:
    """A progress line on stderr, so stdout keeps only the results."""
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None)
