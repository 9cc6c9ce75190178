"""A book in two languages with its question sets (data/books/onegin), scored by passage. Taught in
12_your-documents.ipynb."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import ollama
from qdrant_client import QdrantClient

from helpers.chunking import Chunk
from helpers.corpus import DATA_DIR, Document, load_documents, load_questions
from helpers.evaluation import retrieval_scores
from helpers.index import embed_texts
from helpers.rag import search

ONEGIN_DIR = DATA_DIR / "books" / "onegin"
LANGUAGES = ("ru", "en")


def load_book(language: str, *, chapters: Sequence[str] | None = None, folder: Path = ONEGIN_DIR) -> list[Document]:
    """The book's chapters in one language ("ru" or "en"), all of them or only the chapter ids given ("01", ...)."""
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, not {language!r}")
    docs, skipped = load_documents(folder / language)
    if skipped:
        raise ValueError(f"unreadable chapters in {folder / language}: {skipped}")
    return [d for d in docs if chapters is None or d.id in chapters]


def load_book_questions(
    language: str, *, held_out: bool = False, chapters: Sequence[str] | None = None, folder: Path = ONEGIN_DIR
) -> list[dict]:
    """The question set in one language (held_out: the 5 questions lesson 12 never shows), optionally by chapter."""
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, not {language!r}")
    questions = load_questions(folder / f"{'heldout' if held_out else 'questions'}-{language}.jsonl")
    return [q for q in questions if chapters is None or set(q["doc_ids"]) <= set(chapters)]


def squeeze(text: str) -> str:
    """Runs of whitespace as one space: a quote spanning two lines matches a chunk however its lines were joined."""
    return re.sub(r"\s+", " ", text).strip()


def passage_ids(chunks: Sequence[Chunk], question: dict) -> set[str]:
    """The ids of the chunks that hold one of the question's evidence quotes, in one of its gold documents."""
    quotes = [squeeze(e) for e in question["evidence"]]
    return {c.id for c in chunks if c.doc_id in question["doc_ids"] and any(q in squeeze(c.text) for q in quotes)}


def passage_scores(
    client: ollama.Client,
    qdrant: QdrantClient,
    collection: str,
    questions: Sequence[dict],
    chunks: Sequence[Chunk],
    *,
    embed_model: str,
    hybrid: bool = False,
) -> list[dict]:
    """One row per question: hit@k, MRR and nDCG@10 of the chunks retrieved for it against its evidence chunks."""
    vectors = embed_texts(client, [q["question"] for q in questions], model=embed_model, as_query=True)
    rows = []
    for question, vector in zip(questions, vectors):
        hits = search(qdrant, collection, vector, question["question"], k=10, hybrid=hybrid)
        gold = passage_ids(chunks, question)
        rows.append({"id": question["id"], **retrieval_scores([h.chunk_id for h in hits], gold)})
    return rows
