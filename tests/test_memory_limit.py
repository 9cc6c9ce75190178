"""setup()'s memory warning: the limit read from fake cgroup v2 and v1 files and MEM_LIMIT (fast tier).

A fake in the fast tier, and it says so: the cgroup folders and /proc/self/cgroup below are files written in
tmp_path in the kernel's formats. The real path (a real cgroup v1 limit, read by lesson 00's setup cell in a kernel
inside it) is exercised by the slow session test, tests/test_session_memory.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.config import SettingsError, read_settings
from helpers.memory import MemoryUse, memory_line, memory_use, memory_warning, own_cgroups

MB = 2**20
V1_PROC = "12:pids:/\n4:memory:/session/lab\n3:cpuset:/\n0::/\n"
V2_PROC = "0::/user.slice/session.scope\n"


def write(folder: Path, files: dict[str, str]) -> None:
    """Fake cgroup files in folder (a fast-tier fake of /sys/fs/cgroup)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def fake_v1(root: Path, *, limit: str, usage: int, inactive: int = 0) -> Path:
    """A cgroup v1 memory hierarchy whose process cgroup is /session/lab; the /proc/self/cgroup file for it."""
    write(root / "memory", {"memory.limit_in_bytes": "9223372036854771712\n", "memory.usage_in_bytes": "1\n"})
    stat = f"cache 5\ntotal_inactive_file {inactive}\ntotal_rss 7\n"
    write(root / "memory" / "session" / "lab", {"memory.limit_in_bytes": f"{limit}\n", "memory.stat": stat})
    (root / "memory" / "session" / "lab" / "memory.usage_in_bytes").write_text(f"{usage}\n")
    proc = root / "proc-self-cgroup"
    proc.write_text(V1_PROC)
    return proc


def fake_v2(root: Path, *, limit: str, usage: int, inactive: int = 0, parent_limit: str = "max") -> Path:
    """A cgroup v2 tree with the process in /user.slice/session.scope; the /proc/self/cgroup file for it."""
    write(root, {"cgroup.controllers": "cpu memory pids\n"})
    write(root / "user.slice", {"memory.max": f"{parent_limit}\n", "memory.current": f"{usage}\n"})
    scope = root / "user.slice" / "session.scope"
    write(
        scope,
        {"memory.max": f"{limit}\n", "memory.current": f"{usage}\n", "memory.stat": f"inactive_file {inactive}\n"},
    )
    proc = root / "proc-self-cgroup"
    proc.write_text(V2_PROC)
    return proc


def test_own_cgroups_reads_both_versions():
    assert own_cgroups(V1_PROC) == ("/", "/session/lab")
    assert own_cgroups(V2_PROC) == ("/user.slice/session.scope", None)
    assert own_cgroups("5:cpu,memory:/x\n") == (None, "/x")


def test_v1_limit_and_usage_less_inactive_cache(tmp_path: Path):
    proc = fake_v1(tmp_path, limit=str(2048 * MB), usage=1800 * MB, inactive=100 * MB)
    use = memory_use(cgroup_root=tmp_path, proc_cgroup=proc)
    assert use == MemoryUse(used=1700 * MB, limit=2048 * MB, source="cgroup v1")
    assert memory_line(use) == "1,700 of 2,048 MB in use (83%, cgroup v1)"


def test_v2_limit_nearest_its_limit_wins(tmp_path: Path):
    proc = fake_v2(tmp_path, limit="max", usage=900 * MB, parent_limit=str(1024 * MB))
    use = memory_use(cgroup_root=tmp_path, proc_cgroup=proc)
    assert use is not None and (use.limit, use.source) == (1024 * MB, "cgroup v2")  # the parent's limit applies
    proc = fake_v2(tmp_path, limit=str(2048 * MB), usage=1000 * MB, inactive=200 * MB, parent_limit="max")
    assert memory_use(cgroup_root=tmp_path, proc_cgroup=proc) == MemoryUse(800 * MB, 2048 * MB, "cgroup v2")


def test_no_limit_anywhere_is_none(tmp_path: Path):
    proc = fake_v2(tmp_path, limit="max", usage=900 * MB)
    assert memory_use(cgroup_root=tmp_path, proc_cgroup=proc) is None
    assert memory_use(cgroup_root=tmp_path, proc_cgroup=tmp_path / "no-such-file") is None  # not Linux


def test_mem_limit_caps_the_cgroup_limit(tmp_path: Path):
    proc = fake_v1(tmp_path, limit="9223372036854771712", usage=1000 * MB)
    use = memory_use(mem_limit=1024 * MB, cgroup_root=tmp_path, proc_cgroup=proc)
    assert use == MemoryUse(used=1000 * MB, limit=1024 * MB, source="MEM_LIMIT")
    proc = fake_v1(tmp_path, limit=str(512 * MB), usage=100 * MB)
    assert memory_use(mem_limit=1024 * MB, cgroup_root=tmp_path, proc_cgroup=proc).source == "cgroup v1"


def test_container_namespace_reads_the_mount_itself(tmp_path: Path):
    """Inside a container /proc names a host path that the container's own mount does not have."""
    write(
        tmp_path, {"cgroup.controllers": "memory\n", "memory.max": f"{1024 * MB}\n", "memory.current": f"{900 * MB}\n"}
    )
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("0::/kubepods/pod1234/abcd\n")
    assert memory_use(cgroup_root=tmp_path, proc_cgroup=proc) == MemoryUse(900 * MB, 1024 * MB, "cgroup v2")


def test_warning_above_80_percent_says_what_to_do():
    assert memory_warning(None) is None
    assert memory_warning(MemoryUse(used=1600 * MB, limit=2048 * MB, source="cgroup v1")) is None  # 78 %
    text = memory_warning(MemoryUse(used=1700 * MB, limit=2048 * MB, source="MEM_LIMIT"))
    assert text is not None and "1,700 of 2,048 MB" in text
    assert "Shut Down All Kernels" in text and "Running" in text


def test_mem_limit_setting(monkeypatch):
    monkeypatch.setenv("MEM_LIMIT", "2147483648")
    assert read_settings().mem_limit == 2**31
    monkeypatch.setenv("MEM_LIMIT", "2G")
    with pytest.raises(SettingsError, match="MEM_LIMIT"):
        read_settings()
