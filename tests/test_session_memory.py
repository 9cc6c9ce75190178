"""Lessons 00, 06, 09, 11 and 15 in ONE JupyterLab session inside a 2 GB memory limit, as on Binder (issues 22, 24).

A real Jupyter server, started with `make lab`'s command (scripts/lab.py), runs in a cgroup v1 with
memory.limit_in_bytes = 2 GB made by the test. Each lesson is opened in its own session and kernel through the
server's REST API and run cell by cell over the kernel's websocket, as Run All does; every kernel is left running, as
learners leave them (the workshop's idle-kernel culling is off here: the worst case). Lesson 00's setup cell starts
the stand-in, inside the same cgroup. The lessons run with CI's settings, WORKSHOP_OFFLINE=1 and WORKSHOP_FAST=1
(forced here, whatever the caller's environment says).

A sampler reads the PSS (shared pages counted once; the summed RSS, an upper bound, is printed beside it) of every
process in the cgroup about once a second over the whole run. The test prints the peak (in total, per process and per
kind), the cgroup's memory.max_usage_in_bytes, failcnt and OOM kills, and fails if a lesson fails, a kernel dies, the
OOM killer acts, or the peak of the summed PSS is above 2 GB.

These five lessons run only here in the slow tier: the Makefile's test-slow passes `--ignore` for each of them to
nbmake (SESSION_LESSONS there; a fast test below keeps both lists equal), so each lesson runs once in CI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from infra.standin.launcher import missing_packages, stop_stand_in
from infra.standin.settings import read_settings as stand_in_settings
from tests.conftest import free_port
from tests.support.cgroup import CgroupUnavailableError, MemoryCgroup, memory_cgroup, own_memory_cgroup
from tests.support.footprint import MB, Sampler, growth_by_step, report
from tests.support.lab import running_lab
from tests.support.notebook_kernels import CellResult, KernelDiedError, api, open_notebook, run_notebook

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("lab", ROOT / "scripts" / "lab.py")  # the command `make lab` runs
assert _spec and _spec.loader
lab_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lab_script)

SESSION_LESSONS = ("00_setup-check", "06_rag", "09_evaluation", "11_hybrid-search", "15_guardrails")
LIMIT = 2 * 2**30  # Binder's upper session size; kernels die above it
CELL_TIMEOUT_S = 600.0  # as nbmake's --nbmake-timeout in the Makefile
SESSION_TIMEOUT_S = 3600  # five lessons: about 10 minutes on a quiet 2-core machine, 15-20 at load 4


def lab_extra(port: int, token: str, tmp_path: Path) -> list[str]:
    """The test's own JupyterLab options after `make lab`'s: loopback, a port, a token, no culling, no browser."""
    return [
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        "--MappingKernelManager.cull_idle_timeout=0",  # every kernel stays: a learner who never waits 20 minutes
        f"--FileCheckpoints.checkpoint_dir={tmp_path / 'checkpoints'}",
    ]


def session_env(tmp_path: Path) -> dict[str, str]:
    """The server's (and so every kernel's) environment: CI's lesson settings and a stand-in of the session's own."""
    env = {k: v for k, v in os.environ.items() if k not in {"MEM_LIMIT", "OLLAMA_HOST"}}
    return {
        **env,
        "WORKSHOP_OFFLINE": "1",
        "WORKSHOP_FAST": "1",
        "WORKSHOP_STAND_IN_PORT": str(free_port()),
        "WORKSHOP_STATE_DIR": str(tmp_path / "state"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
    }


def cgroup_or_skip() -> None:
    """Fail in CI, skip elsewhere, when this machine cannot make a cgroup v1 memory limit."""
    try:
        own_memory_cgroup()
    except CgroupUnavailableError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the session memory test needs a cgroup v1 memory limit: {exc}")
        pytest.skip(f"the session memory test needs a cgroup v1 memory limit: {exc}")


def kernel_pids(server_pid: int, kernels: dict[str, str]) -> dict[str, int]:
    """{lesson: pid} of each lesson's kernel, found among the server's children by its connection file."""
    found = {}
    for child in psutil.Process(server_pid).children(recursive=True):
        text = " ".join(child.cmdline())
        for kernel_id, lesson in kernels.items():
            if f"kernel-{kernel_id}.json" in text:
                found[lesson] = child.pid
    return found


@dataclass
class SessionRun:
    """One session's server, sampler, and what its lessons did."""

    url: str
    token: str
    server_pid: int
    sampler: Sampler
    kernels: dict[str, str] = field(default_factory=dict)  # kernel id -> lesson
    pids_after: dict[str, int] = field(default_factory=dict)  # lesson -> its kernel's pid right after it ran
    failures: list[str] = field(default_factory=list)


