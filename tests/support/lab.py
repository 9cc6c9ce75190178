"""Run a JupyterLab process for a browser test: started, waited for, and stopped by its own handle."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.processes import stop_process


@contextmanager
def running_lab(cmd: list[str], *, cwd: Path, env: dict, port: int, token: str, log_path: Path) -> Iterator[str]:
    """Start JupyterLab with cmd, yield its URL once /api/status answers, then terminate it (kill if it hangs)."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"JupyterLab did not start: {log_path.read_text()[-2000:]}")
                    time.sleep(0.3)
            yield url
        finally:
            stop_process(proc, grace_s=30)
