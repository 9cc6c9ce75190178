"""Lesson 15's agent loop on the real stand-in: it never makes more model calls than its step limit."""

from __future__ import annotations

import pytest

from helpers.agent import run_agent
from helpers.config import STAND_IN_CHAT_MODEL

OPTIONS = {"temperature": 0, "seed": 42, "num_predict": 48}
calls: list[dict] = []


def search_handbook(query: str, category: str = "") -> str:
    """Search the station handbook.

    Args:
      query: what to look for
      category: a handbook category, or empty for all
    """
    calls.append({"query": query, "category": category})
    raise RuntimeError("the search index is offline")  # a tool error goes back to the model as the tool's result


@pytest.mark.parametrize("max_steps", [1, 2, 3])
def test_the_agent_never_exceeds_its_step_limit_and_tool_errors_go_back_to_the_model(client, max_steps):
    calls.clear()
    answer, trace = run_agent(
        client,
        "Where is the muster point during a fire alarm?",
        model=STAND_IN_CHAT_MODEL,
        tools=[search_handbook],
        max_steps=max_steps,
        options=OPTIONS,
    )
    assert 1 <= len(trace) <= max_steps and [s.n for s in trace] == list(range(1, len(trace) + 1))
    first = trace[0]
    assert first.calls, "with tools declared and a user's question last, the stand-in's first reply is a call"
    assert all(c["tool"] == "search_handbook" and c["error"] and "offline" in c["result"] for c in first.calls)
    assert len(calls) == sum(len(s.calls) for s in trace)
    if max_steps == 1:  # the limit ends the run before any answer
        assert answer is None and trace[-1].answer is None
    else:  # after a tool result the stand-in answers in text: the loop stops on its own, within the limit
        assert answer is not None and trace[-1].answer == answer and not trace[-1].calls
