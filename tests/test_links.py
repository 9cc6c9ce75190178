"""Every relative link in the notebooks' markdown and the project's Markdown docs points at a file of the repository.

A `#fragment` into a Markdown file must name one of its headings (GitHub's anchors). `make lab` serves JupyterLab
from the repository root, so a link such as ../README.md in a notebook opens there too: that is checked in a real
browser by tests/test_lab_links_browser.py; this file checks the targets on disk.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|href=[\"']([^\"']+)[\"']")
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "data" / "README.md", *sorted(ROOT.glob("docs/*.md"))]
NOTEBOOKS = [p for p in sorted(ROOT.glob("notebooks/**/*.ipynb")) if ".ipynb_checkpoints" not in p.parts]
FILES = NOTEBOOKS + DOCS


def markdown_of(path: Path) -> str:
    """A README's text, or a notebook's markdown cells joined (code cells can hold brackets that are not links)."""
    if path.suffix != ".ipynb":
        return path.read_text(encoding="utf-8")
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def relative_links(text: str, *, keep_fragment: bool = False) -> list[str]:
    """The link targets that are paths in this repository (no scheme, no bare #anchor), with or without #fragment."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold no links
    targets = [unquote(a or b) for a, b in LINK.findall(text)]
    targets = [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and t.split("#")[0]]
    return targets if keep_fragment else [t.split("#")[0] for t in targets]


def anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lowercase, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors_of(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (outside code blocks)."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {anchor(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, flags=re.M)}


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Links of one file that resolve to no file or folder inside root, or to no heading of a Markdown file."""
    broken = []
    for target in relative_links(markdown_of(path), keep_fragment=True):
        file, _, fragment = target.partition("#")
        resolved = (path.parent / file).resolve()
        if not resolved.is_relative_to(root) or not resolved.exists():
            broken.append(target)
        elif fragment and resolved.suffix == ".md" and fragment not in anchors_of(resolved):
            broken.append(target)
    return broken


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    assert path.exists()
    assert broken_links(path) == [], f"{path.relative_to(ROOT)} links to files that do not exist"


def test_the_checker_finds_a_broken_link(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.md").write_text(
        "# Guardrails (lesson 15)\n[ok](a.md) [web](https://example.org) [top](#x) [bad](b.md#y) [up](../../z.md)\n"
        "[here](a.md#guardrails-lesson-15) [gone](a.md#agenda)"
    )
    text = (tmp_path / "d" / "a.md").read_text()
    assert relative_links(text) == ["a.md", "b.md", "../../z.md", "a.md", "a.md"]
    assert broken_links(tmp_path / "d" / "a.md", root=tmp_path) == ["b.md#y", "../../z.md", "a.md#agenda"]
