"""Lesson 06's two headline behaviours over the question set: citations and refusals, per variant, side by side.

    .venv/bin/python -m bench.answers [--limit N] [--variants lesson06,json,...] [--k 5] [--num-predict 80]
                                      [--threads N] [--host URL --model M]

A private stand-in runs in a child process (bench.common); --host uses another Ollama API instead. The handbook is
indexed into embedded Qdrant, each question retrieves k chunks once, and every variant answers from the same chunks:
`lesson06` is helpers.rag's build_messages (plain text, [n] citations, the refusal sentence asked for in the prompt),
the prompt of the chat app and the service; `example` a candidate with a worked example; `json` is
helpers.rag.answer_grounded without a gate (an Ollama `format` schema whose sources are an enum of the given chunk
ids); `json+answerable` adds an "answerable" boolean to the schema; `gate+json` and `gate+lesson06` refuse with the
sentence, without a model call, when the best source scores below the gate (--gate; default: the best threshold
on the set, the value helpers.rag.SCORE_GATE holds). A gated variant reuses its
ungated twin's answers (same request, temperature 0). The threshold the gate should have is computed on every
question of the set (retrieval only) and printed. Questions: lesson 06's own samples first, then the standalone
questions of data/questions.jsonl (follow-ups need a history: lesson 07), answerable and unanswerable interleaved so
that --limit keeps both. Checks are lesson 09's (helpers.evaluation): no judge model.
Prints one Markdown table, the lesson's samples' answers, and the gate's threshold.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import ollama
from qdrant_client import QdrantClient

from bench.common import load_note, private_stand_in, progress
from helpers.chunking import chunk_documents
from helpers.config import EMBED_MODEL, STAND_IN_CHAT_MODEL
from helpers.corpus import load_documents, load_questions
from helpers.evaluation import contains_answer, is_refusal
from helpers.index import index_chunks
from helpers.rag import (
    NOT_IN_DOCS,
    SCORE_GATE,
    Grounded,
    Hit,
    answer_grounded,
    build_messages,
    citations,
    format_sources,
    gated,
    retrieve,
)

# A candidate measured against lesson 06's prompt: the source number first, and one worked example of each case.
EXAMPLE_SYSTEM = (
    "You answer questions about Halvorsen Ridge Station using only the numbered sources given. "
    "Start your answer with the number of the source that holds it, in square brackets, then answer in one short "
    f"sentence. If no source holds the answer, reply exactly: {NOT_IN_DOCS} "
    "Prefer the most recently updated source when sources disagree.\n\n"
    "Example:\nSources:\n[1] Galley (updated 2025-01-10)\nBreakfast is served from 07:00 to 08:30.\n"
    "Question: When is breakfast served?\nAnswer: [1] From 07:00 to 08:30.\n"
    f"Question: How old is the cook?\nAnswer: {NOT_IN_DOCS}"
)

# Lesson 06's own sample questions: section 2's, section 6's two facts (not in the question set), section 7's.
LESSON_SAMPLES = [
    {"id": "06-facts-1", "question": "In the station staff directory, who is the Marine Operations Lead?"},
    {"id": "06-facts-2", "question": "What is the check-in interval for field parties under FTP-3?"},
]
LESSON_GOLD = {
    "06-facts-1": ("Ingrid Solbakk.", ["organisation-and-contacts"]),
    "06-facts-2": ("90 minutes.", ["field-travel-policy-2025"]),
}
LESSON_IDS = ("qa-01", "06-facts-1", "06-facts-2", "qa-20")


def example_messages(question: str, hits: list[Hit]) -> list[dict]:
    """The candidate: lesson 06's sources and question under EXAMPLE_SYSTEM, ending with 'Answer:'."""
    user = f"Sources:\n\n{format_sources(hits)}\n\nQuestion: {question}\nAnswer:"
    return [{"role": "system", "content": EXAMPLE_SYSTEM}, {"role": "user", "content": user}]


class MemoClient(ollama.Client):
    """An ollama.Client whose chat calls are remembered: a gated variant reuses its ungated twin's answers."""

    def __init__(self, host: str) -> None:
        super().__init__(host=host)
        self.memo: dict[str, Any] = {}
        self.calls = 0

    def chat(self, **kwargs: Any) -> Any:  # type: ignore[override]
        """client.chat, once per distinct request (temperature 0 and a seed: the same request, the same answer)."""
        key = json.dumps(kwargs, sort_keys=True, default=str)
        if key not in self.memo:
            self.calls += 1
            self.memo[key] = super().chat(**kwargs)
        return self.memo[key]


