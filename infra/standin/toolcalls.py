"""How the stand-in decides between a tool call and plain text, and how tools and results reach a plain chat template.

The call-or-text rule (a 135M model cannot judge whether a tool is needed, so the rule decides, and the grammar
makes the call well-formed; which tool it picks is the model's guess):
- no tools, or tool_choice "none" (/v1 only): plain text;
- tool_choice "required" or a named function (/v1 only): a call (of that function, when named);
- otherwise ("auto", and always on /api/chat): a call when the last message is not a tool result; after a tool
  result, plain text (an answer that uses the results), unless that result is a failed call: a `role: "tool"`
  message whose content is a JSON object with an "error" key. Then the answer may be a call again (a retry,
  constrained by the grammar as usual), so an agent whose call failed can correct it.
"""

from __future__ import annotations

import hashlib
import json
import time

from infra.standin.errors import ApiError

TOOLS_PROMPT = (
    "You can call these tools (each line: a tool's name, what it does, the JSON schema of its arguments):\n{tools}\n"
    'Reply with one JSON object naming the tool to call and its arguments: {{"name": ..., "arguments": {{...}}}}.'
)


def call_tools(messages: list[dict], tools: list[dict], choice: object = "auto") -> list[dict]:
    """The tools the answer must call one of ([] for plain text), by the rule in this module's docstring."""
    if not tools or choice == "none":
        return []
    if isinstance(choice, str) and choice not in {"auto", "required"}:  # a named function
        named = [t for t in tools if t["function"]["name"] == choice]
        if not named:
            raise ApiError(400, f"tool_choice names {choice!r}, which is not among the declared tools")
        return named
    if choice == "auto" and messages and messages[-1].get("role") == "tool" and not is_failed_call(messages[-1]):
        return []
    return tools


def is_failed_call(message: dict) -> bool:
    """True when a tool result reports a failed call: its content is a JSON object with an "error" key."""
    try:
        result = json.loads(message.get("content") or "")
    except ValueError:
        return False
    return isinstance(result, dict) and "error" in result


def template_messages(messages: list[dict], tools: list[dict]) -> list[dict]:
    """Messages for a plain chat template: calls as JSON text, tool results as user turns, tools in the system prompt."""
    out: list[dict] = []
    question = ""
    for m in messages:
        role, content = m["role"], m.get("content") or ""
        if role == "user":
            question = content
        if role == "assistant" and m.get("tool_calls"):
            calls = [
                f"Calling {c['function']['name']} with {json.dumps(c['function'].get('arguments') or {})}."
                for c in m["tool_calls"]
            ]
            content = "\n".join(([content] if content else []) + calls)
        if role == "tool":  # SmolLM2's template knows system/user/assistant: a result reads as a user turn
            result = f"{m.get('tool_name') or 'The tool'} returned:\n{content}"
            if out and out[-1].get("tool_results"):
                out[-1]["results"].append(result)
            else:
                out.append({"role": "user", "tool_results": True, "results": [result]})
            out[-1]["content"] = "\n\n".join(out[-1]["results"]) + f"\n\nUse this to answer: {question}"
            continue
        out.append({"role": role, "content": content})
    if tools:
        lines = "\n".join(
            json.dumps(
                {
                    "name": t["function"]["name"],
                    "description": t["function"].get("description", ""),
                    "parameters": t["function"].get("parameters") or {},
                }
            )
            for t in tools
        )
        prompt = TOOLS_PROMPT.format(tools=lines)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{prompt}"}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return [{"role": m["role"], "content": m["content"]} for m in out]


def tool_call_message(text: str) -> dict:
    """The assistant message for a constrained call's text: `tool_calls`, or the text itself if it was cut short."""
    try:
        call = json.loads(text)
        name, arguments = call["name"], call["arguments"]
    except (ValueError, KeyError, TypeError):  # num_predict ended it before the JSON closed
        return {"role": "assistant", "content": text}
    call_id = "call_" + hashlib.sha256(f"{time.time_ns()}{text}".encode()).hexdigest()[:8]
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": call_id, "function": {"index": 0, "name": name, "arguments": arguments}}],
    }
