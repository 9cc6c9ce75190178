"""The workshop's knowledge base and question set (data/), and the document loader."""

from __future__ import annotations

import collections
import datetime as dt

import pytest
import yaml

from helpers.corpus import CORPUS_DIR, load_documents, load_questions, split_front_matter

KINDS = {"single", "numeric", "multi_doc", "recency", "unanswerable", "multi_turn"}


@pytest.fixture(scope="module")
def corpus():
    docs, skipped = load_documents()
    assert not skipped, skipped
    return {d.id: d for d in docs}


@pytest.fixture(scope="module")
def questions():
    return load_questions()


def test_every_file_has_complete_front_matter():
    for path in sorted(CORPUS_DIR.glob("*.md")):
        meta, body = split_front_matter(path.read_text(encoding="utf-8"))
        assert set(meta) >= {"id", "title", "category", "updated", "tags"}, path.name
        assert meta["id"] == path.stem, path.name
        assert isinstance(meta["updated"], dt.date) and isinstance(meta["tags"], list) and meta["tags"], path.name
        assert body.lstrip().startswith("# "), f"{path.name}: body should open with its H1 title"


def test_corpus_size_and_shape(corpus):
    words = {i: len(d.text.split()) for i, d in corpus.items()}
    assert 25 <= len(corpus) <= 40
    assert 25_000 <= sum(words.values()) <= 40_000
    assert max(words.values()) >= 5_000, "one long document makes chunk size and overlap matter"
    assert sum(w < 400 for w in words.values()) >= 3, "a few short documents"
    assert sum("|---" in d.text for d in corpus.values()) >= 8, "tables in at least 8 documents"
    assert any(d.metadata["category"] == "faq" for d in corpus.values())


def test_ids_unique(corpus, questions):
    assert len({q["id"] for q in questions}) == len(questions)
    assert len(corpus) == len(list(CORPUS_DIR.glob("*.md")))


def test_evidence_is_verbatim_in_a_gold_document(corpus, questions):
    for q in questions:
        assert set(q["doc_ids"]) <= set(corpus), q["id"]
        for sentence in q["evidence"]:
            assert any(sentence in corpus[d].text for d in q["doc_ids"]), (q["id"], sentence)


def test_question_fields(questions):
    for q in questions:
        assert q["kind"] in KINDS, q["id"]
        assert q["question"].strip() and q["answer"].strip(), q["id"]
        if q["kind"] == "unanswerable":
            assert q["doc_ids"] == [] and q["evidence"] == [], q["id"]
        else:
            assert q["doc_ids"] and q["evidence"], q["id"]


def test_every_kind_is_represented(questions):
    counts = collections.Counter(q["kind"] for q in questions)
    assert len(questions) >= 60
    assert all(counts[k] >= 5 for k in KINDS), counts
    conversations = collections.defaultdict(list)
    for q in questions:
        if q["kind"] == "multi_turn":
            conversations[q["conversation"]].append(q["turn"])
    assert len(conversations) >= 5
    assert all(sorted(t) == list(range(1, len(t) + 1)) and len(t) >= 2 for t in conversations.values())


def test_multi_doc_questions_need_two_documents(questions):
    assert all(len(q["doc_ids"]) >= 2 for q in questions if q["kind"] == "multi_doc")


def test_recency_gold_is_the_newer_policy(corpus, questions):
    old, new = corpus["field-travel-policy-2024"], corpus["field-travel-policy-2025"]
    assert old.metadata["updated"] < new.metadata["updated"]
    assert "supersede" in new.text.lower()
    for q in questions:
        if q["kind"] == "recency":
            assert "field-travel-policy-2025" in q["doc_ids"] and "field-travel-policy-2024" not in q["doc_ids"]


def test_loader_skips_and_reports_bad_files(tmp_path):
    (tmp_path / "good.md").write_text(
        "---\nid: g1\ntitle: Good\ncategory: faq\nupdated: 2025-01-02\ntags: [a]\n---\n# Good\nText.\n"
    )
    (tmp_path / "plain.txt").write_text("No front matter here, just text.\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "nested.md").write_text("# Nested title\nBody.\n")
    (tmp_path / "empty.md").write_text("---\nid: e\n---\n   \n")
    (tmp_path / "binary.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "badyaml.md").write_text("---\nid: [unclosed\n---\nText\n")
    (tmp_path / "unclosed.md").write_text("---\nid: x\nText without closing marker\n")
    (tmp_path / "zz-dup.md").write_text("---\nid: g1\n---\nSame id as good.md\n")
    (tmp_path / "slides.pdf").write_bytes(b"%PDF-1.4")
    (tmp_path / "slides.pptx").write_bytes(b"PK\x03\x04")
    with pytest.warns(UserWarning, match="skipped") as warned:
        docs, skipped = load_documents(tmp_path)
    by_id = {d.id: d for d in docs}
    assert set(by_id) == {"g1", "plain", "sub/nested"}
    assert by_id["g1"].metadata == {"category": "faq", "updated": "2025-01-02", "tags": ["a"], "path": "good.md"}
    assert by_id["sub/nested"].title == "Nested title" and by_id["plain"].metadata["category"] == "uncategorised"
    reasons = {s.path: s.reason for s in skipped}
    assert "empty" in reasons["empty.md"] and "binary" in reasons["binary.md"]
    assert "UTF-8" in reasons["latin1.txt"] and "YAML" in reasons["badyaml.md"]
    assert "closing" in reasons["unclosed.md"] and "duplicate" in reasons["zz-dup.md"]
    assert "damaged PDF" in reasons["slides.pdf"] and ".pptx" in reasons["slides.pptx"]
    assert len(warned) == len(skipped) == 8, "every skipped file is also a warning that names it"


def test_loader_rejects_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder of documents"):
        load_documents(tmp_path / "nope")


def test_front_matter_parser_plain_text():
    assert split_front_matter("hello") == ({}, "hello")
    with pytest.raises(yaml.YAMLError):
        split_front_matter("---\na: [\n---\nx")