def text_variant(build: Callable[[str, list[Hit]], list[dict]], *, gate: float | None = None) -> Variant:
    """A prompt whose plain-text answer cites [n] (refusal: the sentence), optionally behind the score gate."""

    def run(client: ollama.Client, question: str, hits: list[Hit], *, model: str, options: dict) -> Grounded:
        if gate is not None and gated(hits, gate=gate):
            return Grounded(NOT_IN_DOCS, [], refused_by="score gate")
        reply = client.chat(model=model, messages=build(question, hits), options=options)
        answer = (reply.message.content or "").strip()
        return Grounded(answer, citations(answer, hits), prompt_tokens=reply.prompt_eval_count or 0)

    return run


def json_variant(*, gate: float | None, ask_answerable: bool = False) -> Variant:
    """helpers.rag.answer_grounded: a schema-constrained answer with source ids, optionally behind the gate."""

    def run(client: ollama.Client, question: str, hits: list[Hit], *, model: str, options: dict) -> Grounded:
        return answer_grounded(
            client, question, hits, model=model, options=options, gate=gate, ask_answerable=ask_answerable
        )

    return run


Variant = Callable[..., Grounded]
NAMES = ("lesson06", "example", "gate+lesson06", "json", "json+answerable", "gate+json")


def variants(gate: float) -> dict[str, Variant]:
    """Every variant by name, the gated ones at `gate`."""
    return {
        "lesson06": text_variant(build_messages),
        "example": text_variant(example_messages),
        "gate+lesson06": text_variant(build_messages, gate=gate),
        "json": json_variant(gate=None),
        "json+answerable": json_variant(gate=None, ask_answerable=True),
        "gate+json": json_variant(gate=gate),
    }


def best_threshold(best: list[float], answerable: list[bool]) -> tuple[float, int, int]:
    """The score gate that refuses the most unanswerable questions with the fewest false refusals: (gate, right, n)."""
    cuts = sorted(set(best))
    candidates = [0.0] + [round((a + b) / 2, 3) for a, b in zip(cuts, cuts[1:])] + [cuts[-1] + 1e-3]
    scored = [(sum((s < t) != a for s, a in zip(best, answerable)), t) for t in candidates]
    right, gate = max(scored, key=lambda x: (x[0], -x[1]))
    return gate, right, len(best)


def question_sample(limit: int | None = None) -> list[dict]:
    """Lesson 06's samples, then standalone questions, answerable and unanswerable interleaved; the first `limit`."""
    questions = load_questions()
    by_id = {q["id"]: q for q in questions}
    for q in LESSON_SAMPLES:
        gold, docs = LESSON_GOLD[q["id"]]
        by_id[q["id"]] = {**q, "answer": gold, "doc_ids": docs, "kind": "lesson 06"}
    first = [by_id[i] for i in LESSON_IDS]
    rest = [q for q in questions if q["id"] not in LESSON_IDS and q.get("turn", 1) == 1]
    answerable = [q for q in rest if q["doc_ids"]]
    unanswerable = [q for q in rest if not q["doc_ids"]]
    step = 2  # one unanswerable after every two answerable, while they last: a short --limit has both
    mixed: list[dict] = []
    for i, q in enumerate(answerable):
        if i % step == 0 and unanswerable:
            mixed.append(unanswerable.pop(0))
        mixed.append(q)
    sample = first + mixed + unanswerable
    return sample[:limit] if limit else sample


def score(question: dict, result: Grounded) -> dict:
    """Lesson 09's checks on one answer, plus whether it cites a retrieved source (and one from a gold document)."""
    answerable = bool(question["doc_ids"])
    refused = bool(result.refused_by) or is_refusal(result.answer)
    return {
        "answerable": answerable,
        "cites": bool(result.sources) and not refused,
        "cites gold": any(h.doc_id in question["doc_ids"] for h in result.sources) and not refused,
        "refused": refused,
        "exact refusal": result.answer.strip().replace("\u2019", "'") == NOT_IN_DOCS,
        "correct": contains_answer(result.answer, question["answer"]) if answerable else refused,
    }


def rate(rows: list[dict], key: str) -> str:
    """'n/m (p %)' of the rows where key is true."""
    if not rows:
        return "-"
    n = sum(r[key] for r in rows)
    return f"{n}/{len(rows)} ({100 * n / len(rows):.0f} %)"


def summary(name: str, rows: list[dict]) -> dict[str, str]:
    """One table row: the rates over answerable and unanswerable questions, and the cost."""
    a = [r for r in rows if r["answerable"]]
    u = [r for r in rows if not r["answerable"]]
    asked = [r for r in rows if r["tokens"]]
    return {
        "variant": name,
        "cites a source (answerable)": rate(a, "cites"),
        "cites a gold doc": rate(a, "cites gold"),
        "answer correct (answerable)": rate(a, "correct"),
        "refused (unanswerable)": rate(u, "refused"),
        "exact sentence (unanswerable)": rate(u, "exact refusal"),
        "false refusals (answerable)": rate(a, "refused"),
        "lesson 09 ok (all)": rate(rows, "correct"),
        "prompt tokens": f"{statistics.fmean(r['tokens'] for r in asked):.0f}" if asked else "0",
        "s/answer": f"{statistics.median(r['seconds'] for r in rows):.1f}",
    }


