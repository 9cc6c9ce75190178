"""Lesson 16 measured: the tool-call prompts (valid calls, right picks) and the agent against lesson 06's fixed pipeline.

python -m bench.agent [--limit N] [--host URL]

Without --host it starts a private stand-in (see bench/common.py); with --host it measures that Ollama (pass
--chat-model too). For every handbook question of kind single, numeric or multi_doc: does the answer contain the
gold answer (helpers.evaluation.contains_answer), how many tool calls, how many seconds, for the fixed pipeline
(retrieve 5 chunks, one chat call) and for the agent (helpers.agent.run_agent, max 3 steps).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import nullcontext
from typing import Literal

import jsonschema
import ollama
from qdrant_client import QdrantClient, models

from bench.common import load_note, private_stand_in, progress, table
from helpers.agent import best_row, run_agent, table_with
from helpers.chunking import chunk_documents
from helpers.config import EMBED_MODEL, STAND_IN_CHAT_MODEL
from helpers.corpus import load_documents, load_questions
from helpers.evaluation import contains_answer
from helpers.index import index_chunks
from helpers.rag import build_messages, retrieve
from tests.support.tool_prompts import PROMPTS

CATEGORY = Literal[  # as lesson 16 declares it: an enum in the tool's schema (helpers.agent.tool_schema)
    "any", "safety", "operations", "policy", "facilities", "logistics", "science", "organisation", "reference", "faq"
]
OPTIONS = {"temperature": 0, "seed": 42, "num_predict": 200, "num_ctx": 4096}


def handbook_tools(client: ollama.Client, qdrant: QdrantClient, chat_docs: dict) -> list:
    """The three tools of lesson 16 over an indexed handbook."""
    contacts = table_with(chat_docs["organisation-and-contacts"].text, "Role")
    limits = table_with(chat_docs["weather-limits"].text, "Activity")

    def search_handbook(query: str, category: CATEGORY) -> str:
        """Search the station handbook for passages about a topic.

        Args:
          query: what to look for
          category: the handbook section to search, or any
        """
        match = (
            None
            if category == "any"
            else models.Filter(must=[models.FieldCondition(key="category", match=models.MatchValue(value=category))])
        )
        hits = retrieve(client, qdrant, "handbook", query, embed_model=EMBED_MODEL, k=3, query_filter=match)
        if not hits:
            raise LookupError(f"no passages in category {category!r}: use another category, or 'any'")
        return "\n\n".join(f"[{h.doc_id}] {h.text}" for h in hits)

    def contact_by_role(role: str) -> str:
        """Find the person, office and phone extension for a role on the station.

        Args:
          role: a role, e.g. Station Director, Head Chef
        """
        return json.dumps(best_row(contacts, "Role", role))

    def weather_limit(activity: str) -> str:
        """The wind and visibility limits for an outdoor activity.

        Args:
          activity: the activity, e.g. diving, snowmobiles, boats
        """
        return json.dumps(best_row(limits, "Activity", activity))

    return [search_handbook, contact_by_role, weather_limit]


def tool_prompts(client: ollama.Client, model: str) -> tuple[int, int, int]:
    """(prompts, valid calls, expected tool picked) over tests/tool_prompts.py."""
    valid = right = 0
    for prompt, tools, expected in PROMPTS:
        r = client.chat(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            tools=tools,
            options={"temperature": 0, "seed": 1},
        )
        declared = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
        calls = r.message.tool_calls or []
        ok = bool(calls) and all(c.function.name in declared for c in calls)
        try:
            for c in calls:
                jsonschema.validate(dict(c.function.arguments), declared[c.function.name])
        except (jsonschema.ValidationError, KeyError):
            ok = False
        valid += ok
        right += bool(calls) and calls[0].function.name == expected
    return len(PROMPTS), valid, right


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.agent", description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="first N questions only (0: all)")
    parser.add_argument("--host", help="an Ollama to measure instead of a private stand-in")
    parser.add_argument("--chat-model", default=STAND_IN_CHAT_MODEL)
    args = parser.parse_args(argv)
    print(load_note())
    with nullcontext(args.host) if args.host else private_stand_in() as url:
        client = ollama.Client(host=url)
        n, valid, right = tool_prompts(client, args.chat_model)
        print(f"tool prompts: {n}; valid calls {valid}/{n}; expected tool picked {right}/{n} ({right / n:.0%})")
        docs = {d.id: d for d in load_documents()[0]}
        qdrant = QdrantClient(":memory:")
        index_chunks(client, qdrant, "handbook", chunk_documents(list(docs.values())), embed_model=EMBED_MODEL)
        tools = handbook_tools(client, qdrant, docs)
        questions = [q for q in load_questions() if q["kind"] in {"single", "numeric", "multi_doc"}]
        questions = questions[: args.limit] if args.limit else questions
        results: dict[str, list[tuple[bool, int, float, int]]] = {"fixed (lesson 06)": [], "agent": []}
        for i, q in enumerate(questions, 1):
            progress(f"question {i}/{len(questions)}")
            start = time.perf_counter()
            hits = retrieve(client, qdrant, "handbook", q["question"], embed_model=EMBED_MODEL, k=5)
            answer = client.chat(
                model=args.chat_model, messages=build_messages(q["question"], hits), options=OPTIONS
            ).message.content
            results["fixed (lesson 06)"].append(
                (contains_answer(answer, q["answer"]), 0, time.perf_counter() - start, 1)
            )
            start = time.perf_counter()
            answer, trace = run_agent(
                client, q["question"], model=args.chat_model, tools=tools, max_steps=3, options=OPTIONS
            )
            assert len(trace) <= 3, "the step limit holds"
            results["agent"].append(
                (
                    contains_answer(answer or "", q["answer"]),
                    sum(len(s.calls) for s in trace),
                    time.perf_counter() - start,
                    len(trace),
                )
            )
    rows = [
        [
            name,
            str(len(r)),
            f"{sum(x[0] for x in r)} ({sum(x[0] for x in r) / len(r):.0%})",
            f"{statistics.mean(x[1] for x in r):.2f}",
            f"{statistics.mean(x[3] for x in r):.2f}",
            f"{statistics.median(x[2] for x in r):.1f}",
        ]
        for name, r in results.items()
    ]
    print(
        table(
            ["method", "questions", "answer contains gold", "tool calls / q", "model calls / q", "median s / q"], rows
        )
    )
    print(load_note())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
