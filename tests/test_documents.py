"""Your own folder of documents (issue #23): CORPUS_DIR, the PDF and HTML loaders, collection names, sync_index.

Fast tier: real pypdf (PDFs written by tests/support/pdfs.py), real beautifulsoup4, real embedded Qdrant. The
embedder is a FAKE (FakeEmbedder: word hashing, no model) because these tests check what is stored and which
documents get embedded, not retrieval quality; tests/test_documents_served.py runs the real models over HTTP.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from qdrant_client import QdrantClient

from helpers.chunking import chunk_documents
from helpers.config import SettingsError, read_settings
from helpers.corpus import CORPUS_DIR, collection_name, load_documents
from helpers.documents import html_text
from helpers.index import SyncCounts, index_chunks, sync_index
from tests.support.pdfs import write_broken_pdf, write_pdf

HTML = """<!doctype html><html><head><title>Boiler room</title><style>p { color: red }</style>
<script>var secret = "do not index";</script></head><body>
<nav>Home</nav><h1>Boiler room rules</h1><p>Wear <b>ear protection</b>
   at all times.</p><h2>Keys</h2><ul><li>Red key: boiler</li><li>Blue key: pumps</li></ul></body></html>"""


class FakeEmbedder:
    """A FAKE ollama client for the fast tier: 16-d vectors from word hashes; counts the texts it embedded."""

    def __init__(self, size: int = 16) -> None:
        self.size, self.texts = size, []

    def embed(self, *, model: str, input: str | list[str]) -> SimpleNamespace:
        texts = [input] if isinstance(input, str) else list(input)
        self.texts.extend(texts)
        return SimpleNamespace(embeddings=[self.vector(t) for t in texts])

    def vector(self, text: str) -> list[float]:
        v = [0.0] * self.size
        for word in text.lower().split():
            v[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.size] += 1.0
        norm = math.sqrt(sum(x * x for x in v)) or 1.0
        return [x / norm for x in v]


def mixed_folder(root: Path) -> Path:
    """md, txt, a 3-page PDF (page 2 blank), an HTML page, and six files that cannot be read."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "notes.md").write_text("---\ntitle: Notes\n---\n# Notes\n\nThe sauna opens at 18:00.\n", encoding="utf-8")
    (root / "plain.txt").write_text("The supply ship comes on Tuesdays.\n", encoding="utf-8")
    write_pdf(root / "report.pdf", ["Annual report\nIntroduction.", "", "The boiler code is KX-42."])
    (root / "boiler.html").write_text(HTML, encoding="utf-8")
    write_broken_pdf(root / "broken.pdf")
    write_pdf(root / "locked.pdf", ["secret"], password="pw")
    write_pdf(root / "scan.pdf", ["", ""])
    (root / "empty.txt").write_text("", encoding="utf-8")
    (root / "latin1.txt").write_bytes("Caf\xe9 menu\n".encode("latin-1"))
    (root / "plain2.txt").write_text("The supply ship comes on Tuesdays.\n", encoding="utf-8")
    (root / "slides.pptx").write_bytes(b"PK\x03\x04")
    return root


def load_quietly(folder: Path | None = None) -> tuple[list, list]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_documents(folder)


def test_a_mixed_folder_loads_every_readable_type_and_reports_every_other_file(tmp_path):
    folder = mixed_folder(tmp_path / "docs")
    with pytest.warns(UserWarning) as caught:
        docs, skipped = load_documents(folder)
    assert {d.id for d in docs} == {"notes", "plain", "report/p1", "report/p3", "boiler"}
    reasons = {s.path: s.reason for s in skipped}
    assert set(reasons) == {
        "broken.pdf",
        "locked.pdf",
        "scan.pdf",
        "empty.txt",
        "latin1.txt",
        "plain2.txt",
        "slides.pptx",
    }
    assert "damaged PDF" in reasons["broken.pdf"] and "password" in reasons["locked.pdf"]
    assert "no text" in reasons["scan.pdf"] and "OCR" in reasons["scan.pdf"]
    assert reasons["empty.txt"] == "empty file" and "not UTF-8" in reasons["latin1.txt"]
    assert "plain.txt" in reasons["plain2.txt"] and ".pptx" in reasons["slides.pptx"]
    warned = [str(w.message) for w in caught]
    assert all(any(w.startswith(f"skipped {path} ") for w in warned) for path in reasons), warned


def test_a_pdf_gives_one_document_per_page_with_text_titled_with_the_page(tmp_path):
    docs, _ = load_quietly(mixed_folder(tmp_path / "docs"))
    page3 = next(d for d in docs if d.id == "report/p3")
    assert page3.title == "report.pdf p. 3" and page3.metadata["page"] == 3 and page3.metadata["path"] == "report.pdf"
    assert "KX-42" in page3.text and "Introduction" not in page3.text
    chunks = chunk_documents([page3])
    assert chunks and all(c.metadata["title"] == "report.pdf p. 3" for c in chunks)


def test_html_keeps_headings_as_markdown_and_drops_scripts_and_styles():
    title, text = html_text(HTML)
    assert title == "Boiler room"
    assert "# Boiler room rules" in text.splitlines() and "## Keys" in text.splitlines()
    assert "Wear ear protection at all times." in text and "- Red key: boiler" in text
    assert "secret" not in text and "color" not in text


def test_html_sections_become_chunk_sections(tmp_path):
    docs, _ = load_quietly(mixed_folder(tmp_path / "docs"))
    page = next(d for d in docs if d.id == "boiler")
    sections = {c.metadata["section"] for c in chunk_documents([page])}
    assert "Boiler room rules > Keys" in sections