def markdown(rows: list[dict[str, str]]) -> str:
    """Rows as a Markdown table (columns: the keys of the first row)."""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(r[c] for c in cols) + " |" for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="questions asked (lesson 06's 4 samples come first)")
    parser.add_argument("--k", type=int, default=5, help="chunks per question (5, as lesson 06)")
    parser.add_argument("--num-predict", type=int, default=80)
    parser.add_argument("--variants", default="lesson06,json,json+answerable,gate+json", help=", ".join(NAMES))
    parser.add_argument("--gate", type=float, default=None, help="the score gate (default: the best on the set)")
    parser.add_argument("--host", default="", help="an Ollama API to use instead of a private stand-in")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads of the private stand-in")
    parser.add_argument("--model", default=STAND_IN_CHAT_MODEL, help="chat model (with --host: e.g. llama3.2:3b)")
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}: choose from {', '.join(NAMES)}")
    everything = question_sample()
    sample = everything[: args.limit] if args.limit else everything
    options = {"temperature": 0, "seed": 42, "num_predict": args.num_predict, "num_ctx": 4096}
    started = time.perf_counter()
    results: dict[str, list[dict]] = {name: [] for name in names}
    shown: list[str] = []
    with private_stand_in(args.threads) if not args.host else contextlib.nullcontext(args.host) as url:
        client = MemoClient(url)
        qdrant = QdrantClient(":memory:")
        docs, _ = load_documents()
        index_chunks(client, qdrant, "handbook", chunk_documents(docs), embed_model=EMBED_MODEL)
        progress(f"{time.perf_counter() - started:6.0f} s  indexed; {len(sample)} questions x {len(names)} variants")
        all_hits = [
            retrieve(client, qdrant, "handbook", q["question"], embed_model=EMBED_MODEL, k=args.k) for q in everything
        ]
        best = [max(h.score for h in hits) for hits in all_hits]
        gate, right, n = best_threshold(best, [bool(q["doc_ids"]) for q in everything])
        unanswerable_best = sorted(round(b, 3) for b, q in zip(best, everything) if not q["doc_ids"])
        used = args.gate if args.gate is not None else gate
        run = variants(used)
        gated_u = sum(b < used for b, q in zip(best, everything) if not q["doc_ids"])
        gated_a = sum(b < used for b, q in zip(best, everything) if q["doc_ids"])
        answerable_low = sorted(round(b, 3) for b, q in zip(best, everything) if q["doc_ids"])[:5]
        for name in names:  # one variant after the other: its fixed start is read once (the stand-in caches it)
            for i, (q, q_hits) in enumerate(zip(sample, all_hits), 1):
                start = time.perf_counter()
                result = run[name](client, q["question"], q_hits, model=args.model, options=options)
                row = score(q, result)
                row.update(seconds=time.perf_counter() - start, tokens=result.prompt_tokens)
                results[name].append(row)
                cited = ",".join(h.chunk_id for h in result.sources)
                line = f"{q['id']:<11} {name:<15} {result.answer[:100]!r} cites [{cited}] {result.refused_by}"
                progress(f"{time.perf_counter() - started:6.0f} s  {i}/{len(sample)}  {line}")
                if q["id"] in LESSON_IDS:
                    shown.append(line)
    print(markdown([summary(name, rows) for name, rows in results.items()]))
    print("\nlesson 06's samples:\n" + "\n".join(shown))
    print(
        f"\nscore gate: helpers.rag.SCORE_GATE = {SCORE_GATE}; the best threshold on all {n} questions is {gate} "
        f"({right}/{n} right: refuse below it, answer above). Best scores of the unanswerable: {unanswerable_best}; "
        f"the lowest of the answerable: {answerable_low}. The gate used, {used}, alone on all {n}: refuses "
        f"{gated_u}/{len(unanswerable_best)} unanswerable, and {gated_a}/{n - len(unanswerable_best)} answerable"
    )
    n_a = sum(bool(q["doc_ids"]) for q in sample)
    print(
        f"\n{len(sample)} questions ({n_a} answerable, {len(sample) - n_a} unanswerable), k={args.k}, "
        f"num_predict={args.num_predict}, model {args.model}, {client.calls} model calls; "
        f"{time.perf_counter() - started:.0f} s in all; {load_note()}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
