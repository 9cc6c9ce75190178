"""The request bodies the stand-in takes, as pydantic models: Ollama's /api and the OpenAI-compatible /v1.

Strict types (a JSON string is not a boolean, a boolean is not a number), extra fields allowed as Ollama allows
them, and a JSON null read as "not sent". `explain` turns a ValidationError into one sentence that names the field
and what it must be; the routes answer it as a 400 in their API's shape.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

# ---- one sentence for a ValidationError ------------------------------------------------------------------

EXPECTED = {
    "bool_type": "true or false (a JSON boolean)",
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


def where(loc: tuple[int | str, ...]) -> str:
    """A field's place: 'stream' at the top level, messages[0].content inside."""
    if len(loc) == 1:
        return f"'{loc[0]}'"
    return "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in loc).lstrip(".")


def shown(value: Any) -> str:
    """A value as JSON, cut short."""
    try:
        return json.dumps(value)[:80]
    except (TypeError, ValueError):
        return repr(value)[:80]


HINTS = {
    ("messages", "list_type"): 'a list of {"role": ..., "content": ...} objects',
    ("tools", "list_type"): "a list of tools",
}


def explain(exc: ValidationError) -> str:
    """The first error of a ValidationError as one sentence: the field, what it must be, what it got."""
    error = exc.errors(include_url=False)[0]
    kind, loc, ctx = error["type"], tuple(error["loc"]), error.get("ctx") or {}
    place = where(loc) if loc else "the request body"
    if kind == "sentence":
        return error["msg"]
    if kind == "expected":
        return f"{place} {error['msg']}"
    if kind == "missing":
        return f"{place} is required"
    if kind in EXPECTED:
        what = HINTS.get((where(loc).strip("'"), kind), EXPECTED[kind])
        return f"{place} must be {what}, got {shown(error['input'])}"
    if kind in {"greater_than_equal", "less_than_equal"}:
        bound = "at least" if kind == "greater_than_equal" else "at most"
        limit = ctx.get("ge", ctx.get("le"))
        return f"{place} must be {bound} {limit}, got {shown(error['input'])}"
    if kind == "literal_error":
        return f"{place} must be {ctx.get('expected')}, got {shown(error['input'])}"
    return f"{place}: {error['msg']}"


def expecting(what: str) -> WrapValidator:
    """A field whose errors all read `<field> must be <what>, got <value>` (for unions and nested shapes)."""

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            raise PydanticCustomError(
                "expected", "must be {what}, got {got}", {"what": what, "got": shown(value)}
            ) from exc

    return WrapValidator(check)


class Body(BaseModel):
    """A request body (or part of one): strict types, extra fields allowed, null read as absent."""

    model_config = ConfigDict(strict=True, extra="allow")

    @model_validator(mode="before")
    @classmethod
    def null_is_absent(cls, data: Any) -> Any:
        """Drop declared fields sent as null, so they take their defaults (as Ollama's Go decoder does)."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (v is None and k in cls.model_fields)}
        return data


# ---- Ollama's fields ---------------------------------------------------------------------------------------

DURATION = re.compile(r"^[+-]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$")
UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def seconds(value: Any) -> Any:
    """Ollama's keep_alive: seconds as a number, or a Go duration string ("5m", "0")."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise PydanticCustomError(
            "expected", 'must be a number of seconds or a duration such as "5m", got {got}', {"got": shown(value)}
        )
    if not isinstance(value, str):
        return float(value)
    text = value.strip()
    if text in {"0", "+0", "-0"}:
        return 0.0
    if not DURATION.match(text):
        raise PydanticCustomError(
            "expected",
            'is not a duration ({got}): use seconds (a number) or e.g. "5m", "1h", "0"',
            {"got": shown(value)},
        )
    sign = -1 if text.startswith("-") else 1
    return sign * sum(
        float(n) * UNITS[u] for n, _, _, u in re.findall(r"((\d+(\.\d*)?|\.\d+))(ns|us|µs|ms|s|m|h)", text)
    )


