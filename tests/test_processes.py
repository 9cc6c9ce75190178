"""tests/support/processes.stop_process, the one terminate-then-kill of the tests and the benchmarks, on real children."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.support.processes import stop_process

READY = "import signal, sys, time; {setup} print('ready', flush=True); time.sleep(60)"


def child(setup: str = "") -> subprocess.Popen:
    """A real Python child that sleeps, once it has run setup and said so."""
    proc = subprocess.Popen([sys.executable, "-c", READY.format(setup=setup)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def test_a_child_that_obeys_sigterm_stops_at_once():
    start = time.monotonic()
    assert stop_process(child(), grace_s=10) == -signal.SIGTERM
    assert time.monotonic() - start < 5


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace():
    start = time.monotonic()
    assert stop_process(child("signal.signal(signal.SIGTERM, signal.SIG_IGN);"), grace_s=0.5) == -signal.SIGKILL
    assert time.monotonic() - start >= 0.5


def test_a_child_that_already_exited_keeps_its_code():
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    assert stop_process(proc) == 3
