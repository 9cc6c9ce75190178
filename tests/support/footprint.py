"""Sample the resident memory of every process of a session (about once a second) and report its peak.

The processes are those of a cgroup (tests/support/cgroup.py): the Jupyter server and everything it started, the
stand-in included. Each process's PSS (proportional set size: its private pages, plus its share of pages it shares
with others, such as the libraries every kernel maps) is summed per sample: the memory the processes hold together,
each shared page counted once. The sum of RSS, which counts a shared library once per process, is kept beside it as
an upper bound.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

MB = 2**20


@dataclass(frozen=True)
class Sample:
    """One reading: when, during which step, every process's RSS, and the cgroup's own counters."""

    t: float
    step: str
    rss: dict[int, int]
    pss: dict[int, int]
    cgroup_usage: int  # memory.usage_in_bytes: RSS and page cache charged to the cgroup
    cgroup_rss: int  # memory.stat total_rss: anonymous memory only

    @property
    def total(self) -> int:
        """The session's memory at this moment: the sum of its processes' PSS (shared pages counted once)."""
        return sum(self.pss.values())

    @property
    def total_rss(self) -> int:
        """The sum of its processes' RSS (shared pages counted once per process): an upper bound."""
        return sum(self.rss.values())


@dataclass
class Sampler:
    """A background thread that samples the processes `pids()` names until stopped."""

    pids: Callable[[], list[int]]
    counters: Callable[[], tuple[int, int]]  # (usage, rss) of the cgroup
    interval: float = 1.0
    step: str = "start"  # what the session is doing now (a lesson and cell), set by the caller
    samples: list[Sample] = field(default_factory=list)
    commands: dict[int, list[str]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _started: float = field(default_factory=time.monotonic)

    def sample(self) -> Sample:
        """Read every process's RSS and PSS once (a process that just ended is skipped)."""
        rss: dict[int, int] = {}
        pss: dict[int, int] = {}
        for pid in self.pids():
            try:
                proc = psutil.Process(pid)
                if pid not in self.commands:
                    self.commands[pid] = proc.cmdline()
                full = proc.memory_full_info()
                rss[pid], pss[pid] = full.rss, full.pss
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
        usage, cgroup_rss = self.counters()
        reading = Sample(time.monotonic() - self._started, self.step, rss, pss, usage, cgroup_rss)
        self.samples.append(reading)
        return reading

    def _run(self) -> None:
        """Sample until stopped."""
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def start(self) -> None:
        """Start sampling in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="session-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling, and take one last sample."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.sample()

    def peak(self) -> Sample:
        """The sample with the highest total PSS."""
        return max(self.samples, key=lambda s: s.total)

    def peak_of(self, pid: int) -> int:
        """The highest PSS one process reached."""
        return max((s.pss.get(pid, 0) for s in self.samples), default=0)


def kind_of(command: list[str], *, server_pid: int, pid: int, kernels: dict[str, str]) -> str:
    """'server', 'kernel <lesson>', 'stand-in' or 'other: <command>' for one process of the session."""
    text = " ".join(command)
    if pid == server_pid:
        return "server (JupyterLab)"
    for kernel_id, lesson in kernels.items():
        if f"kernel-{kernel_id}.json" in text:
            return f"kernel {lesson}"
    if "ipykernel" in text:
        return "kernel (no lesson)"
    if "infra.standin" in text:
        return "stand-in"
    return "other: " + text[:60]


def growth_by_step(sampler: Sampler, pid: int, *, top: int = 5) -> list[tuple[str, int]]:
    """The steps during which process pid's PSS grew most (its highest PSS in the step minus the one before)."""
    highest: dict[str, int] = {}
    for s in sampler.samples:
        highest[s.step] = max(highest.get(s.step, 0), s.pss.get(pid, 0))
    steps, grown, before = list(highest), [], 0
    for step in steps:
        if highest[step]:
            grown.append((step, highest[step] - before))
            before = max(before, highest[step])
    return sorted(grown, key=lambda g: g[1], reverse=True)[:top]


def report(sampler: Sampler, *, server_pid: int, kernels: dict[str, str], limit: int) -> str:
    """A table of peak PSS per process and per kind, the session's peak, and the cgroup's counters."""
    peak = sampler.peak()
    kinds = {
        pid: kind_of(cmd, server_pid=server_pid, pid=pid, kernels=kernels) for pid, cmd in sampler.commands.items()
    }
    lines = [
        f"session peak: {peak.total / MB:,.0f} MB (sum of PSS; sum of RSS then {peak.total_rss / MB:,.0f} MB, highest "
        f"{max(s.total_rss for s in sampler.samples) / MB:,.0f} MB) at {peak.t:.0f} s, during {peak.step}; "
        f"limit {limit / MB:,.0f} MB; {len(sampler.samples)} samples",
        f"{'process':<34} {'pid':>7} {'own peak':>10} {'at session peak':>16}",
    ]
    for pid in sorted(kinds, key=lambda p: kinds[p]):
        lines.append(
            f"{kinds[pid]:<34} {pid:>7} {sampler.peak_of(pid) / MB:>7,.0f} MB {peak.pss.get(pid, 0) / MB:>13,.0f} MB"
        )
    by_kind: dict[str, int] = {}
    for pid, pss in peak.pss.items():
        kind = kinds.get(pid, "other").split(" ")[0]
        by_kind[kind] = by_kind.get(kind, 0) + pss
    lines.append("at the session peak, by kind: " + ", ".join(f"{k} {v / MB:,.0f} MB" for k, v in by_kind.items()))
    highest_usage = max(s.cgroup_usage for s in sampler.samples)
    highest_rss = max(s.cgroup_rss for s in sampler.samples)
    lines.append(
        f"cgroup, sampled: highest usage {highest_usage / MB:,.0f} MB (RSS + page cache), "
        f"highest total_rss {highest_rss / MB:,.0f} MB"
    )
    return "\n".join(lines)
