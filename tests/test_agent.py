"""Lesson 16's agent: tool declarations with enums, errors as {"error": ...}, and the loop on the real stand-in.

The schema and error tests need no model; the loop test runs the real stand-in (slow tier, `client` fixture).
"""

import json
from typing import Literal

import pytest
from ollama._utils import convert_function_to_tool

from helpers.agent import run_agent, tool_result, tool_schema
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


def lookup(place: str, kind: Literal["lab", "hut", "any"], limit: int = 3) -> str:
    """Find a place on the station.

    Args:
      place: the place, e.g. radio room
      kind: the kind of place, or any
      limit: how many to return
    """
    raise LookupError(f"no {kind} called {place!r}")


def test_a_literal_argument_is_declared_as_an_enum_which_the_clients_own_conversion_drops():
    ours = tool_schema(lookup)["function"]
    assert ours["name"] == "lookup" and ours["description"] == "Find a place on the station."
    params = ours["parameters"]
    assert params["required"] == ["place", "kind"]
    assert params["properties"]["kind"] == {
        "type": "string",
        "enum": ["lab", "hut", "any"],
        "description": "the kind of place, or any",
    }
    assert params["properties"]["limit"]["type"] == "integer"
    theirs = convert_function_to_tool(lookup).model_dump(exclude_none=True)["function"]["parameters"]
    assert "enum" not in theirs["properties"]["kind"]  # why tool_schema exists: without the enum, any word goes


def test_a_failed_tool_call_goes_back_as_a_json_object_with_an_error_key():
    result, failed = tool_result(lookup, {"place": "igloo", "kind": "hut"})
    assert failed and json.loads(result) == {"error": "LookupError: no hut called 'igloo'"}
    result, failed = tool_result(lookup, {"place": "igloo"})  # a missing argument is an error too, not a crash
    assert failed and "TypeError" in json.loads(result)["error"]
    assert tool_result(lambda **_: {"ext": 210}, {}) == ('{"ext": 210}', False)


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
    assert all(
        c["tool"] == "search_handbook" and c["error"] and "offline" in json.loads(c["result"])["error"]
        for c in first.calls
    )
    assert len(calls) == sum(len(s.calls) for s in trace)
    if max_steps == 1:  # the limit ends the run before any answer
        assert answer is None and trace[-1].answer is None
    elif answer is None:  # after an error the model may call again (a retry): then only the limit ends the run
        assert len(trace) == max_steps and trace[-1].calls
    else:  # or it answers in text: the loop stops on its own, within the limit
        assert trace[-1].answer == answer and not trace[-1].calls
