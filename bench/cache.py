"""Latency with and without each cache of lesson 18, side by side in one run, through the served app over real HTTP.

    .venv/bin/python -m bench.cache [--questions 4] [--num-predict 32] [--deadline 900]

A private stand-in runs in a child process (bench.common); the app is served by uvicorn in this process. The same
standalone questions of data/questions.jsonl are asked, each in a new chat, with: no cache; the query-embedding
cache (warmed first); the answer cache (each question asked twice, the second timed). Printed: p50 time to first
token and p50 whole answer as the client sees them, and the model calls per answer. Then the semantic cache on the
handbook's standalone questions: per threshold, its hits and the wrong answers it would serve, and a lookup's time.
Bounded: the run stops at --deadline seconds (then it fails).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from app.service import create_app
from bench.common import load_note, private_stand_in, progress, table
from bench.load import one_turn
from helpers.cache import SemanticCache, TurnCaches, semantic_cache_errors
from helpers.corpus import load_questions
from helpers.history import HistoryStore
from infra.background import BackgroundServer
from tests.support.served import stand_in_config

THRESHOLDS = (0.7, 0.8, 0.9, 0.95)


DEADLINE = [float("inf")]  # time.monotonic() by which the run must be done (main sets it)


def ask_all(url: str, questions: list[str], prefix: str) -> list[dict]:
    """Each question once, one after the other, each in a new chat (bench.load.one_turn); TimeoutError past DEADLINE."""

    async def asks() -> list[dict]:
        async with httpx.AsyncClient(base_url=url, timeout=None) as http:
            return [await one_turn(http, f"{prefix}-{i}", q) for i, q in enumerate(questions)]

    return asyncio.run(asyncio.wait_for(asks(), max(1.0, DEADLINE[0] - time.monotonic())))


def row(name: str, results: list[dict], calls: int) -> tuple[str, str, str, str]:
    """A table row: p50 TTFT, p50 whole answer (from the done events), model calls per answer."""
    errors = [r["error"] for r in results if r["error"]]
    if errors:
        raise RuntimeError(f"{name}: {errors[0]}")
    ttft = statistics.median(r["ttft"] for r in results)
    total = statistics.median(r["done"]["total_s"] for r in results)
    return name, f"{ttft * 1000:.0f} ms", f"{total * 1000:.0f} ms", f"{calls / len(results):.0f}"


def run(url: str, svc: Any, questions: list[str]) -> list[tuple[str, str, str, str]]:
    """The three settings, in the same run on the same app; model calls counted from the done events."""
    rows = []
    svc.caches = None
    plain = ask_all(url, questions, "plain")
    rows.append(row("no cache", plain, sum(1 for r in plain if not r["done"].get("cached"))))
    svc.caches = TurnCaches(answers=False)
    for q in questions:  # warm the query-embedding cache only (no answer generated)
        svc.turn().retrieve(q)
    embedded = ask_all(url, questions, "embed")
    rows.append(row("query-embedding cache (warm)", embedded, sum(1 for r in embedded if not r["done"].get("cached"))))
    svc.caches = TurnCaches(answers=True)
    ask_all(url, questions, "first")
    hits = ask_all(url, questions, "again")
    rows.append(row("answer cache (hit)", hits, sum(1 for r in hits if not r["done"].get("cached"))))
    return rows


def semantic_rows(svc: Any) -> tuple[list[tuple[str, str, str]], float, int]:
    """Per threshold: hits and wrong answers served on the standalone questions; a lookup's time in ms."""
    single = [q for q in load_questions() if "conversation" not in q]
    vectors = svc.client.embed(model=svc.cfg.embed_model, input=[q["question"] for q in single]).embeddings
    answers = [q["answer"] for q in single]
    rows = []
    for t in THRESHOLDS:
        m = semantic_cache_errors(vectors, answers, threshold=t)
        rows.append((f"{t:.2f}", f"{m['hits']} / {m['questions']}", f"{m['wrong']} ({m['wrong_rate']:.0%})"))
    cache = SemanticCache(threshold=0.9)
    for v, q in zip(vectors, answers, strict=True):
        cache.store(v, q, q)
    start = time.perf_counter()
    cache.lookup(svc.client.embed(model=svc.cfg.embed_model, input=single[0]["question"]).embeddings[0])
    return rows, (time.perf_counter() - start) * 1000, len(single)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cache", description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--num-predict", type=int, default=32, help="answer tokens at most")
    parser.add_argument("--deadline", type=float, default=900, help="seconds the run may take at most")
    args = parser.parse_args(argv)
    questions = [q["question"] for q in load_questions() if "conversation" not in q][: args.questions]
    progress(f"{load_note()}; starting a private stand-in")
    DEADLINE[0] = time.monotonic() + args.deadline
    with private_stand_in() as stand_in, tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        history = HistoryStore(Path(tmp) / "history.sqlite")
        service = create_app(
            stand_in_config(stand_in), history=history, options={"num_predict": args.num_predict}, guardrails=False
        )
        svc = service.state.service
        svc.k = 2
        with BackgroundServer(service) as server:
            progress(f"app ready in {svc.startup_s:.1f} s; {len(questions)} questions per setting")
            rows = run(server.url, svc, questions)
            semantic, lookup_ms, n = semantic_rows(svc)
        history.close()
    print(table(("cache", "p50 time to first token", "p50 whole answer", "model calls per answer"), rows))
    print()
    print(table(("semantic cache threshold", "hits", "wrong answers served"), semantic))
    print(f"(a semantic lookup: one embedding + cosine over {n} questions, {lookup_ms:.1f} ms)")
    print(f"({load_note()} at the end; k=2, answers of at most {args.num_predict} tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
