"""The stand-in's two embedding models side by side: all-minilm vs multilingual-e5-small, chunks/s and memory.

.venv/bin/python -m bench.stand_in --embedders [--rounds 3]   (or: python -m bench.embedders)
"""

from __future__ import annotations

import statistics
import sys

import httpx
import ollama

from bench.common import E5_MODEL, load_note, private_stand_in, progress, rss_mb, table
from bench.stand_in import embed_batches, timed
from helpers.chunking import chunk_documents
from helpers.config import EMBED_MODEL
from helpers.corpus import load_documents
from helpers.index import embed_texts


def compare_embedders(rounds: int = 3, embed_chunks: int = 320, batch_size: int = 32) -> str:
    """all-minilm vs multilingual-e5-small on a private stand-in: chunks/s (as passages) and resident memory."""
    load_at_start = load_note()
    chunks = chunk_documents(load_documents()[0])
    texts = [t for b in embed_batches(chunks, embed_chunks, batch_size) for t in b]
    with private_stand_in() as url:
        client = ollama.Client(host=url)
        pid = int(httpx.get(url + "/api/version", timeout=10).json()["pid"])
        memory = {"started (chat model and all-minilm loaded)": rss_mb(pid)}
        client.embed(model=E5_MODEL, input="passage: warm-up")
        memory["multilingual-e5-small loaded"] = rss_mb(pid)
        speed: dict[str, list[float]] = {EMBED_MODEL: [], E5_MODEL: []}
        for i in range(rounds):
            order = [EMBED_MODEL, E5_MODEL] if i % 2 == 0 else [E5_MODEL, EMBED_MODEL]
            for model in order:
                progress(f"embedders round {i + 1}/{rounds}: {model}")
                speed[model].append(
                    len(texts)
                    / timed(lambda m=model: embed_texts(client, texts, model=m, batch_size=batch_size, progress=False))
                )
        memory[f"after {rounds} rounds of {len(texts)} chunks with both"] = rss_mb(pid)
    rows = [[m, f"{statistics.median(v):.1f} [{min(v):.1f}-{max(v):.1f}]"] for m, v in speed.items()]
    rows += [[f"stand-in memory (MB), {k}", f"{v:.0f}"] for k, v in memory.items()]
    head = (
        f"The stand-in's embedding models over HTTP: {len(texts)} workshop chunks in batches of {batch_size}, "
        f"{rounds} rounds, medians\nmeasured under {load_at_start} at the start, {load_note()} at the end\n\n"
    )
    return head + table(["model", "chunks/s [min-max] / MB"], rows)


if __name__ == "__main__":
    print(compare_embedders(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
