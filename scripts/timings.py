"""Measure how long Run All takes per lesson on this machine and write the README's agenda timing column.

    WORKSHOP_OFFLINE=1 .venv/bin/python scripts/timings.py                 # lessons 00-10, rewrites README.md
    WORKSHOP_OFFLINE=1 .venv/bin/python scripts/timings.py notebooks/06_rag.ipynb --dry-run

Each notebook runs top to bottom in a fresh kernel (nbclient, as nbmake does), from its own folder. The stand-in is
started (or reused) before the first notebook, so a notebook's time never includes starting the server; the first
notebook that calls a model loads it. Rows of notebooks not run keep their old value. The table goes between the
README's `<!-- timings:start -->` and `<!-- timings:end -->` markers, with how and where it was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- timings:start -->", "<!-- timings:end -->"
sys.path.insert(0, str(ROOT))


def run_notebook(path: Path, timeout: int = 1200) -> float:
    """Run one notebook in a fresh kernel from its folder; wall-clock seconds (raises if a cell fails)."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    return time.perf_counter() - start


def human(seconds: float) -> str:
    """Seconds as the table shows them: '21 s' below two minutes, else '4.1 min'."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def backend() -> tuple[str, bool]:
    """Start (or reuse) the stand-in like the test session does: (the backend the notebooks use, started here)."""
    from helpers.config import probe_ollama, read_settings

    settings = read_settings()
    if settings.force_offline or probe_ollama(settings.ollama_host) is None:
        from infra.standin.launcher import ensure_stand_in

        _, started = ensure_stand_in(settings)
        return "the offline stand-in", started
    return f"Ollama at {settings.ollama_host}", False


def table(readme: str, seconds: dict[str, float], note: str) -> str:
    """The README with the timing column of the agenda table between the markers replaced."""
    head, rest = readme.split(START, 1)
    block, tail = rest.split(END, 1)
    rows = []
    for line in block.strip().splitlines():
        if not line.startswith("|"):
            continue
        cells = line.strip().strip("|").split("|")
        match = re.search(r"\(notebooks/([^)]+\.ipynb)\)", line)
        if match and match.group(1) in seconds:
            cells[-1] = f" {human(seconds[match.group(1)])} "
        rows.append("|" + "|".join(cells) + "|")
    return f"{head}{START}\n" + "\n".join(rows) + f"\n\n{note}\n{END}{tail}"


def main() -> int:
    """Run the notebooks, print one line each, rewrite the README's table after each (unless --dry-run)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every lesson, notebooks/NN_*.ipynb")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--dry-run", action="store_true", help="measure and print, do not write the README")
    args = parser.parse_args()
    paths = args.notebooks or sorted(p for p in (ROOT / "notebooks").glob("*.ipynb") if re.match(r"\d\d_", p.name))
    fast = os.environ.get("WORKSHOP_FAST", "0") == "1"
    where, started_here = backend()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    started = datetime.now(UTC)
    seconds: dict[str, float] = {}

    def write() -> None:  # after every notebook, so an interrupted run keeps what it measured
        load_now = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        names = ", ".join(sorted(p[:2] for p in seconds))
        keep = "" if len(seconds) >= len(paths) else " (the other rows keep the values of an earlier run)"
        note = (
            f"The last column is Run All, measured by `scripts/timings.py` (each notebook in a fresh kernel, top "
            f"to bottom, with nbclient) on {started:%Y-%m-%d}: {os.cpu_count()} cores ({cpu_name()}), Python "
            f"{platform.python_version()}, {platform.system()}, against {where} (started before the first "
            f"notebook; the first notebook that calls a model loads it), fast mode "
            f"{'on (`WORKSHOP_FAST=1`, as CI)' if fast else 'off'}; load average {load:.1f} at the start, "
            f"{load_now:.1f} at the end. Lessons measured in this run: {names}{keep}. A real Ollama model is "
            f"bigger and slower per token, so allow more there. Re-measure with `.venv/bin/python scripts/timings.py`."
        )
        args.readme.write_text(table(args.readme.read_text(encoding="utf-8"), seconds, note), encoding="utf-8")

    try:
        for path in paths:
            seconds[path.name] = run_notebook(path.resolve())
            print(f"{path.name:<32} {seconds[path.name]:7.1f} s", flush=True)
            if not args.dry_run:
                write()
    finally:
        if started_here:  # leave no server behind
            from helpers.config import read_settings
            from infra.standin.launcher import stop_stand_in

            stop_stand_in(read_settings())
    print(
        json.dumps(
            {
                "seconds": {k: round(v, 1) for k, v in seconds.items()},
                "backend": where,
                "fast": fast,
                "load_start": load,
            }
        )
    )
    if not args.dry_run:
        print(f"wrote the timing column of {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
