"""Tool calls from the real small model through the official ollama client, over real HTTP.

Asserted: every call parses into the client's types, names a declared tool and has arguments valid against
that tool's JSON schema (the grammar guarantees it). Which tool the 135M model picks is measured, not asserted
(python -m bench.agent prints it).
"""

from __future__ import annotations

import json

import jsonschema
import ollama
import pytest

from helpers.config import STAND_IN_CHAT_MODEL
from tests.support.tool_prompts import PROMPTS, STATION

OPTIONS = {"temperature": 0, "seed": 1}


@pytest.fixture(scope="module")
def calls(client) -> list[tuple[str, list[dict], str, ollama.ChatResponse]]:
    """Each prompt of tests/tool_prompts.py asked once (streamed for every third one)."""
    out = []
    for i, (prompt, tools, expected) in enumerate(PROMPTS):
        request = {
            "model": STAND_IN_CHAT_MODEL,
            "messages": [{"role": "user", "content": prompt}],
            "tools": tools,
            "options": OPTIONS,
        }
        if i % 3 == 2:
            parts = list(client.chat(**request, stream=True))
            assert parts[-1].done and not any(p.done for p in parts[:-1])
            with_calls = [p for p in parts if p.message.tool_calls]
            assert len(with_calls) == 1, "a streamed call arrives whole, in one chunk"
            response = with_calls[0]
        else:
            response = client.chat(**request)
        out.append((prompt, tools, expected, response))
    return out


def test_every_call_names_a_declared_tool_with_schema_valid_arguments(calls):
    assert len(calls) >= 30
    for prompt, tools, _, response in calls:
        assert isinstance(response, ollama.ChatResponse) and response.message.tool_calls, prompt
        declared = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
        for call in response.message.tool_calls:
            assert isinstance(call, ollama.Message.ToolCall)
            assert call.function.name in declared, (prompt, call)
            jsonschema.validate(dict(call.function.arguments), declared[call.function.name])


def test_the_model_picks_some_tools_right(calls):
    right = sum(r.message.tool_calls[0].function.name == expected for _, _, expected, r in calls)
    assert right >= 1, "the small model picks poorly, but never once right would mean the prompt is broken"


def test_python_functions_become_tools(client):
    def contact_by_role(role: str) -> str:
        """Find the person and phone extension for a role on the station.

        Args:
          role: a role, e.g. Station Director
        """
        return role

    r = client.chat(
        model=STAND_IN_CHAT_MODEL,
        messages=[{"role": "user", "content": "Who is the Head Chef?"}],
        tools=[contact_by_role],
        options=OPTIONS,
    )
    (call,) = r.message.tool_calls
    assert call.function.name == "contact_by_role" and isinstance(call.function.arguments["role"], str)
    assert contact_by_role(**call.function.arguments) == call.function.arguments["role"]


def test_a_tool_result_is_answered_in_plain_text(client):
    messages = [
        {"role": "user", "content": "Who is the Station Director?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "contact_by_role", "arguments": {"role": "Station Director"}}}],
        },
        {
            "role": "tool",
            "tool_name": "contact_by_role",
            "content": "Station Director: Dr. Maren Ostvold, Aurora Hall, room AH-14, ext. 201",
        },
    ]
    r = client.chat(model=STAND_IN_CHAT_MODEL, messages=messages, tools=STATION, options={**OPTIONS, "num_predict": 60})
    assert not r.message.tool_calls and r.message.content.strip() and r.done
    parts = list(
        client.chat(
            model=STAND_IN_CHAT_MODEL,
            messages=messages,
            tools=STATION,
            stream=True,
            options={**OPTIONS, "num_predict": 60},
        )
    )
    assert "".join(p.message.content for p in parts) == r.message.content  # same text streamed


def test_a_tool_schema_the_grammar_cannot_build_is_a_400(client):
    bad = [
        {
            "type": "function",
            "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "strange"}}}},
        }
    ]
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model=STAND_IN_CHAT_MODEL, messages=[{"role": "user", "content": "hi"}], tools=bad)
    assert err.value.status_code == 400 and "schema" in err.value.error


def test_after_a_failed_call_the_model_may_call_again(client):
    """A tool result that is a JSON object with an "error" key lets the next answer be a call (a retry)."""
    messages = [
        {"role": "user", "content": "Find the snowmobile rules in the handbook."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "search_handbook", "arguments": {"query": "snowmobile"}}}],
        },
        {"role": "tool", "tool_name": "search_handbook", "content": json.dumps({"error": "missing 'category'"})},
    ]
    r = client.chat(model=STAND_IN_CHAT_MODEL, messages=messages, tools=STATION, options=OPTIONS)
    (call,) = r.message.tool_calls
    declared = {t["function"]["name"]: t["function"]["parameters"] for t in STATION}
    jsonschema.validate(dict(call.function.arguments), declared[call.function.name])
    messages[-1] = {"role": "tool", "tool_name": "search_handbook", "content": json.dumps({"result": "max 18 m/s"})}
    r = client.chat(model=STAND_IN_CHAT_MODEL, messages=messages, tools=STATION, options={**OPTIONS, "num_predict": 20})
    assert not r.message.tool_calls and r.message.content.strip()
