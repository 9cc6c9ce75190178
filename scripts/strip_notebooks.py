"""Strip outputs, execution counts and widget state from notebooks (what `make strip` runs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def strip(nb: dict) -> dict:
    """The notebook without outputs, execution counts or volatile metadata."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cell.get("metadata", {}).pop("execution", None)
    nb.get("metadata", {}).pop("widgets", None)
    return nb


def main(paths: list[str]) -> int:
    """Strip every .ipynb under the given paths in place; print the ones that changed."""
    for root in paths or ["notebooks"]:
        for path in sorted(Path(root).rglob("*.ipynb")) if Path(root).is_dir() else [Path(root)]:
            if ".ipynb_checkpoints" in path.parts:
                continue
            before = path.read_text(encoding="utf-8")
            after = json.dumps(strip(json.loads(before)), indent=1, ensure_ascii=False) + "\n"
            if after != before:
                path.write_text(after, encoding="utf-8")
                print(f"stripped {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
