"""scripts/timings.py: the README's agenda column is rewritten between its markers, only for the lessons measured."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("timings", ROOT / "scripts" / "timings.py")
timings = importlib.util.module_from_spec(spec)
spec.loader.exec_module(timings)

README = """intro
<!-- timings:start -->
| # | notebook | time |
|---|---|---|
| 00 | [a](notebooks/00_a.ipynb) | 2 s |
| 01 | [b](notebooks/01_b.ipynb) | 9 s |

old note
<!-- timings:end -->

after
"""


def test_table_rewrites_only_the_measured_rows_and_the_note():
    out = timings.table(README, {"01_b.ipynb": 130.0}, "new note")
    assert "| 00 | [a](notebooks/00_a.ipynb) | 2 s |" in out and "| 01 | [b](notebooks/01_b.ipynb) | 2.2 min |" in out
    assert "new note" in out and "old note" not in out and out.startswith("intro\n") and out.endswith("\nafter\n")
    assert timings.table(out, {"01_b.ipynb": 130.0}, "new note") == out, "rewriting is idempotent"


def test_the_readme_has_the_markers_and_a_row_per_lesson():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split(timings.START, 1)[1].split(timings.END, 1)[0]
    lessons = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb") if p.name[:2] <= "10")
    assert all(f"(notebooks/{name})" in block for name in lessons)
    assert timings.human(21.4) == "21 s" and timings.human(250) == "4.2 min"
