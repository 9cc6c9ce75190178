"""The README is a front door that tells the truth: short, every setting listed, the agenda's total and tracks summed."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def agenda_minutes() -> dict[str, int]:
    """Lesson number -> minutes in class, from the agenda table's 'time in class' column."""
    block = README.split("<!-- timings:start -->", 1)[1].split("<!-- timings:end -->", 1)[0]
    rows = [line for line in block.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    column = header.index("time in class")
    minutes = {}
    for row in rows[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        minutes[cells[0]] = int(cells[column].removesuffix(" min"))
    return minutes


def lessons_of(spec: str) -> list[str]:
    """'00, 01, 03' or '00-12' (or a mix) as the numbers of the lessons that exist (the agenda lists exactly those)."""
    numbers: list[str] = []
    for part in re.findall(r"\d\d(?:-\d\d)?", spec):
        first, _, last = part.partition("-")
        numbers += [f"{n:02d}" for n in range(int(first), int(last or first) + 1)]
    existing = {p.name[:2] for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    return [n for n in numbers if n in existing]


def test_the_readme_is_at_most_250_lines():
    assert len(README.splitlines()) <= 250


def test_the_agenda_lists_every_lesson_and_the_stated_total_is_its_sum():
    minutes = agenda_minutes()
    lessons = sorted(p.name[:2] for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(minutes) == lessons
    total = sum(minutes.values())
    stated = re.search(r"Time in class: (\d+) minutes \((\d+) h (\d+) min\) for all (\d+) lessons", README)
    assert stated, "the README states the total time in class"
    assert int(stated[1]) == total and int(stated[2]) * 60 + int(stated[3]) == total and int(stated[4]) == len(lessons)
    part1 = re.search(r"Part 1 \(00-10\) is (\d+) minutes", README)
    part2 = re.search(r"Part 2 \(11-(\d\d)\) (\d+) minutes", README)
    assert part1 and part2 and part2[1] == lessons[-1], "Part 2 runs from 11 to the last lesson"
    assert int(part1[1]) == sum(minutes[n] for n in lessons_of("00-10"))
    assert int(part2[2]) == sum(minutes[n] for n in lessons_of(f"11-{part2[1]}"))


def test_each_track_states_the_sum_of_its_lessons():
    minutes = agenda_minutes()
    block = README.split("### Tracks", 1)[1].split("\n\n", 2)[1]
    rows = [line for line in block.splitlines() if line.startswith("|")][2:]
    assert [r.split("|")[1].strip().split(" ")[0] for r in rows] == ["half", "full", "two"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        days = cells[1].split(";")
        stated = [int(m) for m in re.findall(r"(\d+)", cells[2].removesuffix(" min"))]
        assert [sum(minutes[n] for n in lessons_of(day)) for day in days] == stated, row


def test_every_setting_read_in_config_is_in_the_readme_table():
    config = (ROOT / "helpers" / "config.py").read_text(encoding="utf-8")
    # env.get("NAME") and the typed readers that take (env, "NAME"), e.g. _flag(env, "WORKSHOP_FAST", ...)
    names = set(re.findall(r"""(?:env(?:iron)?\.get\(|\(env,)\s*["']([A-Z][A-Z0-9_]+)["']""", config))
    assert {"OLLAMA_HOST", "QDRANT_URL", "WORKSHOP_FAST"} <= names, "the pattern still finds the settings"
    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    missing = sorted(n for n in names if f"| `{n}` |" not in table)
    assert not missing, f"add these to the README's configuration table, with their defaults: {missing}"


def test_no_false_claims_of_the_old_readme_remain():
    assert "Eleven" not in README and "3.5 hours with breaks" not in README
