"""How near this session is to its memory limit: the cgroup (v2 or v1) of this process, or Binder's MEM_LIMIT.

Binder and JupyterHub give a learner's whole session (JupyterLab, every kernel left running, the stand-in) one
memory limit, enforced by the session's cgroup; above it the kernel that asks for more memory dies. setup() prints
the use against the limit and, above MEMORY_WARN_AT, what to do (helpers/setup.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
MEMORY_WARN_AT = 0.8  # share of the limit in use above which setup() warns
NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as a number near 2**63; v2 writes "max"

# (limit file, usage file, memory.stat key of the file cache that is easy to reclaim) per cgroup version
V2_FILES = ("memory.max", "memory.current", "inactive_file")
V1_FILES = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")


@dataclass(frozen=True)
class MemoryUse:
    """Memory in use against the limit that applies to this process."""

    used: int  # bytes: the cgroup's usage less its inactive file cache (what the kernel cannot just drop)
    limit: int  # bytes
    source: str  # "cgroup v2", "cgroup v1" or "MEM_LIMIT"

    @property
    def fraction(self) -> float:
        """Share of the limit in use."""
        return self.used / self.limit


def own_cgroups(text: str) -> tuple[str | None, str | None]:
    """(cgroup v2 path, cgroup v1 memory path) of a process from its /proc/PID/cgroup text; None where absent."""
    v2 = v1 = None
    for line in text.splitlines():
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def read_bytes(path: Path) -> int | None:
    """A cgroup file's number of bytes; None when missing, unreadable, or no limit ("max", or about 2**63)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit() or int(text) >= NO_LIMIT:
        return None
    return int(text)


def stat_value(folder: Path, key: str) -> int:
    """One value of the cgroup's memory.stat (0 when missing)."""
    try:
        lines = (folder / "memory.stat").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def cgroup_folders(mount: Path, path: str) -> list[Path]:
    """The process's cgroup folder and its ancestors up to the mount (inside a container the mount is its own cgroup)."""
    folder = mount / path.strip("/")
    if not folder.is_dir():
        return [mount]  # a cgroup namespace: /proc says a host path, the mount shows this container's own cgroup
    return [folder, *[p for p in folder.parents if p == mount or mount in p.parents]]


def tightest(folders: list[Path], files: tuple[str, str, str], source: str) -> MemoryUse | None:
    """The use against the limit of the folder that is nearest its limit; None when none has a limit."""
    limit_file, usage_file, inactive_key = files
    found = []
    for folder in folders:
        limit, usage = read_bytes(folder / limit_file), read_bytes(folder / usage_file)
        if limit and usage is not None:
            used = max(0, usage - stat_value(folder, inactive_key))
            found.append(MemoryUse(used=used, limit=limit, source=source))
    return max(found, key=lambda u: u.fraction, default=None)


def memory_use(
    *, mem_limit: int = 0, cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP
) -> MemoryUse | None:
    """This process's memory use against its cgroup's limit (v2, else v1), capped by mem_limit; None if unknown."""
    try:
        v2, v1 = own_cgroups(proc_cgroup.read_text())
    except OSError:  # not Linux
        return None
    use = None
    if v2 is not None and (cgroup_root / "cgroup.controllers").exists():
        use = tightest(cgroup_folders(cgroup_root, v2), V2_FILES, "cgroup v2")
    if use is None and v1 is not None:
        use = tightest(cgroup_folders(cgroup_root / "memory", v1), V1_FILES, "cgroup v1")
    if mem_limit and (use is None or mem_limit < use.limit):
        used = use.used if use is not None else own_usage(cgroup_root, v2, v1)
        return MemoryUse(used=used, limit=mem_limit, source="MEM_LIMIT") if used is not None else None
    return use


def own_usage(cgroup_root: Path, v2: str | None, v1: str | None) -> int | None:
    """The usage of this process's own cgroup when it has no limit (for MEM_LIMIT); None when unreadable."""
    if v2 is not None and (cgroup_root / "cgroup.controllers").exists():
        folder, (_, usage_file, key) = cgroup_folders(cgroup_root, v2)[0], V2_FILES
    elif v1 is not None:
        folder, (_, usage_file, key) = cgroup_folders(cgroup_root / "memory", v1)[0], V1_FILES
    else:
        return None
    usage = read_bytes(folder / usage_file)
    return None if usage is None else max(0, usage - stat_value(folder, key))


def memory_line(use: MemoryUse) -> str:
    """The setup table's memory row, e.g. '812 of 2,048 MB in use (40 %, cgroup v1)'."""
    return f"{use.used / 2**20:,.0f} of {use.limit / 2**20:,.0f} MB in use ({use.fraction:.0%}, {use.source})"


def memory_warning(use: MemoryUse | None, *, warn_at: float = MEMORY_WARN_AT) -> str | None:
    """What to do when the session is near its memory limit; None below warn_at of it (or with no known limit)."""
    if use is None or use.fraction < warn_at:
        return None
    return (
        f"WARNING: this session uses {memory_line(use)}. Near the limit a kernel dies or the stand-in is killed. "
        "Kernels left running by other lessons keep their memory: shut them down in the Running Terminals and "
        "Kernels tab (left sidebar), or with Kernel > Shut Down All Kernels (then choose this lesson's kernel "
        "again); close lessons you are done with (File > Close and Shut Down Notebook). Then run this cell again."
    )
