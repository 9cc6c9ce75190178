"""Embed chunks and keep them in Qdrant. embed_texts taught in 04_embeddings.ipynb; the rest in 05_vector-search.ipynb
(the BM25 text index that ensure_collection adds: 11_hybrid-search.ipynb)."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Sequence

import ollama
from qdrant_client import QdrantClient, models
from tqdm.auto import tqdm

from helpers.chunking import Chunk
from helpers.embedders import with_prefix
from helpers.hybrid import TEXT_FIELD, TEXT_INDEX, stem_text

PROGRESS_AFTER_S = 3.0  # index_chunks shows a progress bar once embedding has taken this long
ID_NAMESPACE = uuid.UUID("6f1c2a4e-9b7d-4e1a-8c3f-2d5e7a9b0c1d")  # fixed: the same chunk id gives the same point id


# Payload fields that filters use: a server indexes them (embedded Qdrant scans every point, which is fine when small).
PAYLOAD_INDEXES = {
    "doc_id": models.PayloadSchemaType.KEYWORD,  # re-indexing deletes a document's stale chunks by doc_id
    "category": models.PayloadSchemaType.KEYWORD,
    "updated": models.PayloadSchemaType.DATETIME,  # "YYYY-MM-DD" strings: filter with models.DatetimeRange
    "chunk_index": models.PayloadSchemaType.INTEGER,
}


class VectorSizeMismatchError(ValueError):
    """A collection holds vectors of another size than the embedding model makes."""


def embed_texts(
    client: ollama.Client,
    texts: Sequence[str],
    *,
    model: str,
    batch_size: int = 32,
    progress: bool | None = None,
    as_query: bool = False,
) -> list[list[float]]:
    """Embed texts in batches, prefixed for the model (helpers.embedders); a tqdm bar: True always, None after 3 s."""
    texts = with_prefix(model, list(texts), as_query=as_query)
    vectors: list[list[float]] = []
    starts = range(0, len(texts), batch_size)
    bar = tqdm(
        starts,
        desc=f"embedding {len(texts)} texts with {model}",
        unit="batch",
        disable=progress is False,
        delay=0 if progress else PROGRESS_AFTER_S,
    )
    for start in bar:
        vectors.extend(
            list(v) for v in client.embed(model=model, input=list(texts[start : start + batch_size])).embeddings
        )
    return vectors


def point_id(chunk_id: str) -> str:
    """A deterministic UUID for a chunk id, so re-indexing overwrites instead of duplicating."""
    return str(uuid.uuid5(ID_NAMESPACE, chunk_id))


def embedding_text(chunk: Chunk) -> str:
    """What gets embedded: the document title, then the chunk text."""
    return f"{chunk.metadata.get('title', '')}\n{chunk.text}".strip()


def ensure_collection(
    qdrant: QdrantClient, name: str, *, size: int, distance: models.Distance = models.Distance.COSINE
) -> None:
    """Create the collection if missing (with the BM25 text index); raise VectorSizeMismatchError on another size."""
    if qdrant.collection_exists(name):
        info = qdrant.get_collection(name)
        vectors = info.config.params.vectors
        existing = vectors.size if isinstance(vectors, models.VectorParams) else None
        if existing != size:
            raise VectorSizeMismatchError(
                f"Collection {name!r} holds {existing}-d vectors but the embedding model makes {size}-d vectors "
                f"(did EMBED_MODEL change?). Delete it with qdrant.delete_collection({name!r}) and index again, "
                "or use a new collection name."
            )
        ensure_text_index(qdrant, name, info.payload_schema)  # an older collection gets its BM25 index here
        return
    qdrant.create_collection(name, vectors_config=models.VectorParams(size=size, distance=distance))
    with warnings.catch_warnings():  # embedded Qdrant ignores payload indexes (and says so); a server uses them
        warnings.simplefilter("ignore", UserWarning)
        for key, schema in PAYLOAD_INDEXES.items():
            qdrant.create_payload_index(name, key, field_schema=schema)
    ensure_text_index(qdrant, name, {})


def ensure_text_index(qdrant: QdrantClient, name: str, schema: dict | None = None) -> None:
    """Create the BM25 full-text index on the chunk text unless the collection's payload schema shows it."""
    info = (schema if schema is not None else qdrant.get_collection(name).payload_schema).get(TEXT_FIELD)
    params = getattr(info, "params", None)
    if isinstance(params, models.TextIndexParams) and params.scoring:
        return  # a server reports its indexes; embedded Qdrant reports none, and creating it again costs nothing
    qdrant.create_payload_index(name, TEXT_FIELD, field_schema=TEXT_INDEX, wait=True)


