"""Every relative link in the notebooks' markdown, README.md and data/README.md points at a file of the repository.

`make lab` serves JupyterLab from the repository root, so a link such as ../README.md in a notebook opens there too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|href=[\"']([^\"']+)[\"']")
FILES = sorted(ROOT.glob("notebooks/**/*.ipynb")) + [ROOT / "README.md", ROOT / "data" / "README.md"]


def markdown_of(path: Path) -> str:
    """A README's text, or a notebook's markdown cells joined (code cells can hold brackets that are not links)."""
    if path.suffix != ".ipynb":
        return path.read_text(encoding="utf-8")
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def relative_links(text: str) -> list[str]:
    """The link targets that are paths in this repository (no scheme, no bare #anchor), without their #fragment."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold no links
    targets = [a or b for a, b in LINK.findall(text)]
    return [unquote(t.split("#")[0]) for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and t.split("#")[0]]


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Links of one file that resolve to no file or folder inside root (JupyterLab's root under make lab)."""
    broken = []
    for target in relative_links(markdown_of(path)):
        resolved = (path.parent / target).resolve()
        if not resolved.is_relative_to(root) or not resolved.exists():
            broken.append(target)
    return broken


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    assert path.exists()
    assert broken_links(path) == [], f"{path.relative_to(ROOT)} links to files that do not exist"


def test_the_checker_finds_a_broken_link(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.md").write_text(
        "[ok](a.md) [web](https://example.org) [top](#x) [bad](b.md#y) [up](../../z.md)"
    )
    assert relative_links((tmp_path / "d" / "a.md").read_text()) == ["a.md", "b.md", "../../z.md"]
    assert broken_links(tmp_path / "d" / "a.md", root=tmp_path) == ["b.md", "../../z.md"]
