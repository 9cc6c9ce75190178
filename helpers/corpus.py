"""Read a folder of documents (Markdown, text, PDF, HTML) and the workshop's question set. Taught in 03_chunking.ipynb.

A PDF becomes one Document per page with text (title "report.pdf p. 3", so a citation names the page); an HTML page
one Document with its headings as Markdown "#" lines. CORPUS_DIR (helpers/config.py) picks the folder.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from helpers.config import read_settings

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
CORPUS_DIR = DATA_DIR / "corpus"
QUESTIONS_FILE = DATA_DIR / "questions.jsonl"
TEXT_SUFFIXES = {".md", ".txt"}
SUFFIXES = TEXT_SUFFIXES | {".pdf", ".html", ".htm"}
DEFAULT_COLLECTION = "handbook"  # the collection of data/corpus, before the embedder's name


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


def decode_text(data: bytes) -> str:
    """Bytes of a text file as str; ValueError for binary or non-UTF-8 content."""
    if not data.strip():
        raise ValueError("empty file")
    if b"\x00" in data:
        raise ValueError("binary file (contains NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason} at byte {exc.start}): save it as UTF-8") from exc


def read_document(path: Path, *, root: Path) -> Document:
    """One Markdown or text file as a Document; ValueError says why it cannot be used."""
    raw = decode_text(path.read_bytes())
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


def read_file(path: Path, *, root: Path) -> list[Document]:
    """The Documents of one file (a PDF gives one per page with text); ValueError says why it cannot be used."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":  # helpers.documents imports this module: imported here, when first needed
        from helpers.documents import read_pdf

        return read_pdf(path, root=root)
    if suffix in {".html", ".htm"}:
        from helpers.documents import read_html

        return [read_html(path, root=root)]
    return [read_document(path, root=root)]


def corpus_folder(folder: str | Path | None = None) -> Path:
    """folder if given, else CORPUS_DIR when set, else the workshop's handbook (data/corpus)."""
    if folder is not None:
        return Path(folder).expanduser()
    return read_settings().corpus_dir or CORPUS_DIR


def load_documents(folder: str | Path | None = None) -> tuple[list[Document], list[Skipped]]:
    """Every .md/.txt/.pdf/.html file under folder (default: corpus_folder()), sorted by path.

    A file that can't be used (empty, not UTF-8, damaged or encrypted or text-less PDF, duplicate, other type) is
    never dropped silently: it is in the skipped list with the reason, and a UserWarning names it.
    """
    root = corpus_folder(folder)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} is not a folder of documents: point it at a folder of .md, .txt, .pdf or .html files"
        )
    docs: list[Document] = []
    skipped: list[Skipped] = []
    ids: set[str] = set()
    contents: dict[str, str] = {}  # sha256 of a file's bytes -> the first file with them
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = str(path.relative_to(root))
        if path.name.startswith(".") or path.name.lower() == "readme.md":
            continue
        if path.suffix.lower() not in SUFFIXES:
            skipped.append(Skipped(rel, f"not a .md, .txt, .pdf or .html file ({path.suffix or 'no suffix'})"))
            continue
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest in contents:
                raise ValueError(f"duplicate: the same bytes as {contents[digest]}")
            found = read_file(path, root=root)
        except (OSError, ValueError) as exc:
            skipped.append(Skipped(rel, str(exc)))
            continue
        contents[digest] = rel
        if clash := [d.id for d in found if d.id in ids]:
            skipped.append(Skipped(rel, f"duplicate id {clash[0]!r}"))
            continue
        ids.update(d.id for d in found)
        docs.extend(found)
    for s in skipped:
        warnings.warn(f"skipped {s.path} in {root}: {s.reason}", UserWarning, stacklevel=2)
    return docs, skipped


def collection_name(corpus_dir: str | Path | None = None, *, embed_model: str) -> str:
    """The Qdrant collection for a folder (default: corpus_folder()) and an embedder: switching never mixes vectors.

    data/corpus gives "handbook-<model>"; another folder "<folder>-<8 hex of its absolute path>-<model>".
    Only lowercase letters, digits and "-".
    """
    model = _safe_name(embed_model.removesuffix(":latest")) or "embedder"
    folder = corpus_folder(corpus_dir).resolve()
    if folder == CORPUS_DIR.resolve():
        return f"{DEFAULT_COLLECTION}-{model}"
    digest = hashlib.sha256(str(folder).encode("utf-8")).hexdigest()[:8]
    return f"{_safe_name(folder.name)[:40] or 'corpus'}-{digest}-{model}"


def _safe_name(text: str) -> str:
    """text as lowercase letters, digits and single hyphens."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def load_questions(path: str | Path = QUESTIONS_FILE) -> list[dict]:
    """The question set: one JSON object per line (id, question, answer, doc_ids, evidence, kind, ...)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
