"""A room of learners on one backend: N learners run lesson 06's questions at the same moment against one Ollama.

    .venv/bin/python -m bench.room                                # N = 10 and 30, on a private offline stand-in
    OLLAMA_HOST=http://gpu-box:11434 .venv/bin/python -m bench.room --learners 10 30 --chat-model llama3.2:3b

What each learner does is what lesson 06's RAG cell sends to the backend: embed the question (retrieval), then
stream the answer to the question with the retrieved chunks as numbered sources (the handbook is indexed once,
beforehand, as every learner's own lesson does before the cell). All learners press Run at the same moment; each asks
--questions questions in turn. Printed per N: the queue wait (time from pressing Run to the first piece of the answer)
p50/p95, the time to the last piece p50/p95, the whole room's time, and errors. Bounded: --learners at most 100, and
each N stops at --deadline seconds (a learner still waiting then counts as an error). Without OLLAMA_HOST (or --host)
a private stand-in is started on a free port and stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

import ollama
from qdrant_client import QdrantClient

from bench.common import load_note, private_stand_in, progress, table
from helpers.chunking import chunk_documents
from helpers.config import EMBED_MODEL, STAND_IN_CHAT_MODEL
from helpers.corpus import load_documents, load_questions
from helpers.index import index_chunks
from helpers.rag import build_messages, retrieve

COLLECTION = "handbook"
MAX_LEARNERS = 100


@dataclass
class Learner:
    """What one learner saw: seconds to the first and to the last piece of each answer, and any error."""

    first_piece: list[float] = field(default_factory=list)
    last_piece: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def lesson_prompts(client: ollama.Client, *, embed_model: str, count: int) -> list[tuple[str, list[dict]]]:
    """(question, chat messages) for the first `count` answerable questions, as lesson 06 builds them."""
    qdrant = QdrantClient(":memory:")
    docs, _ = load_documents()
    index_chunks(
        qdrant=qdrant, client=client, collection=COLLECTION, chunks=chunk_documents(docs), embed_model=embed_model
    )
    questions = [q["question"] for q in load_questions() if q["kind"] != "unanswerable"][:count]
    prompts = []
    for question in questions:
        hits = retrieve(qdrant=qdrant, client=client, collection=COLLECTION, query=question, embed_model=embed_model)
        prompts.append((question, build_messages(question, hits)))
    return prompts


def learner(
    host: str, prompts: list[tuple[str, list[dict]]], *, chat_model: str, embed_model: str, options: dict,
    start: threading.Event, deadline: float, seen: Learner,
) -> None:  # fmt: skip
    """One learner: for each question, embed it, then stream the answer; timings from pressing Run."""
    client = ollama.Client(host=host, timeout=max(1.0, deadline - time.monotonic()))
    start.wait()
    for question, messages in prompts:
        pressed = time.monotonic()
        first = None
        try:
            client.embed(model=embed_model, input=question)
            for piece in client.chat(model=chat_model, messages=messages, options=options, stream=True):
                if first is None and piece.message.content:
                    first = time.monotonic() - pressed
            if first is None:
                raise RuntimeError("the answer had no piece")
            seen.first_piece.append(first)
            seen.last_piece.append(time.monotonic() - pressed)
        except Exception as exc:  # every failure is counted and printed, never hidden
            seen.errors.append(f"{type(exc).__name__}: {exc}"[:200])
        if time.monotonic() > deadline:
            return


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of values, nearest rank; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def run_room(host: str, prompts: list[tuple[str, list[dict]]], *, learners: int, chat_model: str, embed_model: str,
             options: dict, deadline_s: float) -> tuple[list[Learner], float]:  # fmt: skip
    """All learners at once; (what each saw, the room's seconds). Learners still running at the deadline are errors."""
    start, deadline = threading.Event(), time.monotonic() + deadline_s
    seen = [Learner() for _ in range(learners)]
    threads = [
        threading.Thread(
            target=learner,
            args=(host, prompts),
            kwargs=dict(
                chat_model=chat_model, embed_model=embed_model, options=options, start=start, deadline=deadline, seen=s
            ),  # fmt: skip
            daemon=True,
        )
        for s in seen
    ]
    for t in threads:
        t.start()
    began = time.monotonic()
    start.set()
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    for t, s in zip(threads, seen):
        if t.is_alive():
            s.errors.append(f"still waiting at the deadline ({deadline_s:.0f} s)")
    return seen, time.monotonic() - began


def row(learners: int, questions: int, seen: list[Learner], seconds: float) -> list[str]:
    """One table row for N learners."""
    first = [x for s in seen for x in s.first_piece]
    last = [x for s in seen for x in s.last_piece]
    errors = sum(len(s.errors) for s in seen)
    return [
        str(learners),
        str(learners * questions),
        f"{percentile(first, 50):.1f}",
        f"{percentile(first, 95):.1f}",
        f"{percentile(last, 50):.1f}",
        f"{percentile(last, 95):.1f}",
        f"{seconds:.0f}",
        str(errors),
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the room for each N; print the table, the command's settings and the load."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--learners", type=int, nargs="+", default=[10, 30], help="room sizes N (default: 10 30)")
    parser.add_argument("--questions", type=int, default=2, help="questions each learner asks in turn (default 2)")
    parser.add_argument("--num-predict", type=int, default=32, help="answer tokens at most (default 32)")
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds per N before waiting counts as error")
    parser.add_argument("--host", default=os.environ.get("OLLAMA_HOST"), help="default: OLLAMA_HOST or a stand-in")
    parser.add_argument("--chat-model", default=None, help=f"default: {STAND_IN_CHAT_MODEL} on the stand-in")
    parser.add_argument("--embed-model", default=EMBED_MODEL)
    args = parser.parse_args(argv)
    if not all(1 <= n <= MAX_LEARNERS for n in args.learners):
        parser.error(f"--learners: each N must be between 1 and {MAX_LEARNERS}")
    options = {"num_predict": args.num_predict, "temperature": 0}
    with ExitStack() as stack:
        host = args.host or stack.enter_context(private_stand_in())
        chat_model = args.chat_model or STAND_IN_CHAT_MODEL
        progress(f"backend {host}: indexing the handbook once and building lesson 06's prompts")
        prompts = lesson_prompts(ollama.Client(host=host), embed_model=args.embed_model, count=args.questions)
        rows = []
        for n in args.learners:
            progress(f"{n} learners x {len(prompts)} questions at once ({load_note()})")
            seen, seconds = run_room(host, prompts, learners=n, chat_model=chat_model, embed_model=args.embed_model,
                                     options=options, deadline_s=args.deadline)  # fmt: skip
            rows.append(row(n, len(prompts), seen, seconds))
            for message in sorted({e for s in seen for e in s.errors})[:5]:
                print(f"  error (N={n}): {message}")
    header = ["learners", "answers", "wait p50 s", "wait p95 s", "done p50 s", "done p95 s", "room s", "errors"]
    print(table(header, rows))
    print(f"backend: {'stand-in (private)' if not args.host else args.host}, chat model {chat_model}; "
          f"num_predict {args.num_predict}; {load_note()}")  # fmt: skip
    print("wait = from pressing Run to the first piece of the answer (the embed call and the queue included)")
    return 1 if any(r[-1] != "0" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
