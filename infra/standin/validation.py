"""Request validation: Ollama's field types and its 400s, with messages that say what was expected."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from starlette.requests import Request

from infra.standin.errors import ApiError

# ---- request validation: Ollama's field types, its 400s --------------------------------------------

_MISSING = object()
DURATION = re.compile(r"^[+-]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$")


def field_of(body: dict, key: str, kinds: tuple[type, ...], what: str, default: Any = None) -> Any:
    """body[key] if it has one of `kinds` (None/absent: default), else a 400 saying what was expected."""
    value = body.get(key, _MISSING)
    if value is _MISSING or value is None:
        return default
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise ApiError(400, f"'{key}' must be {what}, got {json.dumps(value)[:80]}")
    return value


def keep_alive_seconds(body: dict) -> float | None:
    """Ollama's keep_alive: seconds as a number, or a Go duration string ("5m", "0"); None when absent."""
    value = body.get("keep_alive")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ApiError(
            400, f"'keep_alive' must be a number of seconds or a duration such as \"5m\", got {json.dumps(value)}"
        )
    if not isinstance(value, str):
        return float(value)
    text = value.strip()
    if text in {"0", "+0", "-0"}:
        return 0.0
    if not DURATION.match(text):
        raise ApiError(
            400, f'\'keep_alive\' {value!r} is not a duration: use seconds (a number) or e.g. "5m", "1h", "0"'
        )
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    sign = -1 if text.startswith("-") else 1
    return sign * sum(
        float(n) * units[u] for n, _, _, u in re.findall(r"((\d+(\.\d*)?|\.\d+))(ns|us|µs|ms|s|m|h)", text)
    )


def check_messages(messages: Any, model: str) -> list[dict]:
    """Ollama's `messages`: a list of {role, content, ...} objects with text content."""
    if not isinstance(messages, list):
        raise ApiError(400, '\'messages\' must be a list of {"role": ..., "content": ...} objects')
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(400, f"messages[{i}] must be an object with a string 'role'")
        content = m.get("content")
        if content is not None and not isinstance(content, str):
            raise ApiError(
                400,
                f"messages[{i}].content must be a string, got {type(content).__name__}: Ollama's API "
                "takes the text as one string (pictures go in 'images'), not a list of parts",
            )
        if m.get("images"):
            raise ApiError(400, f'"{model}" does not support vision (messages[{i}] has images)')
        calls = m.get("tool_calls")
        if calls is not None and (
            not isinstance(calls, list)
            or not all(
                isinstance(c, dict)
                and isinstance(c.get("function"), dict)
                and isinstance(c["function"].get("name"), str)
                and isinstance(c["function"].get("arguments", {}), dict)
                for c in calls
            )
        ):
            raise ApiError(
                400,
                f"messages[{i}].tool_calls must be a list of "
                '{"function": {"name": ..., "arguments": {...}}} objects',
            )
    return messages


def check_tools(tools: Any) -> list[dict]:
    """Ollama's `tools`: a list of {"type": "function", "function": {"name", "description", "parameters"}}."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise ApiError(400, "'tools' must be a list of tools")
    names = []
    for i, t in enumerate(tools):
        f = t.get("function") if isinstance(t, dict) else None
        if (
            not isinstance(f, dict)
            or t.get("type", "function") != "function"
            or not isinstance(f.get("name"), str)
            or not f["name"].strip()
        ):
            raise ApiError(
                400,
                f'tools[{i}] must be {{"type": "function", "function": {{"name": ..., '
                '"description": ..., "parameters": {JSON schema}}}}',
            )
        if f.get("parameters") is not None and not isinstance(f["parameters"], dict):
            raise ApiError(400, f"tools[{i}].function.parameters must be a JSON schema object")
        if f["name"] in names:
            raise ApiError(400, f"tools[{i}]: the tool name {f['name']!r} is declared twice")
        names.append(f["name"])
    return tools


async def read_body(request: Request) -> dict:
    """The JSON object of a request; Ollama's 400s for a missing or malformed body; 408 if it never arrives."""
    try:
        raw = await asyncio.wait_for(request.body(), request.app.state.request_timeout)
    except TimeoutError as exc:
        raise ApiError(
            408,
            f"the request body did not arrive within {request.app.state.request_timeout:g} s",
            headers={"Connection": "close"},
        ) from exc
    if not raw.strip():
        raise ApiError(400, "missing request body")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"invalid JSON in request body: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def embed_inputs(body: dict, key: str) -> list[str]:
    """A string or a list of strings."""
    value = body.get(key)
    items = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise ApiError(400, f"'{key}' must be a string or a list of strings")
    return items
