"""scripts/timings.py: the README's agenda column is rewritten between its markers, only for the lessons measured."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("timings", ROOT / "scripts" / "timings.py")
timings = importlib.util.module_from_spec(spec)
spec.loader.exec_module(timings)

README = """intro
<!-- timings:start -->
| # | notebook | Run All, full mode | Run All, fast mode |
|---|---|---|---|
| 00 | [a](notebooks/00_a.ipynb) | 3 s | 2 s |
| 01 | [b](notebooks/01_b.ipynb) | 20 s | 9 s |

Full mode: old full note

Fast mode: old fast note
<!-- timings:end -->

after
"""


def test_table_rewrites_only_the_measured_rows_of_the_modes_column_and_its_note():
    out = timings.table(README, {"01_b.ipynb": 130.0}, "new note", mode="fast")
    assert "| 00 | [a](notebooks/00_a.ipynb) | 3 s | 2 s |" in out
    assert "| 01 | [b](notebooks/01_b.ipynb) | 20 s | 2.2 min |" in out, "only the fast-mode cell of the row ran"
    assert "Fast mode: new note" in out and "old fast note" not in out and "Full mode: old full note" in out
    assert out.startswith("intro\n") and out.endswith("\nafter\n")
    assert timings.table(out, {"01_b.ipynb": 130.0}, "new note", mode="fast") == out, "rewriting is idempotent"
    full = timings.table(out, {"00_a.ipynb": 400.0}, "full note", mode="full")
    assert "| 00 | [a](notebooks/00_a.ipynb) | 6.7 min | 2 s |" in full and "Full mode: full note" in full
    assert full.index("Full mode:") < full.index("Fast mode:")


def test_a_table_without_the_modes_column_is_an_error():
    with pytest.raises(ValueError, match="full mode"):
        timings.table(README.replace("Run All, full mode", "time"), {"00_a.ipynb": 1.0}, "n", mode="full")


def test_the_readme_has_the_markers_and_a_row_per_lesson():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split(timings.START, 1)[1].split(timings.END, 1)[0]
    lessons = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert len(lessons) >= 18 and all(f"(notebooks/{name})" in block for name in lessons)
    assert "Run All, full mode" in block and "Run All, fast mode" in block
    assert timings.human(21.4) == "21 s" and timings.human(250) == "4.2 min"
