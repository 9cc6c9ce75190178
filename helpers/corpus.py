"""Read a folder of Markdown / text documents and the workshop's question set. Taught in 03_chunking.ipynb."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
CORPUS_DIR = DATA_DIR / "corpus"
QUESTIONS_FILE = DATA_DIR / "questions.jsonl"
SUFFIXES = {".md", ".txt"}


@dataclass(frozen=True)
class Document:
    """One document: its id, title, body text (front matter removed) and metadata."""

    id: str
    title: str
    text: str
    metadata: dict = field(default_factory=dict)  # category, updated (YYYY-MM-DD), tags, path


@dataclass(frozen=True)
class Skipped:
    """A file that was not loaded, and why."""

    path: str
    reason: str


def split_front_matter(raw: str) -> tuple[dict, str]:
    """Split '---\\nyaml\\n---\\nbody' into (metadata, body); no front matter gives ({}, raw)."""
    if not raw.startswith("---"):
        return {}, raw
    end = raw.find("\n---", 3)
    if end == -1:
        raise ValueError("front matter starts with '---' but has no closing '---' line")
    meta = yaml.safe_load(raw[3:end]) or {}
    if not isinstance(meta, dict):
        raise ValueError("front matter is not a 'key: value' mapping")
    return meta, raw[end + 4 :].lstrip("\n")


def _title(meta: dict, body: str, path: Path) -> str:
    """Front-matter title, else the first '# ' heading, else the file name."""
    if meta.get("title"):
        return str(meta["title"])
    for line in body.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem.replace("-", " ").replace("_", " ")


def read_document(path: Path, *, root: Path) -> Document:
    """One file as a Document; ValueError says why it cannot be used."""
    data = path.read_bytes()
    if b"\x00" in data:
        raise ValueError("binary file (contains NUL bytes)")
    try:
        raw = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        meta, body = split_front_matter(raw)
    except yaml.YAMLError as exc:
        raise ValueError(f"front matter is not valid YAML: {exc}") from exc
    if not body.strip():
        raise ValueError("empty document (no text after the front matter)")
    updated = meta.get("updated")
    if isinstance(updated, (dt.date, dt.datetime)):
        updated = updated.isoformat()[:10]
    tags = meta.get("tags") or []
    metadata = {
        "category": str(meta.get("category") or "uncategorised"),
        "updated": str(updated) if updated else None,
        "tags": [str(t) for t in (tags if isinstance(tags, list) else [tags])],
        "path": str(path.relative_to(root)),
    }
    doc_id = str(meta.get("id") or path.relative_to(root).with_suffix("").as_posix())
    return Document(id=doc_id, title=_title(meta, body, path), text=body, metadata=metadata)


def load_documents(folder: str | Path = CORPUS_DIR) -> tuple[list[Document], list[Skipped]]:
    """Every .md/.txt file under folder, sorted by path; files that can't be used are skipped and reported."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of documents: point it at a folder of .md or .txt files")
    docs, skipped, seen = [], [], set()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = str(path.relative_to(root))
        if path.name.startswith(".") or path.name.lower() == "readme.md":
            continue
        if path.suffix.lower() not in SUFFIXES:
            skipped.append(Skipped(rel, f"not a .md or .txt file ({path.suffix or 'no suffix'})"))
            continue
        try:
            doc = read_document(path, root=root)
        except (OSError, ValueError) as exc:
            skipped.append(Skipped(rel, str(exc)))
            continue
        if doc.id in seen:
            skipped.append(Skipped(rel, f"duplicate id {doc.id!r}"))
            continue
        seen.add(doc.id)
        docs.append(doc)
    return docs, skipped


def load_questions(path: str | Path = QUESTIONS_FILE) -> list[dict]:
    """The question set: one JSON object per line (id, question, answer, doc_ids, evidence, kind, ...)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
