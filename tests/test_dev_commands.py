"""The developer commands keep their order: make test lints, then runs the fast tier, then the slow one; CI uses it."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("bash") is None, reason="needs make, bash")


def dry_run(target: str, *variables: str) -> list[str]:
    """The commands `make -n target [NAME=value ...]` would run (recursive makes print theirs too), installs left out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    out = subprocess.run(
        ["make", "-n", target, *variables], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    return [line for line in out.splitlines() if "pip" not in line and "touch " not in line]


def position(lines: list[str], pattern: str) -> int:
    """The index of the first line matching pattern (fails with the lines when none does)."""
    found = [i for i, line in enumerate(lines) if re.search(pattern, line)]
    assert found, f"no command matches {pattern!r} in:\n" + "\n".join(lines)
    return found[0]


def test_make_test_lints_then_runs_the_fast_tier_then_the_slow_tier():
    lines = dry_run("test")
    order = [
        position(lines, r"ruff check \."),
        position(lines, r"ruff format --check \."),
        position(lines, r"strip_notebooks\.py --check"),
        position(lines, r"bin/mypy"),
        position(lines, r'run_pytest tests -m "not slow"'),
        position(lines, r"run_pytest tests notebooks -m slow --nbmake"),
    ]
    assert order == sorted(order), lines


def test_pytest_exit_5_fails_loudly(tmp_path):
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    function = re.search(r"^PYTEST = (.*)$", make, re.M)
    assert function, "the Makefile defines PYTEST"
    shell = function[1].replace("$$", "$").replace("$(VENV)/bin/pytest", f"{sys.executable} -m pytest")
    (tmp_path / "test_empty.py").write_text('"""A file with no test."""\n')
    command = ["sh", "-c", f'{shell} "$@"', "sh", "-q", "-p", "no:cacheprovider", "test_empty.py"]
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # a bare pytest starts in a second, not ten
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 5 and "ran no test" in done.stderr, (done.returncode, done.stdout, done.stderr)


def test_make_lab_and_the_browser_test_start_jupyterlab_the_same_way():
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = make.split("\nlab:", 1)[1].split("\n\n", 1)[0]  # not `make -n lab`: it would run the $(MAKE) line
    assert "$(PY) scripts/lab.py $(LAB_ARGS)" in recipe
    spec = importlib.util.spec_from_file_location("lab", ROOT / "scripts" / "lab.py")
    assert spec and spec.loader
    lab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lab)
    command = lab.lab_command(["--port=1"])
    assert f"--ServerApp.root_dir={ROOT}" in command
    assert "--LabApp.default_url=/lab/tree/notebooks/00_setup-check.ipynb" in command
    assert (ROOT / "notebooks" / "00_setup-check.ipynb").exists() and command[-1] == "--port=1"
    assert "lab_command(" in (ROOT / "tests" / "test_lab_links_browser.py").read_text(encoding="utf-8")


def test_ci_sets_ci_installs_system_packages_then_runs_make_test():
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")], check=True)
    assert re.search(r"^export CI=1\b", script, re.M), "CI=1: missing Chromium or PostgreSQL fails, never skips"
    assert "set -euo pipefail" in script
    assert script.index("apt-get install") < script.index("\nmake test\n")


def test_make_serve_corpus_sets_corpus_dir_for_the_app():
    assert position(dry_run("serve"), r"python -m app") >= 0
    assert not any("CORPUS_DIR" in line for line in dry_run("serve")), "no CORPUS: the app reads data/corpus"
    lines = dry_run("serve", "CORPUS=/tmp/my docs")
    assert 'CORPUS_DIR="/tmp/my docs" ' in lines[position(lines, r"python -m app")]