def run_lesson(run: SessionRun, lesson: str) -> list[CellResult] | str:
    """Open a lesson in its own kernel and run it; its cell results, or why its kernel died."""
    kernel_id = open_notebook(run.url, run.token, f"notebooks/{lesson}.ipynb")
    run.kernels[kernel_id] = lesson

    def mark(index: int) -> None:
        run.sampler.step = f"{lesson} cell {index}"

    try:
        cells = run_notebook(run.url, run.token, kernel_id, ROOT / "notebooks" / f"{lesson}.ipynb",
                             timeout=CELL_TIMEOUT_S, before_cell=mark)  # fmt: skip
    except KernelDiedError as exc:
        return f"{exc} during {run.sampler.step}"
    finally:
        run.pids_after.update(kernel_pids(run.server_pid, {kernel_id: lesson}))
    run.sampler.step = f"after {lesson}"
    return cells


def run_lessons(run: SessionRun) -> None:
    """Run every session lesson in turn, each in its own kernel left running; then check every kernel is alive."""
    for lesson in SESSION_LESSONS:
        started = time.monotonic()
        cells = run_lesson(run, lesson)
        run.failures += check_lesson(lesson, cells)
        print(f"{lesson}: {time.monotonic() - started:.0f} s, {describe(cells)}", flush=True)
        if lesson == "00_setup-check" and isinstance(cells, list):
            row = memory_row(cells)
            print(f"  lesson 00's setup cell, memory row: {row}")
            if row is None or f"{LIMIT / MB:,.0f} MB" not in row:
                run.failures.append("lesson 00's setup cell did not show the session's 2,048 MB limit")
    run.failures += dead_kernels(run)


def memory_row(cells: list[CellResult]) -> str | None:
    """The setup table's memory row in the first cell's output, if any."""
    found = re.search(r"^memory\s+(.*)$", cells[0].output, re.M) if cells else None
    return found.group(1) if found else None


@pytest.mark.slow
@pytest.mark.timeout(SESSION_TIMEOUT_S)
def test_lessons_fit_one_2gb_session(tmp_path: Path) -> None:
    """Run the five lessons in one session in a 2 GB cgroup; fail on a failed lesson, a dead kernel, or > 2 GB."""
    if missing_packages():
        pytest.fail("the session test needs the offline stand-in: run make install-offline")
    cgroup_or_skip()
    env, port, token, started = session_env(tmp_path), free_port(), secrets.token_hex(16), time.monotonic()
    with memory_cgroup(name=f"workshop-session-{uuid.uuid4().hex[:8]}", limit_bytes=LIMIT) as cgroup:
        sampler = Sampler(cgroup.pids, lambda: (cgroup.read_int("memory.usage_in_bytes"), cgroup.stat()["total_rss"]))
        command = cgroup.launcher(lab_script.lab_command(lab_extra(port, token, tmp_path)))
        with running_lab(command, cwd=ROOT, env=env, port=port, token=token, log_path=tmp_path / "lab.log") as url:
            run = SessionRun(url, token, cgroup.pids()[0], sampler)  # the launcher exec'd the server: first pid
            sampler.start()
            try:
                run_lessons(run)
            finally:  # the report also when a lesson hangs past the timeout
                sampler.stop()
                stand_in_pid = stand_in_pid_in(env)
                stop_stand_in(stand_in_settings(env))
                counters = cgroup_counters(cgroup)
                print_report(run, counters, stand_in_pid, time.monotonic() - started)
    if stand_in_pid is not None and stand_in_pid not in sampler.commands:
        run.failures.append(f"the stand-in (pid {stand_in_pid}) was not in the session's cgroup")
    assert not run.failures, "\n".join(run.failures)
    assert counters["oom_kill"] == 0, f"the OOM killer ended {counters['oom_kill']} process(es) of the session"
    peak = sampler.peak().total
    assert peak <= LIMIT, f"the session peaked at {peak / MB:,.0f} MB (sum of PSS), above {LIMIT / MB:,.0f} MB"