def chunk_payload(chunk: Chunk) -> dict:
    """The payload stored with a chunk's vector."""
    meta = chunk.metadata
    return {
        "chunk_id": chunk.id,
        "doc_id": chunk.doc_id,
        "chunk_index": chunk.index,
        "text": chunk.text,
        "title": meta.get("title"),
        "category": meta.get("category"),
        "updated": meta.get("updated"),
        "tags": meta.get("tags", []),
        "section": meta.get("section", ""),
    }


def index_payload(chunk: Chunk) -> dict:
    """chunk_payload plus the text BM25 reads (title + chunk text, as embedded, stemmed): what index_chunks stores."""
    return {**chunk_payload(chunk), TEXT_FIELD: stem_text(embedding_text(chunk))}


def index_chunks(
    client: ollama.Client,
    qdrant: QdrantClient,
    collection: str,
    chunks: Sequence[Chunk],
    *,
    embed_model: str,
    batch_size: int = 32,
    progress: bool | None = None,
) -> int:
    """Embed and upsert chunks with deterministic ids; drop a document's stale tail chunks. Returns points written."""
    vectors = embed_texts(
        client, [embedding_text(c) for c in chunks], model=embed_model, batch_size=batch_size, progress=progress
    )
    if not vectors:
        return 0
    ensure_collection(qdrant, collection, size=len(vectors[0]))
    points = [
        models.PointStruct(id=point_id(c.id), vector=v, payload=index_payload(c)) for c, v in zip(chunks, vectors)
    ]
    for start in range(0, len(points), 256):
        qdrant.upsert(collection, points=points[start : start + 256], wait=True)
    counts: dict[str, int] = {}
    for c in chunks:
        counts[c.doc_id] = max(counts.get(c.doc_id, 0), c.index + 1)
    for doc_id, n in counts.items():  # a document that shrank leaves no stale chunks behind
        qdrant.delete(
            collection,
            points_selector=models.Filter(
                must=[
                    models.FieldCondition(key="doc_id", match=models.MatchValue(value=doc_id)),
                    models.FieldCondition(key="chunk_index", range=models.Range(gte=n)),
                ]
            ),
            wait=True,
        )
    return len(points)


def collection_vector_size(qdrant: QdrantClient, collection: str) -> int | None:
    """The vector size a collection was created with (None: missing, or named vectors)."""
    if not qdrant.collection_exists(collection):
        return None
    vectors = qdrant.get_collection(collection).config.params.vectors
    return vectors.size if isinstance(vectors, models.VectorParams) else None


def has_text_field(qdrant: QdrantClient, collection: str) -> bool:
    """True unless the collection's points lack TEXT_FIELD (indexed before the BM25 text was stemmed)."""
    points, _ = qdrant.scroll(collection, limit=1, with_payload=True, with_vectors=False)
    return not points or TEXT_FIELD in (points[0].payload or {})


def ensure_index(
    client: ollama.Client,
    qdrant: QdrantClient,
    collection: str,
    chunks: Sequence[Chunk],
    *,
    embed_model: str,
    recreate: bool = True,
    progress: bool | None = None,
) -> int:
    """Index the chunks unless the collection already holds each of them with vectors of the embedder's size.

    A collection with vectors of another size (EMBED_MODEL changed) is deleted and indexed again (recreate=False:
    VectorSizeMismatchError saying the fix); one whose points lack the stemmed BM25 text (indexed before stemming) is
    indexed again in place. Returns the points written (0: the index was already complete).
    """
    size = collection_vector_size(qdrant, collection)
    if size is not None:
        want = len(client.embed(model=embed_model, input="vector size check").embeddings[0])
        if size != want:
            if not recreate:
                raise VectorSizeMismatchError(
                    f"Collection {collection!r} holds {size}-d vectors but {embed_model} makes {want}-d vectors "
                    f"(did EMBED_MODEL change?). Delete it with qdrant.delete_collection({collection!r}) and index "
                    "again, or use a new collection name."
                )
            qdrant.delete_collection(collection)
        elif qdrant.count(collection).count == len(chunks) and has_text_field(qdrant, collection):
            return 0
    return index_chunks(client, qdrant, collection, chunks, embed_model=embed_model, progress=progress)
