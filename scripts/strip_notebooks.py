"""Strip outputs, execution counts and widget state from notebooks (what `make strip` and the pre-commit hook run).

    .venv/bin/python scripts/strip_notebooks.py notebooks            # strip in place, print the files it changed
    .venv/bin/python scripts/strip_notebooks.py --check notebooks    # change nothing; exit 1 if any needs stripping

`--check` exits 1 when a notebook has something to strip, so `make lint` fails on a notebook with outputs. The
pre-commit hook strips in place: pre-commit stops the commit because a file changed, and the stripped file is ready
to be added again.
"""

from __future__ import annotations

import argparse
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


def notebooks(paths: list[str]) -> list[Path]:
    """Every .ipynb under the given files or folders, checkpoints left out."""
    found: list[Path] = []
    for root in paths:
        candidates = sorted(Path(root).rglob("*.ipynb")) if Path(root).is_dir() else [Path(root)]
        found += [p for p in candidates if ".ipynb_checkpoints" not in p.parts]
    return found


def main(argv: list[str]) -> int:
    """Strip every notebook given, or with --check only report them (then 1 if any needs stripping)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="*", default=["notebooks"], help="notebooks or folders (default: notebooks)")
    parser.add_argument("--check", action="store_true", help="report the notebooks with outputs, change nothing")
    args = parser.parse_args(argv)
    dirty = []
    for path in notebooks(args.paths):
        before = path.read_text(encoding="utf-8")
        after = json.dumps(strip(json.loads(before)), indent=1, ensure_ascii=False) + "\n"
        if after != before:
            dirty.append(path)
            if args.check:
                print(f"has outputs or is not in the committed form: {path}")
            else:
                path.write_text(after, encoding="utf-8")
                print(f"stripped {path}")
    if dirty and args.check:
        print(f"{len(dirty)} notebook(s) to strip: run `make strip`", file=sys.stderr)
    return 1 if dirty and args.check else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