def whole(value: Any) -> Any:
    """A number for an integer option, truncated as Ollama does (a string or boolean stays an error)."""
    return int(value) if isinstance(value, float) else value


def model_name(value: Any) -> Any:
    """The model's name: a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise PydanticCustomError("sentence", "model is required: the name of a served model, as a string")
    return value


KeepAlive = Annotated[float, BeforeValidator(seconds)]
OptionInt = Annotated[int, BeforeValidator(whole)]
ModelName = Annotated[str, BeforeValidator(model_name)]
Texts = Annotated[str | list[str], expecting("a string or a list of strings")]
JsonObject = dict[str, Any]


class Options(Body):
    """Ollama's `options`: the ones the stand-in honours are typed; others (num_thread, mirostat...) are ignored."""

    temperature: float | None = None
    seed: OptionInt | None = None
    num_predict: OptionInt | None = None
    num_ctx: Annotated[OptionInt, Field(ge=64)] | None = None
    top_k: OptionInt | None = None
    top_p: float | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    stop: Texts | None = None

    def stops(self) -> list[str] | None:
        """The stop strings as a list (empty ones dropped), None when not sent."""
        if self.stop is None:
            return None
        return [s for s in ([self.stop] if isinstance(self.stop, str) else self.stop) if s]


class ToolCallFunction(Body):
    """The function of a tool call: its name and arguments (an object)."""

    name: str
    arguments: JsonObject = Field(default_factory=dict)
    index: int | None = None


class ToolCall(Body):
    """One call in an assistant message's tool_calls."""

    id: str | None = None
    function: ToolCallFunction


ToolCalls = Annotated[list[ToolCall], expecting('a list of {"function": {"name": ..., "arguments": {...}}} objects')]


def text_content(value: Any) -> Any:
    """A message's content: one string (Ollama's API takes pictures in 'images', not a list of parts)."""
    if value is not None and not isinstance(value, str):
        raise PydanticCustomError(
            "expected",
            "must be a string, got {kind}: Ollama's API takes the text as one string (pictures go in 'images'), "
            "not a list of parts",
            {"kind": type(value).__name__},
        )
    return value


class Message(Body):
    """One message of an Ollama chat."""

    role: str
    content: Annotated[str, BeforeValidator(text_content)] = ""
    images: list[Any] | None = None
    tool_calls: ToolCalls | None = None
    tool_name: str | None = None


