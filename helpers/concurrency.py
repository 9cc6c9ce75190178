"""Independent calls at the same time, at most `limit` at once. Taught in 18_team-service.ipynb.

Embedding batches do not depend on each other, nor does a follow-up's rewrite (the chat model) on a search for the
question as asked (the embedder, then Qdrant): the async ollama client sends them together and a semaphore bounds
how many are in flight, so a crowd of calls cannot swamp the backend. In a notebook, `await` these directly (the
kernel's event loop is already running); in a script, asyncio.run(main()).

    vectors = await embed_batches(aclient, texts, model=cfg.embed_model, batch_size=8, limit=2)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from qdrant_client import QdrantClient

from helpers.history import rewrite_query
from helpers.rag import Hit, search

T = TypeVar("T")


@dataclass
class InFlight:
    """Counts the calls running now and the most at once (what the semaphore bounds)."""

    now: int = 0
    most: int = 0
    log: list[str] = field(default_factory=list)

    def enter(self) -> None:
        """One more call running."""
        self.now += 1
        self.most = max(self.most, self.now)

    def leave(self) -> None:
        """One call finished."""
        self.now -= 1


async def bounded_gather(aws: Iterable[Awaitable[T]], *, limit: int, in_flight: InFlight | None = None) -> list[T]:
    """Await every awaitable concurrently, at most `limit` at once; the results in the given order."""
    if limit < 1:
        raise ValueError(f"limit={limit}: allow at least 1 call at once")
    semaphore, seen = asyncio.Semaphore(limit), in_flight or InFlight()

    async def one(aw: Awaitable[T]) -> T:
        async with semaphore:
            seen.enter()
            try:
                return await aw
            finally:
                seen.leave()

    return list(await asyncio.gather(*(one(aw) for aw in aws)))


def batches(texts: list[str], *, size: int) -> list[list[str]]:
    """texts cut into lists of at most `size`."""
    return [texts[i : i + size] for i in range(0, len(texts), size)]


async def embed_batches(
    aclient: Any,
    texts: list[str],
    *,
    model: str,
    batch_size: int = 16,
    limit: int = 2,
    in_flight: InFlight | None = None,
) -> list[list[float]]:
    """Every text's vector, its batches embedded concurrently (at most `limit` at once) by the async client."""
    calls = [aclient.embed(model=model, input=batch) for batch in batches(texts, size=batch_size)]
    responses = await bounded_gather(calls, limit=limit, in_flight=in_flight)
    return [list(v) for r in responses for v in r.embeddings]


async def embed_batches_sequential(aclient: Any, texts: list[str], *, model: str, batch_size: int = 16) -> list:
    """The same vectors, one batch after the other: what embed_batches is measured against."""
    vectors: list[list[float]] = []
    for batch in batches(texts, size=batch_size):
        vectors += [list(v) for v in (await aclient.embed(model=model, input=batch)).embeddings]
    return vectors


async def search_async(
    aclient: Any, qdrant: QdrantClient, collection: str, query: str, *, embed_model: str, k: int = 4
) -> list[Hit]:
    """Embed the query with the async client, then search Qdrant in a worker thread (its client is synchronous)."""
    vector = (await aclient.embed(model=embed_model, input=query)).embeddings[0]
    return await asyncio.to_thread(search, qdrant, collection, list(vector), query, k=k)


async def rewrite_and_search(
    client: Any,
    aclient: Any,
    qdrant: QdrantClient,
    collection: str,
    question: str,
    *,
    history: list[dict],
    chat_model: str,
    embed_model: str,
    k: int = 4,
    concurrent: bool = True,
) -> tuple[str, list[Hit]]:
    """(the follow-up's standalone rewrite, the hits for the question as asked): two independent calls.

    The rewrite is lesson 07's rewrite_query (the sync client, in a worker thread); the search uses the async client.
    concurrent=False runs them one after the other, to measure the difference.
    """
    rewrite = asyncio.to_thread(rewrite_query, client, question, history=history, model=chat_model)
    found = search_async(aclient, qdrant, collection, question, embed_model=embed_model, k=k)
    if not concurrent:
        return await rewrite, await found
    query, hits = await asyncio.gather(rewrite, found)
    return query, hits
