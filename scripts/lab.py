"""Start JupyterLab as `make lab` does: served from the repository root, opening lesson 00 first.

    .venv/bin/python scripts/lab.py                          # what `make lab` runs (LAB_ARGS are appended)
    .venv/bin/python scripts/lab.py --port 8890 --no-browser

The root is the repository, not notebooks/, so the lessons' links to ../README.md, ../data/ and ../app/ open in
JupyterLab (and README.md, data/ and app/ show in its file browser); the first page is still lesson 00. The browser
test of these links (tests/test_lab_links_browser.py) builds its command with `lab_command`, so both start the same.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST_LESSON = "notebooks/00_setup-check.ipynb"


def lab_options(*, root: Path = ROOT, first: str = FIRST_LESSON) -> list[str]:
    """The options that make the repository the server's root and lesson 00 the first page."""
    options = [f"--ServerApp.root_dir={root}", f"--LabApp.default_url=/lab/tree/{first}"]
    if hasattr(os, "getuid") and os.getuid() == 0:  # as root (a container) JupyterLab refuses to start without it
        options.append("--allow-root")
    return options


def lab_command(extra: list[str], *, python: str = sys.executable) -> list[str]:
    """The whole command: this Python's JupyterLab, the options above, then the caller's own options."""
    return [python, "-m", "jupyterlab", *lab_options(), *extra]


def main(argv: list[str]) -> int:
    """Replace this process with JupyterLab (Ctrl-C stops it as if it had been started directly)."""
    command = lab_command(argv)
    print("Starting JupyterLab from the repository root, on lesson 00:", " ".join(command[1:]), flush=True)
    os.execv(command[0], command)
    return 0  # not reached: execv does not return


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
