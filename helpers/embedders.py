"""What an embedding model wants in front of a text: e5 models were trained with `query: ` / `passage: ` prefixes.

One table, read by helpers.index.embed_texts (as_query=...) and retrieval, so lesson code never writes a prefix.
"""

from __future__ import annotations

import re

# (pattern matched against the model name, query prefix, passage prefix); the first match wins, no match: no prefix.
# `multilingual-e5-small` is the stand-in's name; on a real Ollama the same model is e.g.
# `jeffh/intfloat-multilingual-e5-small:f16`; every e5 model (intfloat/e5-*, multilingual-e5-*) uses the same pair.
# bge-m3, all-minilm and nomic-style names are deliberately absent: bge-m3 and MiniLM want no prefix.
INSTRUCT_QUERY = "Instruct: Given a question, retrieve passages that answer it\nQuery: "
PREFIXES: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"e5.*instruct", re.IGNORECASE), INSTRUCT_QUERY, ""),  # multilingual-e5-large-instruct: queries only
    (re.compile(r"(^|[/_:-])(multilingual-)?e5([-_:]|$)", re.IGNORECASE), "query: ", "passage: "),
)


def prefixes(model: str) -> tuple[str, str]:
    """(query prefix, passage prefix) for an embedding model name; ("", "") when it wants none."""
    for pattern, query, passage in PREFIXES:
        if pattern.search(model or ""):
            return query, passage
    return "", ""


def with_prefix(model: str, texts: list[str], *, as_query: bool) -> list[str]:
    """The texts as the model expects them: a query or passage prefix added when the model was trained with one."""
    query, passage = prefixes(model)
    prefix = query if as_query else passage
    return [prefix + t for t in texts] if prefix else list(texts)
