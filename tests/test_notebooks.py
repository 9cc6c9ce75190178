"""Committed notebooks: outputs stripped, names and structure as the conventions say (nbmake runs them)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
LESSONS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = sorted((NOTEBOOKS / "solutions").glob("*.ipynb"))


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def markdown(nb: dict) -> list[str]:
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]


def test_there_are_lessons():
    assert LESSONS and LESSONS[0].name == "00_setup-check.ipynb"
    numbers = [int(p.name[:2]) for p in LESSONS]
    assert numbers == list(range(len(numbers))), "lessons are numbered 00, 01, ... without gaps"


@pytest.mark.parametrize("path", LESSONS + SOLUTIONS, ids=lambda p: p.name)
def test_outputs_are_stripped(path):
    for cell in load(path)["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name}: run `make strip`"


@pytest.mark.parametrize("path", LESSONS + SOLUTIONS, ids=lambda p: p.name)
def test_name_convention(path):
    assert re.fullmatch(r"\d\d_[a-z0-9]+(-[a-z0-9]+)*(-solutions)?\.ipynb", path.name)


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_opening_and_closing(path):
    nb = load(path)
    first = "".join(nb["cells"][0]["source"])
    assert nb["cells"][0]["cell_type"] == "markdown" and first.startswith(f"# {path.name[:2]} ")
    assert re.search(r"^> \S", first, re.M), "a one-line > subtitle"
    learn = first.split("You will learn", 1)[1].split("Prerequisites", 1)[0] if "You will learn" in first else ""
    assert len(re.findall(r"^- ", learn, re.M)) == 3, "'You will learn' has 3 bullets"
    assert "Prerequisites" in first
    setup_cells = [c for c in nb["cells"] if c["cell_type"] == "code" and "setup()" in "".join(c["source"])]
    assert len(setup_cells) == 1 and nb["cells"][1] is setup_cells[0], "ONE setup cell, right after the opening"
    text = "\n".join(markdown(nb))
    for heading in ("## Summary", "## Exercises", "## Next"):
        assert heading in text, heading
    exercises = text.split("## Exercises", 1)[1].split("## Next", 1)[0]
    assert 2 <= len(re.findall(r"^\d+\. ", exercises, re.M)) <= 4, "2-4 exercises"
    solution = NOTEBOOKS / "solutions" / f"{path.stem}-solutions.ipynb"
    assert solution.exists() and f"solutions/{solution.name}" in exercises, "exercises link their solutions"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_code_cells_are_short(path):
    long = [
        len("".join(c["source"]).splitlines())
        for c in load(path)["cells"]
        if c["cell_type"] == "code" and len("".join(c["source"]).splitlines()) > 25
    ]
    assert not long, f"code cells of {long} lines: split them (aim for ~15)"


def test_every_solution_belongs_to_a_lesson():
    stems = {p.stem for p in LESSONS}
    assert {p.stem.removesuffix("-solutions") for p in SOLUTIONS} <= stems


def unasserted_failures(nb: dict) -> list[tuple[int, int]]:
    """(cell, line) of every `try ... except` outside a function with neither an `else` nor a later top-level `assert`."""
    found = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        code = "\n".join(line for line in "".join(cell["source"]).splitlines() if not line.lstrip().startswith("%"))
        tree = ast.parse(code)
        asserts = [n.lineno for n in tree.body if isinstance(n, ast.Assert)]  # e.g. the outcomes of a loop of tries
        stack: list[tuple[ast.AST, bool]] = [(tree, False)]
        while stack:
            node, in_function = stack.pop()
            for child in ast.iter_child_nodes(node):
                inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, ast.Try) and child.handlers and not child.orelse and not inside:
                    if not any(line > (child.end_lineno or child.lineno) for line in asserts):
                        found.append((index, child.lineno))
                stack.append((child, inside))
    return sorted(found)


PENDING_ELSE: set[str] = set()  # notebooks allowed to fail the check for now (issue 22, deliver 3): none


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, marks=pytest.mark.xfail(reason="try/except without else, being fixed"))
        if p.name in PENDING_ELSE
        else p
        for p in LESSONS + SOLUTIONS
    ],
    ids=lambda p: p.name,
)
def test_a_shown_failure_is_asserted(path):
    """A cell that shows an error with `try: ... except X: print(...)` fails (`else: raise`) when the error never comes."""
    assert unasserted_failures(load(path)) == [], (
        "add `else: raise AssertionError(...)` to these try blocks (cell, line)"
    )


def test_unasserted_failures_finds_a_try_without_else():
    cell = {"cell_type": "code", "source": ["try:\n", "    f()\n", "except ValueError as e:\n", "    print(e)\n"]}
    inside = {
        "cell_type": "code",
        "source": ["def g():\n", "    try:\n", "        f()\n", "    except ValueError:\n", "        pass\n"],
    }
    fixed = {
        "cell_type": "code",
        "source": [
            "try:\n",
            "    f()\n",
            "except ValueError:\n",
            "    pass\n",
            "else:\n",
            "    raise AssertionError\n",
        ],
    }
    looped = {
        "cell_type": "code",
        "source": [
            "seen = []\n",
            "for x in (1, 2):\n",
            "    try:\n",
            "        f(x)\n",
            "    except ValueError:\n",
            "        seen.append(x)\n",
            "assert seen == [1, 2]\n",
        ],
    }
    assert unasserted_failures({"cells": [cell, inside, fixed, looped]}) == [(0, 1)]
