"""A cgroup v1 memory limit made by a test: a command started inside it, its counters read, the cgroup removed.

Needs root and the cgroup v1 memory controller (/sys/fs/cgroup/memory). The cgroup is made as a child of this
process's own memory cgroup, so whatever limits that one has still apply. A process enters it through a two-line
shell launcher that writes its own pid into cgroup.procs and then execs the command, so the command and every
process it starts (kernels, and a stand-in even after it leaves the session) are inside from their first byte.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from helpers.memory import own_cgroups

V1_MEMORY = Path("/sys/fs/cgroup/memory")


class CgroupUnavailableError(RuntimeError):
    """This machine or user cannot make a cgroup v1 memory limit; the message says why."""


@dataclass(frozen=True)
class MemoryCgroup:
    """One cgroup v1 memory folder: its processes and its counters."""

    path: Path

    def read_int(self, name: str) -> int:
        """A counter file of the cgroup, e.g. memory.max_usage_in_bytes."""
        return int((self.path / name).read_text().strip())

    def pids(self) -> list[int]:
        """The processes in the cgroup now."""
        return [int(line) for line in (self.path / "cgroup.procs").read_text().split()]

    def stat(self) -> dict[str, int]:
        """memory.stat as a dict (rss, cache, total_rss, ...)."""
        pairs = (line.split() for line in (self.path / "memory.stat").read_text().splitlines())
        return {name: int(value) for name, value in pairs}

    def oom_kills(self) -> int:
        """Processes the kernel's OOM killer has killed in this cgroup (memory.oom_control's oom_kill)."""
        for line in (self.path / "memory.oom_control").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
        return 0

    def launcher(self, command: list[str]) -> list[str]:
        """command, started by a shell that first puts its own pid in this cgroup and then execs it."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs"), *command]


def own_memory_cgroup() -> Path:
    """This process's cgroup v1 memory folder, or CgroupUnavailableError saying why there is none."""
    if not (V1_MEMORY / "cgroup.procs").exists():
        raise CgroupUnavailableError(f"no cgroup v1 memory controller at {V1_MEMORY} (cgroup v2 is not supported here)")
    if os.geteuid() != 0:
        raise CgroupUnavailableError("making a cgroup needs root")
    _, v1 = own_cgroups(Path("/proc/self/cgroup").read_text())
    folder = V1_MEMORY / (v1 or "/").strip("/")
    return folder if folder.is_dir() else V1_MEMORY


def empty_and_remove(cgroup: MemoryCgroup, *, timeout: float = 30.0) -> list[int]:
    """Wait for the cgroup to empty, end what is left (by pid: all started by the test), remove it; the leftovers."""
    deadline, leftovers = time.monotonic() + timeout, []
    while cgroup.pids() and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in cgroup.pids():
        leftovers.append(pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while cgroup.pids() and time.monotonic() < deadline:
        time.sleep(0.2)
    cgroup.path.rmdir()
    return leftovers


@contextmanager
def memory_cgroup(*, name: str, limit_bytes: int) -> Iterator[MemoryCgroup]:
    """A new cgroup with memory.limit_in_bytes (and memsw, when swap is accounted) set; emptied and removed after."""
    folder = own_memory_cgroup() / name
    folder.mkdir()
    cgroup = MemoryCgroup(folder)
    try:
        (folder / "memory.limit_in_bytes").write_text(str(limit_bytes))
        if (folder / "memory.memsw.limit_in_bytes").exists():  # swap counts too: no escaping the limit into swap
            (folder / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
        yield cgroup
    finally:
        leftovers = empty_and_remove(cgroup)
        if leftovers:
            print(f"killed {len(leftovers)} process(es) left in {folder} by the test: {leftovers}")
