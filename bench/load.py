"""Load on the served app: N concurrent chats x T turns over real HTTP on 127.0.0.1, against one offline stand-in.

    .venv/bin/python -m bench.load [--chats 16] [--turns 3] [--num-predict 48] [--queue-max 4] [--deadline 1800]

A private stand-in runs in a child process (bench.common); the app (app.service, indexing the handbook into
embedded Qdrant at start-up, history in a temporary SQLite file) is served by uvicorn in this process; the chats are
asyncio tasks with httpx, each asking the turns of one multi-turn conversation of data/questions.jsonl in order.
Printed: errors (must be 0), turns stored (must equal turns sent), p50/p95 time to first token as the client sees
it, and the whole server's answer tokens/s as a ratio to the stand-in's own single-stream tokens/s, measured first
in the same run with the same prompts and options. Bounded: the run stops at --deadline seconds (then it fails).
With --queue-max N (lesson 18's bounded generation queue, WORKSHOP_QUEUE_MAX) a turn past N answers at once is
turned away with 503 and Retry-After; the chat waits that long and asks again, as a polite client does. Printed too:
how many times turns were turned away, how fast (the 503's own latency), and the time to first token of the
admitted ones.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import ollama

from app.service import create_app
from bench.common import load_note, private_stand_in, progress, table
from helpers.corpus import load_questions
from helpers.history import HistoryStore
from helpers.rag import build_messages, retrieve
from infra.background import BackgroundServer
from tests.support.served import stand_in_config


def conversations(chats: int, turns: int) -> list[list[str]]:
    """`chats` lists of `turns` questions: the multi-turn conversations in order, padded with standalone questions."""
    convs = collections.defaultdict(list)
    standalone = []
    for q in load_questions():
        if q["kind"] == "multi_turn":
            convs[q["conversation"]].append(q)
        else:
            standalone.append(q["question"])
    ordered = [[q["question"] for q in sorted(c, key=lambda q: q["turn"])] for c in convs.values()]
    out = []
    for i in range(chats):
        questions = ordered[i % len(ordered)][:turns]
        out.append(questions + standalone[i * turns : i * turns + turns - len(questions)])
    return out


def single_stream_tps(service: object, questions: list[str]) -> tuple[float, int]:
    """The stand-in's own tokens/s, one stream at a time: the app's first-turn prompts sent straight to it."""
    svc = service.state.service
    client, tokens, seconds = ollama.Client(host=svc.cfg.ollama_host), 0, 0.0
    for question in questions:
        hits = retrieve(client, svc.qdrant, svc.collection, question, embed_model=svc.cfg.embed_model, k=svc.k)
        start = time.perf_counter()
        final = None
        for piece in client.chat(
            model=svc.cfg.chat_model, messages=build_messages(question, hits), stream=True, options=svc.options
        ):
            final = piece if piece.done else final
        seconds += time.perf_counter() - start
        tokens += final.eval_count or 0
    return tokens / seconds, tokens


async def one_turn(http: httpx.AsyncClient, chat_id: str, question: str) -> dict:
    """POST one question; the client-side time to first token, the done event, or the error (a 503: retry_after)."""
    start, ttft, done, error = time.perf_counter(), None, None, None
    try:
        async with http.stream("POST", f"/chat/{chat_id}", json={"question": question}) as response:
            if response.status_code == 503 and "Retry-After" in response.headers:
                await response.aread()
                return {"retry_after": float(response.headers["Retry-After"]), "busy_s": time.perf_counter() - start}
            if response.status_code != 200:
                return {"error": f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"}
            event = None
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    if event == "token" and ttft is None:
                        ttft = time.perf_counter() - start
                    elif event == "done":
                        done = json.loads(line[5:])
                    elif event == "error":
                        error = json.loads(line[5:])["message"]
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    if done is None and error is None:
        error = "the stream ended without a done event"
    return {"ttft": ttft, "done": done, "error": error}


async def load(url: str, convs: list[list[str]]) -> tuple[list[dict], float]:
    """Every chat at once, each asking its turns in order; (turn results, wall seconds)."""
    results: list[dict] = []

    async def chat(i: int, questions: list[str]) -> None:
        for question in questions:
            turned_away: list[float] = []  # the 503s' own latencies, before this turn was admitted
            while "retry_after" in (result := await one_turn(http, f"load-{i}", question)):
                turned_away.append(result["busy_s"])
                await asyncio.sleep(result["retry_after"])
            results.append({"chat": f"load-{i}", "turned_away": turned_away, **result})

    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=None) as http:
        await asyncio.gather(*(chat(i, qs) for i, qs in enumerate(convs)))
    return results, time.perf_counter() - start


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=16)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--num-predict", type=int, default=48, help="answer tokens at most, per turn")
    parser.add_argument("--k", type=int, default=4, help="chunks retrieved per question (the app's default: 4)")
    parser.add_argument("--baseline", type=int, default=3, help="single-stream generations measured first")
    parser.add_argument("--queue-max", type=int, default=0, help="answers at once before a 503 (0: unbounded)")
    parser.add_argument("--deadline", type=float, default=1800, help="seconds the load run may take at most")
    args = parser.parse_args(argv)
    convs = conversations(args.chats, args.turns)
    progress(f"{load_note()}; starting a private stand-in")
    with private_stand_in() as stand_in, tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        history = HistoryStore(Path(tmp) / "history.sqlite")
        service = create_app(stand_in_config(stand_in), history=history, options={"num_predict": args.num_predict})
        service.state.service.k = args.k
        service.state.service.limits.queue_max = args.queue_max  # lesson 18's bounded queue (0: unbounded)
        with BackgroundServer(service) as server:
            progress(
                f"app ready in {service.state.service.startup_s:.1f} s (indexing the handbook); "
                f"single-stream baseline over {args.baseline} generations"
            )
            tps_single, _ = single_stream_tps(service, [c[0] for c in convs[: args.baseline]])
            progress(f"{args.chats} chats x {args.turns} turns at once")
            results, wall = asyncio.run(asyncio.wait_for(load(server.url, convs), args.deadline))
            stored = sum(len(history.messages(f"load-{i}")) // 2 for i in range(len(convs)))
            failed = sum(len(history.rows(f"load-{i}")) for i in range(len(convs))) - 2 * stored
        history.close()
    errors = [r["error"] for r in results if r["error"]]
    ttfts = [r["ttft"] for r in results if r["ttft"] is not None]
    tokens = sum(r["done"]["completion_tokens"] for r in results if r["done"])
    sent = len(results)
    busy = [s for r in results for s in r["turned_away"]]
    busy_note = f", answered in p50 {statistics.median(busy) * 1000:.0f} ms" if busy else ""
    tps_server = tokens / wall
    rows = [
        ("chats x turns", f"{args.chats} x {args.turns} (k={args.k}, answers of at most {args.num_predict} tokens)"),
        ("generation queue", f"at most {args.queue_max} at once" if args.queue_max else "unbounded"),
        (
            "503s (Retry-After, then asked again)",
            f"{len(busy)} in {sum(bool(r['turned_away']) for r in results)} turns{busy_note}",
        ),
        ("errors", f"{len(errors)} (must be 0)"),
        ("turns stored / sent", f"{stored} / {sent} (must be equal); failed rows {failed}"),
        ("time to first token p50 / p95", f"{statistics.median(ttfts):.1f} s / {percentile(ttfts, 95):.1f} s"),
        ("server answer tokens/s", f"{tps_server:.1f} ({tokens} tokens in {wall:.0f} s)"),
        ("stand-in single stream tokens/s", f"{tps_single:.1f}"),
        ("ratio server / single stream", f"{tps_server / tps_single:.2f}"),
    ]
    print(table(("load on the served app", "result"), rows))
    print(f"({load_note()} at the end)")
    for error in errors[:5]:
        print("error:", error, file=sys.stderr)
    return 0 if not errors and stored == sent else 1


if __name__ == "__main__":
    sys.exit(main())