def test_corpus_dir_setting_is_what_load_documents_reads_by_default(tmp_path, monkeypatch):
    folder = mixed_folder(tmp_path / "docs")
    monkeypatch.delenv("CORPUS_DIR", raising=False)
    assert read_settings().corpus_dir is None
    handbook, _ = load_quietly()
    assert len(handbook) == len(list(CORPUS_DIR.glob("*.md")))
    monkeypatch.setenv("CORPUS_DIR", str(folder))
    assert read_settings().corpus_dir == folder.resolve()
    docs, _ = load_quietly()
    assert "report/p3" in {d.id for d in docs}


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p / "file.txt"])
def test_corpus_dir_that_is_no_folder_is_a_settings_error_naming_the_fix(tmp_path, monkeypatch, make):
    path = make(tmp_path)
    (tmp_path / "file.txt").write_text("x", encoding="utf-8")
    monkeypatch.setenv("CORPUS_DIR", str(path))
    with pytest.raises(SettingsError, match="CORPUS_DIR=.*set CORPUS_DIR to a folder"):
        read_settings()


def test_collection_names_differ_per_corpus_and_embedder_and_are_qdrant_safe(tmp_path, monkeypatch):
    monkeypatch.delenv("CORPUS_DIR", raising=False)
    assert collection_name(embed_model="all-minilm") == "handbook-all-minilm"
    assert collection_name(CORPUS_DIR, embed_model="all-minilm") == "handbook-all-minilm"
    assert collection_name(None, embed_model="multilingual-e5-small") == "handbook-multilingual-e5-small"
    a, b = tmp_path / "a" / "My Docs", tmp_path / "b" / "My Docs"
    names = {collection_name(p, embed_model=m) for p in (a, b) for m in ("all-minilm", "nomic-embed-text:latest")}
    assert len(names) == 4
    assert all(n.startswith("my-docs-") and set(n) <= set("abcdefghijklmnopqrstuvwxyz0123456789-") for n in names)
    assert collection_name(a, embed_model="all-minilm") == collection_name(str(a), embed_model="all-minilm")
    a.mkdir(parents=True)
    monkeypatch.setenv("CORPUS_DIR", str(a))
    assert collection_name(embed_model="all-minilm") == collection_name(a, embed_model="all-minilm"), (
        "as load_documents"
    )


def stored_doc_ids(qdrant: QdrantClient, collection: str) -> set[str]:
    points, _ = qdrant.scroll(collection, limit=10_000, with_payload=["doc_id"])
    return {p.payload["doc_id"] for p in points}


def test_sync_index_embeds_new_and_changed_documents_only_and_deletes_removed_ones(tmp_path):
    folder = mixed_folder(tmp_path / "docs")
    client, qdrant, name = FakeEmbedder(), QdrantClient(":memory:"), "sync"
    first = sync_index(client, qdrant, name, chunk_documents(load_quietly(folder)[0]), embed_model="fake")
    assert first == SyncCounts(added=5, updated=0, deleted=0, unchanged=0)
    assert stored_doc_ids(qdrant, name) == {"notes", "plain", "report/p1", "report/p3", "boiler"}

    client.texts.clear()
    again = sync_index(client, qdrant, name, chunk_documents(load_quietly(folder)[0]), embed_model="fake")
    assert again == SyncCounts(added=0, updated=0, deleted=0, unchanged=5)
    assert client.texts == ["vector size check"], "a second run embeds nothing"

    (folder / "plain.txt").unlink()
    (folder / "notes.md").write_text("# Notes\n\nThe sauna opens at 19:00 now.\n", encoding="utf-8")
    (folder / "new.txt").write_text("A new document about kayaks.\n", encoding="utf-8")
    client.texts.clear()
    changed = sync_index(client, qdrant, name, chunk_documents(load_quietly(folder)[0]), embed_model="fake")
    assert changed == SyncCounts(added=2, updated=1, deleted=1, unchanged=3)  # plain2.txt is no duplicate any more
    assert stored_doc_ids(qdrant, name) == {"notes", "new", "plain2", "report/p1", "report/p3", "boiler"}
    embedded = " ".join(client.texts[1:])
    assert "19:00" in embedded and "kayaks" in embedded and "KX-42" not in embedded


def test_sync_index_drops_the_tail_of_a_shrunk_document_and_rebuilds_on_another_vector_size(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "long.md").write_text("# Long\n\n" + "\n\n".join(f"Paragraph {i}. " * 40 for i in range(8)))
    client, qdrant = FakeEmbedder(), QdrantClient(":memory:")
    sync_index(client, qdrant, "c", chunk_documents(load_quietly(folder)[0]), embed_model="fake")
    assert qdrant.count("c").count > 2
    (folder / "long.md").write_text("# Long\n\nShort now.\n")
    counts = sync_index(client, qdrant, "c", chunk_documents(load_quietly(folder)[0]), embed_model="fake")
    assert counts == SyncCounts(added=0, updated=1, deleted=0, unchanged=0) and qdrant.count("c").count == 1
    bigger = FakeEmbedder(size=24)
    counts = sync_index(bigger, qdrant, "c", chunk_documents(load_quietly(folder)[0]), embed_model="fake-24")
    assert counts.added == 1 and qdrant.get_collection("c").config.params.vectors.size == 24


def test_an_index_made_by_index_chunks_is_recognised_as_unchanged(tmp_path):
    client, qdrant = FakeEmbedder(), QdrantClient(":memory:")
    chunks = chunk_documents(load_quietly(mixed_folder(tmp_path / "docs"))[0])
    index_chunks(client, qdrant, "c", chunks, embed_model="fake")
    assert sync_index(client, qdrant, "c", chunks, embed_model="fake").unchanged == 5
