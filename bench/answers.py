"""Lesson 06's two headline behaviours over the question set: citations and refusals, per prompt, side by side.

    .venv/bin/python -m bench.answers [--limit N] [--k 5] [--num-predict 80] [--threads N] [--host URL --model M]

A private stand-in runs in a child process (bench.common); --host uses another Ollama API instead. The handbook is
indexed into embedded Qdrant, each question retrieves k chunks once, and every prompt answers from the same chunks:
`lesson06` is helpers.rag's build_messages, the one prompt of the lessons, the chat app and the service; `example` is
a candidate (the source number first, a worked example), kept here until it measures better. Questions: lesson 06's own samples
first, then the standalone questions of data/questions.jsonl (follow-ups need a history: lesson 07), answerable and
unanswerable interleaved so that --limit keeps both. Checks are lesson 09's (helpers.evaluation): no judge model.
Prints one Markdown table, the prompts side by side, and the answers to the lesson's samples.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import ollama
from qdrant_client import QdrantClient

from bench.common import load_note, private_stand_in, progress
from helpers.chunking import chunk_documents
from helpers.config import EMBED_MODEL, STAND_IN_CHAT_MODEL
from helpers.corpus import load_documents, load_questions
from helpers.evaluation import contains_answer, is_refusal
from helpers.index import index_chunks
from helpers.rag import NOT_IN_DOCS, Hit, build_messages, cited_numbers, format_sources, retrieve

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


PROMPTS: dict[str, Callable[[str, list[Hit]], list[dict]]] = {"lesson06": build_messages, "example": example_messages}


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
    step = max(1, round(len(answerable) / max(1, len(unanswerable))))
    mixed: list[dict] = []
    for i, q in enumerate(answerable):
        if i % step == 0 and unanswerable:
            mixed.append(unanswerable.pop(0))
        mixed.append(q)
    sample = first + mixed + unanswerable
    return sample[:limit] if limit else sample


def score(question: dict, answer: str, hits: list[Hit]) -> dict:
    """Lesson 09's checks on one answer, plus whether it cites a retrieved source (and one from a gold document)."""
    cited = [hits[n - 1] for n in cited_numbers(answer) if 1 <= n <= len(hits)]
    answerable = bool(question["doc_ids"])
    return {
        "answerable": answerable,
        "cites": bool(cited),
        "cites gold": any(h.doc_id in question["doc_ids"] for h in cited),
        "refused": is_refusal(answer),
        "exact refusal": answer.strip().replace("\u2019", "'") == NOT_IN_DOCS,
        "correct": contains_answer(answer, question["answer"]) if answerable else is_refusal(answer),
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
    return {
        "prompt": name,
        "cites a source (answerable)": rate(a, "cites"),
        "cites a gold doc": rate(a, "cites gold"),
        "answer correct (answerable)": rate(a, "correct"),
        "refused (unanswerable)": rate(u, "refused"),
        "exact sentence (unanswerable)": rate(u, "exact refusal"),
        "refused (answerable)": rate(a, "refused"),
        "lesson 09 ok (all)": rate(rows, "correct"),
        "prompt tokens": f"{statistics.fmean(r['tokens'] for r in rows):.0f}",
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
    parser.add_argument("--prompts", default="lesson06,example", help="which prompts to compare")
    parser.add_argument("--host", default="", help="an Ollama API to use instead of a private stand-in")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads of the private stand-in")
    parser.add_argument("--model", default=STAND_IN_CHAT_MODEL, help="chat model (with --host: e.g. llama3.2:3b)")
    args = parser.parse_args(argv)
    names = args.prompts.split(",")
    sample = question_sample(args.limit)
    options = {"temperature": 0, "seed": 42, "num_predict": args.num_predict, "num_ctx": 4096}
    started = time.perf_counter()
    results: dict[str, list[dict]] = {name: [] for name in names}
    shown: list[str] = []
    with private_stand_in(args.threads) if not args.host else contextlib.nullcontext(args.host) as url:
        client = ollama.Client(host=url)
        qdrant = QdrantClient(":memory:")
        docs, _ = load_documents()
        index_chunks(client, qdrant, "handbook", chunk_documents(docs), embed_model=EMBED_MODEL)
        progress(f"{time.perf_counter() - started:6.0f} s  indexed; {len(sample)} questions x {len(names)} prompts")
        hits = [retrieve(client, qdrant, "handbook", q["question"], embed_model=EMBED_MODEL, k=args.k) for q in sample]
        for name in names:  # one prompt after the other: its fixed start is read once (the stand-in caches it)
            for i, (q, q_hits) in enumerate(zip(sample, hits), 1):
                start = time.perf_counter()
                messages = PROMPTS[name](q["question"], q_hits)
                reply = client.chat(model=args.model, messages=messages, options=options)
                answer = (reply.message.content or "").strip()
                row = score(q, answer, q_hits)
                row.update(seconds=time.perf_counter() - start, tokens=reply.prompt_eval_count or 0)
                results[name].append(row)
                line = f"{q['id']:<11} {name:<6} {answer[:110]!r}"
                progress(f"{time.perf_counter() - started:6.0f} s  {i}/{len(sample)}  {line}")
                if q["id"] in LESSON_IDS:
                    shown.append(line)
    print(markdown([summary(name, rows) for name, rows in results.items()]))
    print("\nlesson 06's samples:\n" + "\n".join(shown))
    n_a = sum(bool(q["doc_ids"]) for q in sample)
    print(
        f"\n{len(sample)} questions ({n_a} answerable, {len(sample) - n_a} unanswerable), k={args.k}, "
        f"num_predict={args.num_predict}, model {args.model}; "
        f"{time.perf_counter() - started:.0f} s in all; {load_note()}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
