"""Shared by the tests and the benchmarks: stop a child process politely, then for sure."""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen, *, grace_s: float = 10.0) -> int:
    """Terminate proc, kill it if it is still running after grace_s seconds; its exit code."""
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