def check_lesson(lesson: str, cells: list[CellResult] | str) -> list[str]:
    """What went wrong in one lesson's run: a dead kernel, or its first failing cell."""
    if isinstance(cells, str):
        return [f"{lesson}: {cells}"]
    return [f"{lesson} cell {c.index} failed:\n{c.error}" for c in cells if c.error]


def describe(cells: list[CellResult] | str) -> str:
    """One line about a lesson's run."""
    if isinstance(cells, str):
        return cells
    failed = [c.index for c in cells if c.error]
    return f"{len(cells)} code cells run" + (f", cell {failed[0]} FAILED" if failed else ", all passed")


def dead_kernels(run: SessionRun) -> list[str]:
    """Every lesson's kernel must still be running, with the pid it had after its lesson (no restart)."""
    listed = {k["id"]: k for k in api(run.url, run.token, "/api/kernels") if isinstance(k, dict)}
    now = kernel_pids(run.server_pid, run.kernels)
    problems = []
    for kernel_id, lesson in run.kernels.items():
        state = listed.get(kernel_id, {}).get("execution_state", "gone")
        if state in {"dead", "gone"} or now.get(lesson) is None or now.get(lesson) != run.pids_after.get(lesson):
            problems.append(f"{lesson}'s kernel died or was restarted (state {state}, pid "
                            f"{run.pids_after.get(lesson)} -> {now.get(lesson)})")  # fmt: skip
    return problems


def stand_in_pid_in(env: dict[str, str]) -> int | None:
    """The pid of the stand-in the session started, from its pid file."""
    path = Path(env["WORKSHOP_STATE_DIR"]) / "stand-in.pid"
    return int(json.loads(path.read_text())["pid"]) if path.exists() else None


def cgroup_counters(cgroup: MemoryCgroup) -> dict[str, int]:
    """The cgroup's own record of the run: highest usage (RSS + page cache), failcnt, OOM kills."""
    return {
        "max_usage": cgroup.read_int("memory.max_usage_in_bytes"),
        "failcnt": cgroup.read_int("memory.failcnt"),
        "oom_kill": cgroup.oom_kills(),
    }


def print_report(run: SessionRun, counters: dict[str, int], stand_in_pid: int | None, seconds: float) -> None:
    """Print the peak table, the cgroup's counters, and where the stand-in grew most."""
    print(report(run.sampler, server_pid=run.server_pid, kernels=run.kernels, limit=LIMIT))
    print(
        f"cgroup counters: memory.max_usage_in_bytes {counters['max_usage'] / MB:,.0f} MB (RSS + page cache; at the "
        f"limit the kernel reclaims cache first, so failcnt {counters['failcnt']} counts reclaims, not failures); "
        f"OOM kills {counters['oom_kill']}"
    )
    if stand_in_pid is not None:
        grown = ", ".join(f"{step} +{mb / MB:,.0f} MB" for step, mb in growth_by_step(run.sampler, stand_in_pid))
        print(f"the stand-in grew most during: {grown}")
    print(f"session test: {seconds:.0f} s in all", flush=True)


def test_make_test_slow_leaves_exactly_these_lessons_to_the_session_test():
    """nbmake skips the session's lessons and only those, so every lesson runs exactly once in make test-slow."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    out = subprocess.run(["make", "-n", "test-slow"], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    command = next(line for line in out.stdout.splitlines() if "run_pytest tests notebooks" in line)
    assert re.findall(r"--ignore=notebooks/(\S+)\.ipynb", command) == list(SESSION_LESSONS)
    assert all((ROOT / "notebooks" / f"{lesson}.ipynb").exists() for lesson in SESSION_LESSONS)
