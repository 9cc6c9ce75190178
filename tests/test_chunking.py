"""helpers.chunking on the workshop corpus: sizes, overlap, section metadata, stable ids, offline token counts."""

from __future__ import annotations

import socket

import pytest

from helpers.chunking import chunk_documents, count_tokens, minilm_tokenizer
from helpers.corpus import Document, load_documents

# Chunk counts of the committed corpus. If you changed the corpus or the splitter on purpose, update these
# (and re-read the numbers the lessons print); if you did not, something changed the chunks under you.
EXPECTED_COUNTS = {(200, 40): 458, (200, 0): 456, (100, 20): 699}


@pytest.fixture(scope="module")
def docs() -> list[Document]:
    docs, skipped = load_documents()
    assert not skipped, skipped
    return docs


@pytest.fixture(scope="module")
def chunks(docs):
    return chunk_documents(docs)


def shared_text(a: str, b: str) -> str:
    """The longest end of a that is also the start of b."""
    return next((b[:n] for n in range(min(len(a), len(b)), 0, -1) if a.endswith(b[:n])), "")


def long_section_doc(lines: int = 60) -> Document:
    """One section of many short lines: far longer than a chunk, so it must be split with overlap."""
    body = "\n".join(
        f"Hut {i} keeps its kettle number {i} on shelf {i % 7}, descaled on day {i % 28 + 1}." for i in range(lines)
    )
    return Document(id="long", title="Long", text=f"# Long\n\n## Kettles\n\n{body}\n", metadata={"category": "test"})


@pytest.mark.parametrize(("size", "overlap"), sorted(EXPECTED_COUNTS))
def test_chunk_counts_are_stable_for_the_corpus(docs, size, overlap):
    assert len(chunk_documents(docs, chunk_size=size, chunk_overlap=overlap)) == EXPECTED_COUNTS[size, overlap]


@pytest.mark.parametrize("size", [60, 100, 200])
def test_no_chunk_exceeds_chunk_size_tokens(docs, size):
    sized = chunk_documents(docs, chunk_size=size, chunk_overlap=size // 5)
    assert max(count_tokens(c.text) for c in sized) <= size
    assert all(c.text.strip() for c in sized), "no empty chunks"


def test_default_chunks_fit_the_embedder_with_their_title(chunks):
    # what gets embedded is "title\ntext" plus [CLS]/[SEP]; all-MiniLM-L6-v2 truncates beyond 256 tokens
    assert max(count_tokens(f"{c.metadata['title']}\n{c.text}") + 2 for c in chunks) <= 256


def test_consecutive_chunks_of_a_long_section_overlap():
    doc = long_section_doc()
    with_overlap = chunk_documents([doc], chunk_size=100, chunk_overlap=30)
    assert len(with_overlap) >= 5
    shared = [shared_text(a.text, b.text) for a, b in zip(with_overlap, with_overlap[1:])]
    assert all(count_tokens(s) >= 10 for s in shared), shared
    assert all(count_tokens(s) <= 30 for s in shared), "overlap stays within chunk_overlap tokens"


def test_no_overlap_when_chunk_overlap_is_zero():
    doc = long_section_doc()
    without = chunk_documents([doc], chunk_size=100, chunk_overlap=0)
    assert len(without) >= 5
    assert not any(shared_text(a.text, b.text) for a, b in zip(without, without[1:]))
    # without overlap the chunks are the section, cut into pieces: every line appears exactly once
    assert sum(c.text.count("Hut ") for c in without) == 60


def test_overlap_on_the_real_long_document(docs):
    handbook = [d for d in docs if d.id == "field-safety-handbook"]

    def pairs_sharing(overlap: int) -> tuple[int, int]:
        chunks = chunk_documents(handbook, chunk_size=200, chunk_overlap=overlap)
        pairs = [(a, b) for a, b in zip(chunks, chunks[1:]) if a.metadata["section"] == b.metadata["section"]]
        return sum(len(shared_text(a.text, b.text)) >= 10 for a, b in pairs), len(pairs)

    shared, pairs = pairs_sharing(40)
    assert pairs >= 10 and shared >= pairs // 2
    assert pairs_sharing(0)[0] == 0


def test_section_headings_land_in_metadata(chunks):
    by_id = {c.id: c for c in chunks}
    assert all({"title", "category", "updated", "tags", "path", "section"} <= set(c.metadata) for c in chunks)
    drive = [c for c in chunks if c.doc_id == "vehicle-fleet" and "## Who may drive" in c.text]
    assert [c.metadata["section"] for c in drive] == ["Vehicle Fleet > Who may drive"]
    nested = [c for c in chunks if c.text.startswith("### 1.4 Who must read it")]
    assert len(nested) == 1 and nested[0].metadata["section"].count(" > ") == 2
    assert nested[0].metadata["section"].endswith(" > 1.4 Who must read it")
    for c in chunks:  # a chunk that opens with headings sits in the section they name, the last one innermost
        opening = []
        for line in c.text.splitlines():
            if not line.startswith("#"):
                break
            opening.append(line.lstrip("#").strip())
        path = c.metadata["section"].split(" > ")
        if opening:
            assert set(opening) <= set(path) and path[-1] == opening[-1], (c.id, opening, path)
        assert c.metadata["section"], (
            f"{c.id}: every corpus document opens with an H1, so no chunk is outside a section"
        )
    assert by_id["vehicle-fleet#0"].metadata["section"] == "Vehicle Fleet"


def test_a_document_without_headings_has_an_empty_section():
    doc = Document(id="plain", title="plain", text="Just one line of text.", metadata={})
    [chunk] = chunk_documents([doc])
    assert chunk.id == "plain#0" and chunk.metadata["section"] == "" and chunk.text == "Just one line of text."


def test_ids_are_unique_and_deterministic(docs, chunks):
    again = chunk_documents(docs)
    assert [(c.id, c.text, c.metadata) for c in chunks] == [(c.id, c.text, c.metadata) for c in again]
    assert len({c.id for c in chunks}) == len(chunks)
    per_doc: dict[str, list[int]] = {}
    for c in chunks:
        assert c.id == f"{c.doc_id}#{c.index}"
        per_doc.setdefault(c.doc_id, []).append(c.index)
    assert set(per_doc) == {d.id for d in docs}, "every document gives at least one chunk"
    assert all(indexes == list(range(len(indexes))) for indexes in per_doc.values())


def test_sentence_cuts_keep_their_full_stop(docs):
    small = chunk_documents(docs, chunk_size=60, chunk_overlap=0)
    assert not [c.id for c in small if c.text.startswith(".")]


def test_count_tokens_works_offline_and_agrees_with_the_tokenizer(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network access attempted while counting tokens")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    minilm_tokenizer.cache_clear()  # load tokenizer.json again, now with the network cut
    text = "Halvorsen Ridge Station: snowmobile SM-03 has a 120 km range."
    encoding = minilm_tokenizer().encode(text)
    assert encoding.tokens[0] == "[CLS]" and encoding.tokens[-1] == "[SEP]"
    assert count_tokens(text) == len(encoding.ids) - 2 == 17
    assert encoding.tokens[1:4] == ["hal", "##vor", "##sen"], "MiniLM's WordPiece vocabulary, lowercased"
    assert count_tokens("") == 0
    assert minilm_tokenizer().get_vocab_size() == 30522


def test_chunk_sizes_are_keyword_only():
    """chunk_documents(docs, *, chunk_size, chunk_overlap): a size passed by position is an error, not a guess."""
    doc = Document("d", "D", "Some text.")
    with pytest.raises(TypeError):
        chunk_documents([doc], 100, 20)  # type: ignore[misc]
