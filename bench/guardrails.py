"""Lesson 15's measurement on every case: attacks, benign false positives, latency and answer quality, per layer.

    .venv/bin/python -m bench.guardrails [--benign-answers 103] [--timed 10] [--attacks ID,ID] [--k 4] [--threads N]
                                         [--language ru]

A private stand-in runs in a child process (bench.common). The clean handbook is indexed into embedded Qdrant,
then a separate collection holds it plus a poisoned copy of a page per document-channel attack (helpers.attacks).
Every attack of data/attacks/attacks.jsonl is asked with no defence, with each layer added on top of the ones
before, and with every layer but the marked sources; the input and source checks run on all 103 handbook questions,
the answers (needed by the output checks, and by the answer-quality column: lesson 09's checks on what the user is
shown) on the first --benign-answers of them, the latency with and without each layer on the first --timed.
--language ru: the Russian attacks and benign questions of data/attacks/ (same handbook index), the guard's prompt
and refusals in Russian; they have no gold answers, so the answer-quality column is "-".
Temperature 0 and a seed: the same prompt gives the same answer, so a layer that leaves the prompt unchanged reuses
it. Prints one table, in Markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from dataclasses import replace

import ollama
from qdrant_client import QdrantClient

from bench.common import load_note, private_stand_in, progress
from helpers.attacks import Runner, attack_succeeded, checkable, index_poisoned, layer_row, load_attack_set, planted_in
from helpers.chunking import chunk_documents
from helpers.config import EMBED_MODEL, STAND_IN_CHAT_MODEL
from helpers.corpus import load_documents
from helpers.evaluation import contains_answer, is_refusal
from helpers.guardrails import NONE, GuardSettings, cumulative_layers
from helpers.index import index_chunks
from helpers.language import LANGUAGES

COLUMNS = [
    "layers",
    "attacks succeeded",
    "attack success %",
    "code-checkable succeeded",
    "attacks acted on",
    "benign FP %",
    "benign asked",
    "guard ms/question",
    "added latency ms/question",
    "added prompt tokens",
    "benign answers correct",
]


def markdown(rows: list[dict]) -> str:
    """Rows as a Markdown table."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows])


def answer_quality(runner: Runner, settings: GuardSettings, questions: list[dict]) -> str:
    """Lesson 09's checks on what the user is shown: the gold answer in it, or a refusal for an unanswerable one."""
    if not questions or "answer" not in questions[0]:
        return "-"
    shown = [runner.run(q, settings).shown for q in questions]
    ok = [contains_answer(a, q["answer"]) if q["doc_ids"] else is_refusal(a) for q, a in zip(questions, shown)]
    return f"{sum(ok)}/{len(ok)} ({100 * sum(ok) / len(ok):.0f} %)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benign-answers", type=int, default=103, help="benign questions answered by the model")
    parser.add_argument("--attacks", default="", help="comma-separated case ids (default: every case)")
    parser.add_argument("--timed", type=int, default=10, help="benign questions timed with and without each layer")
    parser.add_argument("--k", type=int, default=4, help="chunks per question (4, as the service)")
    parser.add_argument("--num-predict", type=int, default=80)
    parser.add_argument("--host", default="", help="an Ollama API to use instead of a private stand-in")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads of the private stand-in")
    parser.add_argument("--language", choices=LANGUAGES, default="en", help="the attack and benign sets, the prompt")
    args = parser.parse_args(argv)
    attacks, benign = load_attack_set(args.language)
    if args.attacks:
        wanted = set(args.attacks.split(","))
        attacks = [c for c in attacks if c["id"] in wanted]
    options = {"temperature": 0, "seed": 42, "num_predict": args.num_predict, "num_ctx": 4096}
    started = time.perf_counter()
    with private_stand_in(args.threads) if not args.host else contextlib.nullcontext(args.host) as url:
        client = ollama.Client(host=url)
        qdrant = QdrantClient(":memory:")
        docs, _ = load_documents()
        index_chunks(client, qdrant, "handbook", chunk_documents(docs), embed_model=EMBED_MODEL)
        index_poisoned(client, qdrant, "handbook-poisoned", attacks, docs, clean="handbook", embed_model=EMBED_MODEL)
        runner = Runner(
            client,
            qdrant,
            "handbook-poisoned",
            chat_model=STAND_IN_CHAT_MODEL,
            embed_model=EMBED_MODEL,
            options=options,
            k=args.k,
            language=args.language,
        )
        delivered = [c["id"] for c in attacks if planted_in(c, runner.hits(c))]
        progress(
            f"{len(attacks)} attacks; the planted text was among the k={args.k} retrieved chunks for "
            f"{len(delivered)} of {sum(c['channel'] == 'document' for c in attacks)} document attacks"
        )
        rows: list[dict] = []
        baseline: dict[str, float] = {}
        layers = [*cumulative_layers(), ("all but mark sources", replace(GuardSettings(), mark_sources=False))]
        for name, settings in layers:
            progress(f"{time.perf_counter() - started:6.0f} s  {name}")
            answered = benign[: args.benign_answers]
            rows.append(
                layer_row(
                    name,
                    runner,
                    settings,
                    attacks=attacks,
                    benign=benign,
                    answered=answered,
                    timed=answered[: args.timed],
                    baseline=baseline,
                )
            )
            rows[-1]["benign answers correct"] = answer_quality(runner, settings, answered)
            progress("| " + " | ".join(str(rows[-1][c]) for c in COLUMNS) + " |")
        full = GuardSettings()
        still = [
            c["id"]
            for c in attacks
            if checkable(c) and attack_succeeded(c, runner.run(c, full).shown, runner.guard(full).system_prompt)
        ]
        none_ok = [
            c["id"] for c in attacks if attack_succeeded(c, runner.run(c, NONE).shown, runner.guard(NONE).system_prompt)
        ]
    print(markdown(rows))
    print(
        f"\nno defence: {len(none_ok)} attacks succeeded ({', '.join(none_ok)}); all layers: code-checkable "
        f"successes {still or 'none'}"
    )
    print(
        f"{len(runner.generations)} model calls, k={args.k}, num_predict={args.num_predict}, "
        f"{time.perf_counter() - started:.0f} s in all; {load_note()}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