class ToolFunction(Body):
    """A declared tool's function: a name, what it does, the JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: JsonObject | None = None


TOOL_SHAPE = '{"type": "function", "function": {"name": ..., "description": ..., "parameters": {JSON schema}}}'


class Tool(Body):
    """One declared tool."""

    type: Literal["function"] = "function"
    function: ToolFunction

    @model_validator(mode="before")
    @classmethod
    def shaped(cls, data: Any) -> Any:
        """A tool is a function with a name (the parameters are checked on their own)."""
        f = data.get("function") if isinstance(data, dict) else None
        if (
            not isinstance(f, dict)
            or data.get("type", "function") not in {"function", None}
            or not isinstance(f.get("name"), str)
            or not f["name"].strip()
        ):
            raise PydanticCustomError("expected", "must be {shape}", {"shape": TOOL_SHAPE})
        return data


# ---- Ollama's endpoints --------------------------------------------------------------------------------------


class ShowRequest(Body):
    """/api/show: a model, by `model` or the older `name`."""

    model: str = ""
    name: str = ""
    verbose: bool = False

    @property
    def model_asked(self) -> str:
        """The model named, by `model` or the older `name`."""
        return self.model or self.name


class PullRequest(ShowRequest):
    """/api/pull: every model ships with the workshop, so a pull only says so (streamed unless stream is false)."""

    stream: bool = True
    insecure: bool = False


class GenerationRequest(Body):
    """What /api/chat and /api/generate share: model, options, format, stream, keep_alive, think, logprobs."""

    model: ModelName
    options: Options = Field(default_factory=Options)
    format: Annotated[str | JsonObject, expecting('"json" or a JSON schema object')] | None = None
    stream: bool = True
    keep_alive: KeepAlive | None = None
    think: Annotated[bool | str, expecting('true, false or "high"/"medium"/"low"')] = False
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] = 0


class ChatRequest(GenerationRequest):
    """/api/chat."""

    messages: list[Message] = Field(default_factory=list)
    tools: list[Tool] = Field(default_factory=list)

    @field_validator("tools")
    @classmethod
    def distinct_names(cls, tools: list[Tool]) -> list[Tool]:
        """Each tool name once."""
        names: list[str] = []
        for i, t in enumerate(tools):
            if t.function.name in names:
                raise PydanticCustomError(
                    "sentence",
                    "tools[{i}]: the tool name {name} is declared twice",
                    {"i": i, "name": repr(t.function.name)},
                )
            names.append(t.function.name)
        return tools

    def message_dicts(self) -> list[dict]:
        """The messages as plain dicts (unset fields left out), as the templating code reads them."""
        return [m.model_dump(exclude_none=True) for m in self.messages]

    def tool_dicts(self) -> list[dict]:
        """The tools as plain dicts."""
        return [t.model_dump(exclude_none=True) for t in self.tools]


class GenerateRequest(GenerationRequest):
    """/api/generate."""

    prompt: str = ""
    suffix: str = ""
    system: str = ""
    template: str = ""
    raw: bool = False
    context: list[int] = Field(default_factory=list)
    images: list[Any] = Field(default_factory=list)


class EmbedRequest(Body):
    """/api/embed."""

    model: ModelName
    input: Texts = Field(default_factory=list)
    truncate: bool = True
    dimensions: int | None = None
    keep_alive: KeepAlive | None = None
    options: JsonObject = Field(default_factory=dict)  # taken and ignored: an embedding has nothing to sample

    def texts(self) -> list[str]:
        """The input as a list of strings."""
        return [self.input] if isinstance(self.input, str) else self.input


class EmbeddingsRequest(Body):
    """/api/embeddings (the older one-prompt form)."""

    model: ModelName
    prompt: str = ""
    keep_alive: KeepAlive | None = None
    options: JsonObject = Field(default_factory=dict)  # taken and ignored, as on /api/embed


# ---- the OpenAI-compatible endpoints -----------------------------------------------------------------------


class OpenAIMessage(Body):
    """One message of an OpenAI chat: content a string or a list of parts (checked when converted)."""

    role: str
    content: Annotated[str | list[Any], expecting("a string or a list of text parts")] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[Any] | None = None


class ResponseFormat(Body):
    """OpenAI's response_format."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JsonObject | None = None


class ChatCompletionRequest(Body):
    """/v1/chat/completions."""

    model: ModelName
    messages: Annotated[
        list[OpenAIMessage], Field(min_length=1), expecting('a non-empty list of {"role": ..., "content": ...} objects')
    ]
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: Texts | None = None
    response_format: ResponseFormat = Field(default_factory=ResponseFormat)
    tool_choice: Annotated[
        str | JsonObject, expecting('"none", "auto", "required" or {"type": "function", "function": {"name": ...}}')
    ] = "auto"
    tools: list[Any] | None = None
    stream: bool = False
    stream_options: JsonObject = Field(default_factory=dict)
    logprobs: bool = False
    top_logprobs: int | None = None


class EmbeddingRequest(Body):
    """/v1/embeddings."""

    model: ModelName
    input: Annotated[
        str | Annotated[list[str], Field(min_length=1)],
        expecting("a string or a non-empty list of strings (token ids are not supported)"),
    ]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None

    def texts(self) -> list[str]:
        """The input as a list of strings."""
        return [self.input] if isinstance(self.input, str) else self.input
