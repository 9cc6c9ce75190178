"""Measure how long Run All takes per lesson on this machine and write it into the README's agenda table.

    WORKSHOP_OFFLINE=1 .venv/bin/python scripts/timings.py --mode full     # every lesson as learners run it
    WORKSHOP_OFFLINE=1 .venv/bin/python scripts/timings.py --mode fast     # every lesson as CI runs it
    WORKSHOP_OFFLINE=1 .venv/bin/python scripts/timings.py --mode full notebooks/06_rag.ipynb --dry-run

`--mode full` runs with fast mode off (`WORKSHOP_FAST=0`, what a learner runs), `--mode fast` with it on
(`WORKSHOP_FAST=1`, what CI runs); the kernels inherit that setting, whatever the shell has. Each mode has its own
column ("Run All, full mode" / "Run All, fast mode") and its own note line ("Full mode: ..." / "Fast mode: ...")
between the README's `<!-- timings:start -->` and `<!-- timings:end -->` markers; a run rewrites only its own column,
its own note and the rows of the notebooks it ran. Each notebook runs top to bottom in a fresh kernel (nbclient, as
nbmake does), from its own folder. The stand-in is started (or reused) before the first notebook, so a notebook's
time never includes starting the server; the first notebook that calls a model loads it.
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

        _, started = ensure_stand_in()  # it reads its own settings (infra.standin.settings) from the same environment
        return "the offline stand-in", started
    return f"Ollama at {settings.ollama_host}", False


MODES = {"full": ("full mode", "Full mode:", "0"), "fast": ("fast mode", "Fast mode:", "1")}


def table(readme: str, seconds: dict[str, float], note: str, *, mode: str) -> str:
    """The README with the mode's column (rows of the notebooks in seconds) and its note line replaced."""
    column, prefix, _ = MODES[mode]
    head, rest = readme.split(START, 1)
    block, tail = rest.split(END, 1)
    lines = block.strip().splitlines()
    header = next(line for line in lines if line.startswith("|")).strip().strip("|").split("|")
    index = next((i for i, cell in enumerate(header) if column in cell), None)
    if index is None:
        raise ValueError(f"the agenda table has no column whose header says {column!r}: {'|'.join(header)}")
    rows, notes = [], {p: "" for _, p, _ in MODES.values()}
    for line in lines:
        if line.startswith("|"):
            cells = line.strip().strip("|").split("|")
            match = re.search(r"\(notebooks/([^)]+\.ipynb)\)", line)
            if match and match.group(1) in seconds:
                cells[index] = f" {human(seconds[match.group(1)])} "
            rows.append("|" + "|".join(cells) + "|")
        elif line.startswith(tuple(notes)):
            notes[line.split(":", 1)[0] + ":"] = line
    notes[prefix] = f"{prefix} {note}"
    return (
        f"{head}{START}\n" + "\n".join(rows) + "\n\n" + "\n\n".join(n for n in notes.values() if n) + f"\n{END}{tail}"
    )


def main() -> int:
    """Run the notebooks in one mode, print one line each, rewrite the README's column after each (unless --dry-run)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every lesson, notebooks/NN_*.ipynb")
    parser.add_argument(
        "--mode", choices=sorted(MODES), required=True, help="full: WORKSHOP_FAST=0 (learners); fast: =1 (CI)"
    )
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--dry-run", action="store_true", help="measure and print, do not write the README")
    args = parser.parse_args()
    paths = args.notebooks or sorted(p for p in (ROOT / "notebooks").glob("*.ipynb") if re.match(r"\d\d_", p.name))
    os.environ["WORKSHOP_FAST"] = MODES[args.mode][2]  # the kernels inherit it, whatever the shell set
    where, started_here = backend()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    started = datetime.now(UTC)
    seconds: dict[str, float] = {}

    def write() -> None:  # after every notebook, so an interrupted run keeps what it measured
        load_now = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        names = ", ".join(sorted(p[:2] for p in seconds))
        keep = "" if len(seconds) >= len(paths) else "; the other rows keep the values of an earlier run"
        note = (
            f"Run All with `WORKSHOP_FAST={MODES[args.mode][2]}`, measured by `scripts/timings.py --mode {args.mode}` on "
            f"{started:%Y-%m-%d} (each notebook in a fresh kernel, top to bottom): {os.cpu_count()} cores "
            f"({cpu_name()}), Python {platform.python_version()}, {platform.system()}, against {where}; load "
            f"average {load:.1f} at the start, {load_now:.1f} at the end; lessons {names}{keep}."
        )
        text = table(args.readme.read_text(encoding="utf-8"), seconds, note, mode=args.mode)
        args.readme.write_text(text, encoding="utf-8")

    try:
        for path in paths:
            seconds[path.name] = run_notebook(path.resolve())
            print(f"{path.name:<32} {seconds[path.name]:7.1f} s ({args.mode} mode)", flush=True)
            if not args.dry_run:
                write()
    finally:
        if started_here:  # leave no server behind
            from helpers.config import read_settings
            from infra.standin.launcher import stop_stand_in

            stop_stand_in(read_settings())
    summary = {"seconds": {k: round(v, 1) for k, v in seconds.items()}, "mode": args.mode, "backend": where}
    print(json.dumps({**summary, "load_start": load}))
    if not args.dry_run:
        print(f"wrote the {MODES[args.mode][0]} column of {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
