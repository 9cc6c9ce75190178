"""Constraints for llama.cpp: Ollama's `format` (JSON, a JSON schema) and the grammar of a tool call."""

from __future__ import annotations

import json
from typing import Any


def make_grammar(fmt: object):
    """A llama.cpp grammar for Ollama's `format`: "json" or a JSON schema object; None for none."""
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    if fmt in (None, ""):
        return None
    if fmt == "json":
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    if isinstance(fmt, dict):
        try:
            return LlamaGrammar.from_string(schema_gbnf(fmt), verbose=False)
        except Exception as exc:  # the converter raises plain exceptions on unsupported schemas
            raise ValueError(f"unsupported JSON schema in 'format': {exc}") from exc
    raise ValueError("'format' must be \"json\" or a JSON schema object")


TOOL_STRING_MAX = 100  # a tool-call grammar bounds strings that declare no maxLength (a 135M model can ramble)
TOOL_ARRAY_MAX = 8  # ... and arrays that declare no maxItems, so that a call always ends


def bounded(schema: object) -> object:
    """A copy of a JSON schema with limits added for the grammar: string length, array items, no free-form objects."""
    if isinstance(schema, list):
        return [bounded(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bounded(v) for k, v in schema.items()}
    declared = out.get("type")
    kinds: list[Any] = declared if isinstance(declared, list) else [declared]
    if "string" in kinds and not {"maxLength", "enum", "const", "pattern", "format"} & out.keys():
        out["maxLength"] = TOOL_STRING_MAX
    if "array" in kinds and "maxItems" not in out:
        out["maxItems"] = TOOL_ARRAY_MAX
    if "object" in kinds and not out.get("properties") and "additionalProperties" not in out:
        out["additionalProperties"] = False  # an object that declares no properties: {} (not any JSON object)
    return out


def tool_call_schema(tools: list[dict]) -> dict:
    """The JSON schema of one tool call: {"name": one declared tool, "arguments": that tool's parameters}."""
    options = []
    for tool in tools:
        function = tool["function"]
        params = function.get("parameters") or {"type": "object"}
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": function["name"]}, "arguments": bounded(params)},
                "required": ["name", "arguments"],
            }
        )
    return options[0] if len(options) == 1 else {"anyOf": options}


# JSON's string character: llama-cpp-python's converter lets control characters (a raw newline) into strings,
# which makes invalid JSON; this rule is JSON's own.
JSON_CHAR_RULE = r'char ::= [^"\\\x7F\x00-\x1F] | [\\] (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'
CHECKED_FIRST = 256  # a constrained step checks the grammar on this many most likely tokens before the whole vocabulary


def schema_gbnf(schema: dict) -> str:
    """llama.cpp's grammar for a JSON schema, with JSON's own string character rule."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(json.dumps(schema))
    return "\n".join(JSON_CHAR_RULE if line.startswith("char ::=") else line for line in gbnf.splitlines())


def make_tool_grammar(tools: list[dict]):
    """A llama.cpp grammar whose every complete output is a call of a declared tool with schema-valid arguments."""
    from llama_cpp.llama_grammar import LlamaGrammar

    try:
        grammar = LlamaGrammar.from_string(schema_gbnf(tool_call_schema(tools)), verbose=False)
    except Exception as exc:  # the converter raises plain exceptions on unsupported schemas
        raise ValueError(f"unsupported JSON schema in the parameters of a tool: {exc}") from exc
    grammar.checked_first = True  # type: ignore[attr-defined]  # ChatModel.stream decodes it with its own loop (see ChatModel._constrained)
    return grammar
