"""helpers.embedders: which models get e5's `query: ` / `passage: ` prefixes, and who adds them (fast tier)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from qdrant_client import QdrantClient

from helpers.chunking import Chunk
from helpers.embedders import prefixes, with_prefix
from helpers.index import embed_texts, index_chunks
from helpers.rag import retrieve


@pytest.mark.parametrize(
    "name",
    [
        "multilingual-e5-small",
        "multilingual-e5-small:latest",
        "jeffh/intfloat-multilingual-e5-small:f16",
        "intfloat/multilingual-e5-base",
        "e5-large-v2",
        "Multilingual-E5-Small",
    ],
)
def test_e5_models_get_query_and_passage_prefixes(name):
    assert prefixes(name) == ("query: ", "passage: ")


@pytest.mark.parametrize(
    "name", ["all-minilm", "all-minilm:latest", "bge-m3", "nomic-embed-text", "mxbai-embed-large", "", "e50-test"]
)
def test_other_models_get_none(name):
    assert prefixes(name) == ("", "")


def test_instruct_e5_puts_an_instruction_on_queries_only():
    query, passage = prefixes("multilingual-e5-large-instruct")
    assert query.startswith("Instruct: ") and query.endswith("Query: ") and passage == ""


def test_with_prefix():
    assert with_prefix("multilingual-e5-small", ["a", "b"], as_query=True) == ["query: a", "query: b"]
    assert with_prefix("multilingual-e5-small", ["a"], as_query=False) == ["passage: a"]
    assert with_prefix("all-minilm", ["a"], as_query=True) == ["a"]


class Recorder:
    """Fast tier: a fake ollama client that records what it was asked to embed (hand-made 3-d vectors)."""

    def __init__(self) -> None:
        self.inputs: list[str] = []

    def embed(self, model: str, input: str | list[str]) -> SimpleNamespace:
        texts = [input] if isinstance(input, str) else list(input)
        self.inputs.extend(texts)
        return SimpleNamespace(embeddings=[[1.0, 0.0, 0.0] for _ in texts])


def test_indexing_and_retrieval_add_the_prefixes_lesson_code_never_writes():
    fake, qdrant = Recorder(), QdrantClient(":memory:")
    chunk = Chunk("d#0", "d", 0, "Онегин приехал в деревню.", {"title": "Глава"})
    index_chunks(fake, qdrant, "c", [chunk], embed_model="multilingual-e5-small")
    assert fake.inputs == ["passage: Глава\nОнегин приехал в деревню."]
    hits = retrieve(fake, qdrant, "c", "Куда приехал Онегин?", embed_model="multilingual-e5-small", hybrid=True)
    assert fake.inputs[-1] == "query: Куда приехал Онегин?" and hits[0].doc_id == "d"
    assert hits[0].payload["text"] == chunk.text, "the stored text carries no prefix"
    assert embed_texts(fake, ["x"], model="all-minilm", as_query=True) and fake.inputs[-1] == "x"
