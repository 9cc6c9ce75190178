"""Table lookups over the handbook and an agent loop that lets the model call tools. Taught in 16_tools-and-agents.ipynb."""

from __future__ import annotations

import inspect
import json
import re
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import ollama

AGENT_SYSTEM = (
    "You answer questions about Halvorsen Ridge Station. Call a tool to look the facts up, then answer "
    "briefly from what the tools returned. If a tool returns an error, call a tool again with other arguments."
)
JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def markdown_tables(text: str) -> list[list[dict]]:
    """Every pipe table in a Markdown text, as a list of rows keyed by the header cells."""
    tables, lines = [], text.splitlines()
    for i in range(len(lines) - 1):
        if lines[i].startswith("|") and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1].strip()):
            header = [c.strip() for c in lines[i].strip().strip("|").split("|")]
            rows = []
            for line in lines[i + 2 :]:
                if not line.startswith("|"):
                    break
                rows.append(dict(zip(header, (c.strip() for c in line.strip().strip("|").split("|")))))
            tables.append(rows)
    return tables


def table_with(text: str, column: str) -> list[dict]:
    """The first table of a Markdown text whose first column is called `column`."""
    for rows in markdown_tables(text):
        if rows and next(iter(rows[0])) == column:
            return rows
    raise LookupError(f"no table with a first column {column!r}")


def words(text: str) -> set[str]:
    """Lowercase words, a plural 's' dropped: 'Snowmobiles SM-01' -> {'snowmobile', 'sm', '01'}."""
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in re.findall(r"[a-z0-9]+", text.lower())}


def best_row(rows: Sequence[dict], column: str, wanted: str) -> dict:
    """The row whose `column` shares the most words with `wanted`; LookupError (naming the options) if none does."""
    scored = [(len(words(wanted) & words(r[column])), r) for r in rows]
    score, row = max(scored, key=lambda sr: sr[0])
    if score == 0:
        raise LookupError(f"no {column.lower()} matches {wanted!r}; known: {', '.join(r[column] for r in rows)}")
    return row


def arg_descriptions(doc: str) -> dict[str, str]:
    """The `name: description` lines of a docstring's `Args:` section (Google style, as the ollama client reads it)."""
    section = re.split(r"^\s*Args:\s*$", doc, maxsplit=1, flags=re.M)
    return dict(re.findall(r"^\s+(\w+):\s*(.+)$", section[1], flags=re.M)) if len(section) == 2 else {}


def tool_schema(fn: Callable) -> dict:
    """The tool declaration of a typed, documented function; a `Literal[...]` argument becomes an enum.

    The ollama client's own conversion keeps only each argument's type and description: an enum is lost, and a small
    model then writes any word where only a few are valid.
    """
    doc = inspect.getdoc(fn) or ""
    described, hints, properties = arg_descriptions(doc), typing.get_type_hints(fn), {}
    for name in inspect.signature(fn).parameters:
        hint = hints.get(name, str)
        if typing.get_origin(hint) is typing.Literal:
            values = list(typing.get_args(hint))
            prop: dict = {"type": JSON_TYPES[type(values[0])], "enum": values}
        else:
            prop = {"type": JSON_TYPES.get(hint, "string")}
        properties[name] = {**prop, "description": described.get(name, "")}
    required = [n for n, p in inspect.signature(fn).parameters.items() if p.default is inspect.Parameter.empty]
    return {
        "type": "function",
        "function": {
            "name": fn.__name__,
            "description": doc.split("\n\n")[0].strip(),
            "parameters": {"type": "object", "required": required, "properties": properties},
        },
    }


def tool_result(fn: Callable, arguments: dict) -> tuple[str, bool]:
    """Run one tool: (its result as text, False), or ('{"error": ...}', True): a failed call the model may redo."""
    try:
        result = fn(**arguments)
    except Exception as exc:  # any failure goes back to the model as a JSON error object, never up to the caller
        return json.dumps({"error": f"{type(exc).__name__}: {exc}"}), True
    return result if isinstance(result, str) else json.dumps(result), False


@dataclass
class Step:
    """One step of an agent run: the tool calls the model made (with results), or its final answer."""

    n: int
    calls: list[dict] = field(default_factory=list)  # {"tool", "arguments", "result", "error"}
    answer: str | None = None
    seconds: float = 0.0


def run_agent(
    client: ollama.Client,
    question: str,
    *,
    model: str,
    tools: Sequence[Callable],
    max_steps: int = 4,
    options: dict | None = None,
    system: str = AGENT_SYSTEM,
) -> tuple[str | None, list[Step]]:
    """Ask, run the tools the model calls, send their results back, until it answers or max_steps model calls.

    A failed call goes back as {"error": ...}: the model may then call a tool again (a retry) or answer.
    """
    by_name, schemas = {fn.__name__: fn for fn in tools}, [tool_schema(fn) for fn in tools]
    messages: list = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    trace: list[Step] = []
    for n in range(1, max_steps + 1):
        start = time.perf_counter()
        reply = client.chat(model=model, messages=messages, tools=schemas, options=options)
        step = Step(n)
        trace.append(step)
        messages.append(reply.message)
        if not reply.message.tool_calls:
            step.answer, step.seconds = (reply.message.content or "").strip(), time.perf_counter() - start
            return step.answer, trace
        for call in reply.message.tool_calls:
            name, arguments = call.function.name, dict(call.function.arguments)
            fn = by_name.get(name)
            if fn is None:
                result, error = json.dumps({"error": f"there is no tool {name!r}; use one of {sorted(by_name)}"}), True
            else:
                result, error = tool_result(fn, arguments)
            step.calls.append({"tool": name, "arguments": arguments, "result": result, "error": error})
            messages.append({"role": "tool", "tool_name": name, "content": result})
        step.seconds = time.perf_counter() - start
    return None, trace  # the step limit ended the run before an answer
