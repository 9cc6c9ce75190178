"""An Ollama-compatible HTTP server for the workshop's offline mode (infrastructure, not a lesson).

It speaks the part of the Ollama REST API (docs/api.md of the Ollama project) that the workshop uses, so
that the official `ollama` client works unchanged: /api/version, /api/tags, /api/ps, /api/show,
/api/chat, /api/generate, /api/embed, /api/embeddings, /api/pull. Built on Starlette + uvicorn (the
stack of lesson 12's service) and modelled on llama-cpp-python's own server:

- model calls block, so each runs in a worker thread; requests for one model wait in a FIFO queue;
- a streamed answer commits to HTTP 200 only once its first line is there, so an early error is a
  proper status + {"error": ...}; an error after that is an {"error": ...} NDJSON line, as Ollama sends;
- a client that disconnects (streamed or not, queued or generating) cancels its request;
- it binds 127.0.0.1 only; a request that is not fully sent within `request_timeout` is answered 408.

Nothing here imports llama_cpp or onnxruntime at module level: the fast tests run it with fake models.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import h11
import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from helpers.config import REPO_ROOT, STAND_IN_CHAT_MODEL
from infra.standin.models import (
    EMBED_DIM,
    EMBED_MAX_TOKENS,
    STAND_IN_NUM_PREDICT,
    GenerationStats,
    SamplingOptions,
    TemplateRejectedError,
    make_grammar,
    make_tool_grammar,
)

log = logging.getLogger("workshop.stand-in")
STAND_IN_VERSION = "0.6.3"  # the Ollama API level it follows; /api/version also says it is the stand-in
EMBED_NAME = "all-minilm:latest"
REQUEST_TIMEOUT_S = 30.0  # a request (headers and body) must arrive within this
POLL_S = 0.1  # how often a waiting request checks whether its client is still there
USE_REAL_OLLAMA = "use a real Ollama: install it, run `ollama pull {name}`, and make sure WORKSHOP_OFFLINE is not set"


class ApiError(Exception):
    """An error answered as HTTP status + {"error": message}, as Ollama does."""

    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class FifoLock:
    """A lock that serves waiters in arrival order; a waiter whose client is gone leaves the queue."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._queue: deque[object] = deque()
        self._held = False

    def acquire(self, cancelled: threading.Event | None = None) -> bool:
        """Wait for our turn; False (and out of the queue) if `cancelled` is set first."""
        me = object()
        with self._cv:
            self._queue.append(me)
            while self._held or self._queue[0] is not me:
                if cancelled is not None and cancelled.is_set():
                    self._queue.remove(me)
                    self._cv.notify_all()
                    return False
                self._cv.wait(timeout=POLL_S)
            self._queue.popleft()
            self._held = True
            return True

    def release(self) -> None:
        """Hand the lock to the next waiter."""
        with self._cv:
            self._held = False
            self._cv.notify_all()

    def __enter__(self) -> FifoLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @property
    def waiting(self) -> int:
        """Requests holding or waiting for the lock."""
        with self._cv:
            return len(self._queue) + self._held


def now_iso() -> str:
    """The current UTC time in the ISO-8601 form Ollama uses."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def canonical(name: str) -> str:
    """'all-minilm' -> 'all-minilm:latest'; names with a tag are kept."""
    name = (name or "").strip()
    return name if ":" in name else f"{name}:latest"


@dataclass
class Served:
    """One model the stand-in serves; `loader()` makes the model object (real, or a fake in the fast tests)."""

    name: str
    kind: str  # "chat" or "embed"
    path: Path
    family: str
    parameter_size: str
    quantization: str
    loader: Callable[[], object]
    grammar: Callable[[object], object] = make_grammar  # Ollama's `format` -> a constraint for the model
    tool_grammar: Callable[[list[dict]], object] = make_tool_grammar  # declared tools -> a constraint for a call
    instance: object = None
    load_ns: int = 0
    info: dict = field(default_factory=dict)  # template and metadata, kept after an unload for /api/show
    lock: FifoLock = field(default_factory=FifoLock)
    loading: threading.Lock = field(default_factory=threading.Lock)

    def get(self) -> tuple[object, int]:
        """The loaded model, and the nanoseconds this call spent loading it (0 when already loaded)."""
        with self.loading:
            if self.instance is not None:
                return self.instance, 0
            start = time.perf_counter_ns()
            self.instance = self.loader()
            self.load_ns = time.perf_counter_ns() - start
            self.info = {
                "template": getattr(self.instance, "template", ""),
                "metadata": dict(getattr(self.instance, "metadata", {}) or {}),
            }
            log.info("loaded %s in %.2f s", self.name, self.load_ns / 1e9)
            return self.instance, self.load_ns

    def unload(self) -> None:
        """Free the model (keep_alive 0); the next request loads it again."""
        with self.loading:
            instance, self.instance = self.instance, None
        if instance is not None:
            close = getattr(instance, "close", None)
            if close:
                close()
            log.info("unloaded %s", self.name)

    @property
    def capabilities(self) -> list[str]:
        """Ollama's `capabilities` of the model."""
        return ["completion", "tools"] if self.kind == "chat" else ["embedding"]

    def details(self) -> dict:
        """Ollama's `details` object."""
        fmt = "gguf" if self.path.suffix == ".gguf" else "onnx"
        return {
            "parent_model": "",
            "format": fmt,
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization,
        }

    def listing(self) -> dict:
        """One entry of /api/tags."""
        stat = self.path.stat()
        modified = datetime.fromtimestamp(stat.st_mtime, UTC).isoformat()
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": modified,
            "size": stat.st_size,
            "digest": hashlib.sha256(f"{self.name}:{stat.st_size}".encode()).hexdigest(),
            "details": self.details(),
            "capabilities": self.capabilities,
        }


def default_models(chat_gguf: str | None = None, chat_name: str | None = None) -> list[Served]:
    """SmolLM2-135M (or the GGUF file given) and all-MiniLM-L6-v2, from their pip packages."""
    from infra.standin.models import ChatModel, Embedder, minilm_onnx, smollm2_gguf

    gguf = Path(chat_gguf) if chat_gguf else smollm2_gguf()
    name = chat_name or (STAND_IN_CHAT_MODEL if not chat_gguf else canonical(gguf.stem.lower()))
    return [
        Served(
            name=canonical(name),
            kind="chat",
            path=gguf,
            family="llama",
            parameter_size="135M" if not chat_gguf else "unknown",
            quantization="Q4_1" if not chat_gguf else "unknown",
            loader=lambda: ChatModel(gguf),
        ),
        Served(
            name=EMBED_NAME,
            kind="embed",
            path=minilm_onnx(),
            family="bert",
            parameter_size="23M",
            quantization="int8",
            loader=Embedder,
        ),
    ]


class Registry:
    """The models served, by canonical name."""

    def __init__(
        self, chat_gguf: str | None = None, chat_name: str | None = None, models: list[Served] | None = None
    ) -> None:
        served = models if models is not None else default_models(chat_gguf, chat_name)
        self.models: dict[str, Served] = {m.name: m for m in served}

    def find(self, name: object, kind: str | None = None) -> Served:
        """The served model called `name`, or an ApiError that says what is served instead."""
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "model is required")
        served = self.models.get(canonical(name))
        if served is None:
            names = ", ".join(self.models)
            raise ApiError(
                404,
                f"model '{name}' not found: the workshop's offline server serves only {names}. "
                f"Set CHAT_MODEL / EMBED_MODEL to one of those, or {USE_REAL_OLLAMA.format(name=name)}.",
            )
        if kind == "chat" and served.kind != "chat":
            raise ApiError(400, f'"{served.name}" does not support chat or generate (it is an embedding model)')
        if kind == "embed" and served.kind != "embed":
            raise ApiError(400, f'"{served.name}" does not support embeddings; use {EMBED_NAME}')
        return served


# ---- request validation: Ollama's field types, its 400s --------------------------------------------

_MISSING = object()
DURATION = re.compile(r"^[+-]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$")


def field_of(body: dict, key: str, kinds: tuple[type, ...], what: str, default: object = None) -> object:
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


def check_messages(messages: object, model: str) -> list[dict]:
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


def check_tools(tools: object) -> list[dict]:
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


# How the stand-in decides between a tool call and plain text (a 135M model cannot judge whether a tool is needed,
# so the rule decides, and the grammar makes the call well-formed; which tool it picks is the model's guess):
# - no tools, or tool_choice "none" (/v1 only): plain text;
# - tool_choice "required" or a named function (/v1 only): a call (of that function, when named);
# - otherwise ("auto", and always on /api/chat): a call when the last message is not a tool result, plain text
#   (an answer that uses the results) when it is.
TOOLS_PROMPT = (
    "You can call these tools (each line: a tool's name, what it does, the JSON schema of its arguments):\n{tools}\n"
    'Reply with one JSON object naming the tool to call and its arguments: {{"name": ..., "arguments": {{...}}}}.'
)


def call_tools(messages: list[dict], tools: list[dict], choice: object = "auto") -> list[dict]:
    """The tools the answer must call one of ([] for plain text), by the rule above."""
    if not tools or choice == "none":
        return []
    if isinstance(choice, str) and choice not in {"auto", "required"}:  # a named function
        named = [t for t in tools if t["function"]["name"] == choice]
        if not named:
            raise ApiError(400, f"tool_choice names {choice!r}, which is not among the declared tools")
        return named
    if choice == "auto" and messages and messages[-1].get("role") == "tool":
        return []
    return tools


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


def common_fields(registry: Registry, body: dict) -> tuple[Served, SamplingOptions, object, bool, float | None]:
    """Model, options, grammar, stream and keep_alive of a chat/generate request, all checked up front."""
    m = registry.find(body.get("model"), "chat")
    stream = field_of(body, "stream", (bool,), "true or false (a JSON boolean)", True)
    keep_alive = keep_alive_seconds(body)
    think = field_of(body, "think", (bool, str), 'true, false or "high"/"medium"/"low"', False)
    if think:
        raise ApiError(400, f'"{m.name}" does not support thinking')
    top = field_of(body, "top_logprobs", (int,), "an integer", 0)
    if not 0 <= top <= 20:
        raise ApiError(400, "top_logprobs must be between 0 and 20")
    want_logprobs = field_of(body, "logprobs", (bool,), "true or false", False)
    try:
        opts = SamplingOptions.from_request(body.get("options"))
        opts.top_logprobs = top if want_logprobs else -1  # -1: no logprobs asked (Ollama ignores top_logprobs alone)
        grammar = m.grammar(body.get("format"))
    except ValueError as exc:
        raise ApiError(400, str(exc)) from exc
    return m, opts, grammar, stream, keep_alive


# ---- model calls in worker threads --------------------------------------------------------------------


class Job:
    """A blocking model call in a worker thread; what it yields reaches the event loop through a queue."""

    def __init__(self, work: Callable[[threading.Event], Iterator[dict]]) -> None:
        self.loop = asyncio.get_running_loop()
        self.items: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        self.cancelled = threading.Event()
        self._get: asyncio.Future | None = None
        self._checked = time.monotonic()
        threading.Thread(target=self._run, args=(work,), daemon=True, name="stand-in-job").start()

    def _put(self, kind: str, value: object) -> None:
        try:
            self.loop.call_soon_threadsafe(self.items.put_nowait, (kind, value))
        except RuntimeError:  # the server has shut down its loop
            pass

    def _run(self, work: Callable[[threading.Event], Iterator[dict]]) -> None:
        try:
            lines = work(self.cancelled)
            try:
                for line in lines:
                    if self.cancelled.is_set():
                        break
                    self._put("item", line)
            finally:
                lines.close()
        except Exception as exc:  # handed to the request, which answers with it
            self._put("error", exc)
        finally:
            self._put("end", None)

    async def next(self, request: Request) -> tuple[str, object]:
        """("item", line), ("error", exc) or ("end", None); ("gone", None) once the client has disconnected."""
        if self._get is None:
            self._get = asyncio.ensure_future(self.items.get())
        while True:
            done, _ = await asyncio.wait({self._get}, timeout=POLL_S)
            now = time.monotonic()
            if now - self._checked >= POLL_S:  # also while lines flow: a busy stream must notice a hang-up too
                self._checked = now
                if await request.is_disconnected():
                    self.cancel()
                    return "gone", None
            if done:
                item, self._get = self._get.result(), None
                return item

    def cancel(self) -> None:
        """Stop the work at its next token (or take it out of the queue if it waits there)."""
        self.cancelled.set()
        if self._get is not None:
            self._get.cancel()
            self._get = None


def queued(
    served: Served, keep_alive: float | None, body: Callable[[object, int, threading.Event], Iterator[dict]]
) -> Callable[[threading.Event], Iterator[dict]]:
    """Work that waits its turn for the model, loads it, runs body(model, load_ns, cancelled), honours keep_alive 0."""

    def work(cancelled: threading.Event) -> Iterator[dict]:
        if not served.lock.acquire(cancelled):
            log.info("a queued request for %s was cancelled: its client went away", served.name)
            return
        try:
            model, load_ns = served.get()
            yield from body(model, load_ns, cancelled)
        finally:
            if keep_alive == 0:
                served.unload()
            served.lock.release()

    return work


def error_text(exc: BaseException) -> tuple[int, str]:
    """Status and message for an exception raised by a model call."""
    if isinstance(exc, ApiError):
        return exc.status, exc.message
    if isinstance(exc, TemplateRejectedError):
        return 400, str(exc)
    log.error("error in the offline server", exc_info=exc)
    return 500, f"the offline server's model failed: {type(exc).__name__}: {exc}"


def ndjson(line: dict) -> bytes:
    """One NDJSON line."""
    return (json.dumps(line) + "\n").encode("utf-8")


def ndjson_error(message: str) -> bytes:
    """Ollama's mid-stream error line."""
    return ndjson({"error": message})


async def answer(
    request: Request,
    job: Job,
    stream: bool,
    merge: Callable[[list[dict]], dict],
    encode: Callable[[dict], bytes] = ndjson,
    error_line: Callable[[str], bytes] = ndjson_error,
    media_type: str = "application/x-ndjson",
) -> Response:
    """Pull the first line, then stream (errors as NDJSON lines) or answer one JSON object merged from all.

    encode, error_line and media_type make the stream another API's (the OpenAI-compatible one's SSE).
    """
    kind, first = await job.next(request)
    if kind == "error":
        raise ApiError(*error_text(first))  # before anything was sent: a proper status + {"error": ...}
    if kind in {"gone", "end"}:
        return Response(status_code=499 if kind == "gone" else 500)
    if not stream:
        lines = [first]
        while True:
            kind, value = await job.next(request)
            if kind == "item":
                lines.append(value)
            elif kind == "error":
                raise ApiError(*error_text(value))
            elif kind == "gone":
                log.info("client went away; generation stopped")
                return Response(status_code=499)
            else:
                return JSONResponse(merge(lines))

    async def rest() -> AsyncIterator[bytes]:
        try:
            yield encode(first)
            while True:
                kind, value = await job.next(request)
                if kind == "item":
                    yield encode(value)
                elif kind == "error":
                    yield error_line(error_text(value)[1])  # the API's mid-stream error
                    return
                else:
                    if kind == "gone":
                        log.info("client hung up mid-stream; generation stopped")
                    return
        finally:
            job.cancel()

    return StreamingResponse(rest(), media_type=media_type)


# ---- endpoints ----------------------------------------------------------------------------------------


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


def registry_of(request: Request) -> Registry:
    """The app's registry."""
    return request.app.state.registry


async def root(request: Request) -> Response:
    return PlainTextResponse("Ollama is running")


async def version(request: Request) -> Response:
    """Ollama's version, and who this is: the workshop's stand-in, its pid, checkout, models and port."""
    return JSONResponse(
        {
            "version": STAND_IN_VERSION,
            "workshop_stand_in": True,
            "pid": os.getpid(),
            "checkout": str(REPO_ROOT),
            "port": request.scope["server"][1],
            "models": list(registry_of(request).models),
            "num_predict_default": STAND_IN_NUM_PREDICT,
        }
    )


async def tags(request: Request) -> Response:
    return JSONResponse({"models": [m.listing() for m in registry_of(request).models.values()]})


async def ps(request: Request) -> Response:
    loaded = [m for m in registry_of(request).models.values() if m.instance is not None]
    return JSONResponse(
        {
            "models": [
                {
                    **m.listing(),
                    "expires_at": "2099-01-01T00:00:00Z",
                    "size_vram": 0,
                    "context_length": SamplingOptions().num_ctx if m.kind == "chat" else EMBED_MAX_TOKENS,
                }
                for m in loaded
            ]
        }
    )


async def show(request: Request) -> Response:
    body = await read_body(request)
    m = registry_of(request).find(body.get("model") or body.get("name"))
    if not m.info:
        await asyncio.to_thread(m.get)
    if m.kind == "chat":
        meta = m.info.get("metadata", {})
        info = {
            "general.architecture": "llama",
            "llama.context_length": int(meta.get("llama.context_length", 0)),
            "llama.embedding_length": int(meta.get("llama.embedding_length", 0)),
        }
        template = m.info.get("template", "")
    else:
        info = {
            "general.architecture": "bert",
            "bert.context_length": EMBED_MAX_TOKENS,
            "bert.embedding_length": EMBED_DIM,
        }
        template = ""
    return JSONResponse(
        {
            "modelfile": f"# served by the workshop's offline server\nFROM {m.path}\n",
            "parameters": "",
            "template": template,
            "details": m.details(),
            "model_info": info,
            "capabilities": m.capabilities,
            "modified_at": m.listing()["modified_at"],
        }
    )


async def pull(request: Request) -> Response:
    body = await read_body(request)
    m = registry_of(request).find(body.get("model") or body.get("name"))
    if field_of(body, "stream", (bool,), "true or false (a JSON boolean)", True):
        lines = [{"status": "pulling manifest"}, {"status": f"{m.name} ships with the workshop"}, {"status": "success"}]
        return Response(b"".join(ndjson(x) for x in lines), media_type="application/x-ndjson")
    return JSONResponse({"status": "success"})


def final_fields(stats: GenerationStats, load_ns: int, started_ns: int) -> dict:
    """The metric fields of a final Ollama response (durations in nanoseconds)."""
    return {
        "done_reason": stats.done_reason,
        "done": True,
        "total_duration": time.perf_counter_ns() - started_ns,
        "load_duration": load_ns,
        "prompt_eval_count": stats.prompt_eval_count,
        "prompt_eval_duration": stats.prompt_eval_duration,
        "eval_count": stats.eval_count,
        "eval_duration": stats.eval_duration,
    }


def generation_job(
    m: Served,
    opts: SamplingOptions,
    grammar: object,
    keep_alive: float | None,
    make_prompt: Callable[[object], str],
    shape: Callable[[str], dict],
    finish: Callable[[str], dict] | None = None,
) -> Job:
    """Queue for the model and generate in a worker thread: Ollama's lines, the last one with the metrics.

    With `finish` (a constrained tool call), the pieces are collected, not streamed, and finish(text) is the one line
    sent before the last, as Ollama sends a call whole once it has parsed it.
    """
    started = time.perf_counter_ns()

    def body(model: object, load_ns: int, cancelled: threading.Event) -> Iterator[dict]:
        prompt = make_prompt(model)  # a template that rejects the messages raises here, before any line
        stats = GenerationStats(logprobs=[] if opts.top_logprobs >= 0 else None)
        pieces = model.stream(prompt, opts, grammar, stats)
        collected, sent = [], 0

        def logprobs() -> dict:  # the entries of the tokens decoded since the last line
            nonlocal sent
            if stats.logprobs is None:
                return {}
            new, sent = stats.logprobs[sent:], len(stats.logprobs)
            return {"logprobs": new} if new else {}

        try:
            for piece in pieces:
                if cancelled.is_set():
                    return
                if finish is not None:
                    collected.append(piece)
                    continue
                yield {"model": m.name, "created_at": now_iso(), **shape(piece), **logprobs(), "done": False}
        finally:
            pieces.close()
        if finish is not None:
            yield {"model": m.name, "created_at": now_iso(), **finish("".join(collected)), **logprobs(), "done": False}
        yield {
            "model": m.name,
            "created_at": now_iso(),
            **shape(""),
            **logprobs(),
            **final_fields(stats, load_ns, started),
        }

    return Job(queued(m, keep_alive, body))


async def generation(
    request: Request,
    m: Served,
    opts: SamplingOptions,
    grammar: object,
    stream: bool,
    keep_alive: float | None,
    make_prompt: Callable[[object], str],
    shape: Callable[[str], dict],
    text_of: Callable[[dict], str],
    finish: Callable[[str], dict] | None = None,
) -> Response:
    """Queue for the model, generate in a worker thread, answer streamed or whole."""

    def merge(lines: list[dict]) -> dict:
        merged = {**lines[-1], **shape("".join(text_of(x) for x in lines[:-1]))}
        calls = [c for x in lines for c in (x.get("message") or {}).get("tool_calls") or []]
        if calls:
            merged["message"]["tool_calls"] = calls
        entries = [e for x in lines for e in x.get("logprobs") or []]
        if entries:
            merged["logprobs"] = entries
        return merged

    return await answer(
        request, generation_job(m, opts, grammar, keep_alive, make_prompt, shape, finish), stream, merge
    )


def chat_plan(registry: Registry, body: dict, choice: object = "auto") -> dict:
    """Everything a chat request needs, checked before it queues (the /api/chat and /v1 handlers share it)."""
    m, opts, grammar, stream, keep_alive = common_fields(registry, body)
    messages = check_messages(body.get("messages") if body.get("messages") is not None else [], m.name)
    tools = check_tools(body.get("tools"))
    calls = call_tools(messages, tools, choice)
    if calls:
        try:
            grammar = m.tool_grammar(calls)  # a call replaces `format`: the arguments follow the tool's schema
        except ValueError as exc:
            raise ApiError(400, str(exc)) from exc
    prompt_messages = template_messages(messages, calls)
    return {
        "m": m,
        "opts": opts,
        "grammar": grammar,
        "stream": stream,
        "keep_alive": keep_alive,
        "messages": messages,
        "make_prompt": lambda model: model.chat_prompt(prompt_messages, opts.num_ctx),
        "shape": lambda piece: {"message": {"role": "assistant", "content": piece}},
        "finish": (lambda text: {"message": tool_call_message(text)}) if calls else None,
    }


async def load_only(request: Request, m: Served, keep_alive: float | None, shape: dict) -> Response:
    """An empty chat/prompt: load the model (done_reason "load"), or unload it with keep_alive 0 ("unload")."""

    def work(cancelled: threading.Event) -> Iterator[dict]:
        if not m.lock.acquire(cancelled):
            return
        try:
            if keep_alive == 0:
                m.unload()
            else:
                m.get()
            yield {}
        finally:
            m.lock.release()

    kind, value = await Job(work).next(request)
    if kind == "error":
        raise ApiError(*error_text(value))
    if kind != "item":
        raise ClientDisconnect()
    reason = "unload" if keep_alive == 0 else "load"
    return JSONResponse({"model": m.name, "created_at": now_iso(), **shape, "done_reason": reason, "done": True})


async def chat(request: Request) -> Response:
    body = await read_body(request)
    p = chat_plan(registry_of(request), body)
    if not p["messages"]:  # Ollama loads (or, with keep_alive 0, unloads) the model and answers an empty message
        return await load_only(request, p["m"], p["keep_alive"], {"message": {"role": "assistant", "content": ""}})
    return await generation(
        request,
        p["m"],
        p["opts"],
        p["grammar"],
        p["stream"],
        p["keep_alive"],
        p["make_prompt"],
        p["shape"],
        lambda line: line["message"]["content"],
        p["finish"],
    )


async def generate(request: Request) -> Response:
    body = await read_body(request)
    m, opts, grammar, stream, keep_alive = common_fields(registry_of(request), body)
    prompt = field_of(body, "prompt", (str,), "a string", "")
    system = field_of(body, "system", (str,), "a string", "")
    template = field_of(body, "template", (str,), "a string", "")
    raw = field_of(body, "raw", (bool,), "true or false", False)
    context = field_of(body, "context", (list,), "a list of token ids", [])
    if raw and (template or system or context):
        raise ApiError(400, "raw mode does not support template, system, or context")
    if field_of(body, "suffix", (str,), "a string", ""):
        raise ApiError(400, f'"{m.name}" does not support insert')
    if field_of(body, "images", (list,), "a list of base64 images", []):
        raise ApiError(400, f'"{m.name}" does not support vision')
    if template:
        raise ApiError(
            400,
            "the workshop's offline server does not take a 'template' override; "
            "it formats prompts with the model's own chat template (or send raw=true)",
        )
    if not prompt:
        return await load_only(request, m, keep_alive, {"response": ""})

    def make_prompt(model: object) -> str:
        if raw:
            return prompt
        msgs = [{"role": "system", "content": system}] if system else []
        return model.chat_prompt(msgs + [{"role": "user", "content": prompt}], opts.num_ctx)

    return await generation(
        request,
        m,
        opts,
        grammar,
        stream,
        keep_alive,
        make_prompt,
        lambda piece: {"response": piece},
        lambda line: line["response"],
    )


def embed_inputs(body: dict, key: str) -> list[str]:
    """A string or a list of strings."""
    value = body.get(key)
    items = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise ApiError(400, f"'{key}' must be a string or a list of strings")
    return items


async def vectors(
    request: Request, m: Served, texts: list[str], truncate: bool, keep_alive: float | None
) -> tuple[list[list[float]], int, int]:
    """Embed texts in the model's queue: (vectors, tokens, load_ns)."""

    def body(model: object, load_ns: int, cancelled: threading.Event) -> Iterator[dict]:
        if not truncate:
            too_long = [i for i, n in enumerate(model.count_tokens(texts)) if n > EMBED_MAX_TOKENS]
            if too_long:
                raise ApiError(
                    400,
                    f"input {too_long[0]} exceeds the model's context length "
                    f"({EMBED_MAX_TOKENS} tokens); send shorter text or truncate=true",
                )
        vecs, n_tokens = model.embed(texts) if texts else ([], 0)
        yield {"vectors": [[float(x) for x in v] for v in vecs], "tokens": n_tokens, "load_ns": load_ns}

    kind, value = await Job(queued(m, keep_alive, body)).next(request)
    if kind == "error":
        raise ApiError(*error_text(value))
    if kind != "item":
        raise ClientDisconnect()
    return value["vectors"], value["tokens"], value["load_ns"]


async def embed(request: Request) -> Response:
    started = time.perf_counter_ns()
    body = await read_body(request)
    m = registry_of(request).find(body.get("model"), "embed")
    texts = embed_inputs(body, "input")
    truncate = field_of(body, "truncate", (bool,), "true or false", True)
    dims = field_of(body, "dimensions", (int,), "an integer", None)
    if dims not in (None, EMBED_DIM):
        raise ApiError(400, f"{m.name} makes {EMBED_DIM}-d vectors; 'dimensions' {dims} is not supported")
    vecs, n_tokens, load_ns = await vectors(request, m, texts, truncate, keep_alive_seconds(body))
    return JSONResponse(
        {
            "model": m.name,
            "embeddings": vecs,
            "total_duration": time.perf_counter_ns() - started,
            "load_duration": load_ns,
            "prompt_eval_count": n_tokens,
        }
    )


async def embeddings(request: Request) -> Response:
    body = await read_body(request)
    m = registry_of(request).find(body.get("model"), "embed")
    prompt = field_of(body, "prompt", (str,), "a string", "")
    if not prompt:
        return JSONResponse({"embedding": []})
    vecs, _, _ = await vectors(request, m, [prompt], True, keep_alive_seconds(body))
    return JSONResponse({"embedding": vecs[0]})


# ---- the OpenAI-compatible API, as Ollama serves it under /v1 (docs/api/openai-compatibility.mdx) ------------

OPENAI_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error"}


def openai_error(status: int, message: str) -> dict:
    """OpenAI's error body, with the types Ollama uses."""
    return {
        "error": {"message": message, "type": OPENAI_ERROR_TYPES.get(status, "api_error"), "param": None, "code": None}
    }


def sse(data: dict | str) -> bytes:
    """One Server-Sent Event of the OpenAI stream."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


def openai_text(content: object, i: int, model: str) -> str | None:
    """A message's content: a string, or a list of text parts joined (no images on the stand-in)."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in {"image_url", "input_audio"}:
                raise ApiError(400, f'"{model}" does not support vision or audio (messages[{i}] has {kind})')
            if kind != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, f'messages[{i}].content: each part must be {{"type": "text", "text": ...}}')
            texts.append(part["text"])
        return "".join(texts)
    raise ApiError(400, f"messages[{i}].content must be a string or a list of text parts")


def from_openai_calls(calls: object, i: int) -> list[dict]:
    """OpenAI's tool_calls (arguments as a JSON string) as Ollama's (arguments as an object)."""
    out = []
    for c in calls if isinstance(calls, list) else []:
        f = c.get("function") if isinstance(c, dict) else None
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            raise ApiError(400, f"messages[{i}].tool_calls: each call needs a function with a name")
        try:
            args = json.loads(f.get("arguments") or "{}") if isinstance(f.get("arguments", ""), str) else f["arguments"]
        except json.JSONDecodeError as exc:
            raise ApiError(400, f"messages[{i}].tool_calls: arguments must be a JSON object string ({exc})") from exc
        out.append({"id": c.get("id"), "function": {"name": f["name"], "arguments": args}})
    return out


def from_openai_chat(body: dict) -> tuple[dict, object, bool]:
    """An OpenAI chat request as an Ollama /api/chat body, plus its tool_choice and stream_options.include_usage."""
    model = body.get("model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, '\'messages\' must be a non-empty list of {"role": ..., "content": ...} objects')
    out, names = [], {}
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(400, f"messages[{i}] must be an object with a string 'role'")
        msg = {"role": m["role"], "content": openai_text(m.get("content"), i, str(model)) or ""}
        if m.get("tool_calls"):
            msg["tool_calls"] = from_openai_calls(m["tool_calls"], i)
            names.update({c["id"]: c["function"]["name"] for c in msg["tool_calls"] if c.get("id")})
        if m["role"] == "tool":
            msg["tool_name"] = m.get("name") or names.get(m.get("tool_call_id"), "")
        out.append(msg)
    n = field_of(body, "n", (int,), "an integer", 1)
    if n != 1:
        raise ApiError(400, "the workshop's offline server makes one choice per request: 'n' must be 1")
    options = {
        "temperature": body.get("temperature", 1.0),
        "top_p": body.get("top_p", 1.0),
        "seed": body.get("seed"),
        "num_predict": body.get("max_completion_tokens", body.get("max_tokens")),
        "stop": body.get("stop"),
    }
    fmt = None
    rf = field_of(body, "response_format", (dict,), 'an object such as {"type": "json_object"}', {})
    if rf.get("type") == "json_object":
        fmt = "json"
    elif rf.get("type") == "json_schema":
        fmt = (rf.get("json_schema") or {}).get("schema")
        if not isinstance(fmt, dict):
            raise ApiError(400, 'response_format json_schema needs {"json_schema": {"name": ..., "schema": {...}}}')
    elif rf and rf.get("type") != "text":
        raise ApiError(400, f"response_format type {rf.get('type')!r} is not one of text, json_object, json_schema")
    choice = body.get("tool_choice") or "auto"
    if isinstance(choice, dict):
        choice = (choice.get("function") or {}).get("name")
    if not isinstance(choice, str):
        raise ApiError(
            400, 'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}'
        )
    stream_options = field_of(body, "stream_options", (dict,), "an object", {})
    internal = {
        "model": model,
        "messages": out,
        "options": options,
        "format": fmt,
        "tools": body.get("tools"),
        "stream": field_of(body, "stream", (bool,), "true or false", False),
        "logprobs": body.get("logprobs"),
        "top_logprobs": body.get("top_logprobs"),
    }
    return internal, choice, bool(stream_options.get("include_usage"))


def openai_calls(calls: list[dict] | None) -> list[dict]:
    """Ollama's tool_calls as OpenAI's (arguments as a JSON string)."""
    return [
        {
            "id": c.get("id") or f"call_{i}",
            "index": c["function"].get("index", i),
            "type": "function",
            "function": {"name": c["function"]["name"], "arguments": json.dumps(c["function"]["arguments"])},
        }
        for i, c in enumerate(calls or [])
    ]


def openai_usage(line: dict) -> dict:
    """OpenAI's usage from an Ollama final line."""
    prompt, completion = line.get("prompt_eval_count", 0), line.get("eval_count", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def finish_reason(line: dict, called: bool) -> str:
    """OpenAI's finish_reason: Ollama's done_reason, "tool_calls" when a call ended the answer."""
    reason = line.get("done_reason") or "stop"
    return "tool_calls" if called and reason == "stop" else reason


class ChatChunks:
    """Ollama's chat lines as OpenAI chunks: role first, content or tool calls, a finish chunk, usage, [DONE]."""

    def __init__(self, cid: str, include_usage: bool) -> None:
        self.cid, self.include_usage, self.created = cid, include_usage, int(time.time())
        self.first, self.called = True, False

    def chunk(self, model: str, delta: dict, reason: str | None, logprobs: list | None = None) -> dict:
        choice = {"index": 0, "delta": delta, "finish_reason": reason}
        if logprobs:
            choice["logprobs"] = {"content": logprobs}
        return {
            "id": self.cid,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": model,
            "system_fingerprint": "fp_ollama",
            "choices": [choice],
        }

    def encode(self, line: dict) -> bytes:
        msg, out = line.get("message") or {}, b""
        trailer = line.get("done") and not self.first and not msg.get("content") and not msg.get("tool_calls")
        if not trailer:
            delta = {"role": "assistant"} if self.first else {}
            delta["content"] = msg.get("content") or ""
            if msg.get("tool_calls"):
                delta["tool_calls"] = openai_calls(msg["tool_calls"])
                self.called = True
            out += sse(self.chunk(line["model"], delta, None, line.get("logprobs")))
            self.first = False
        if line.get("done"):
            finish = self.chunk(line["model"], {}, finish_reason(line, self.called))
            out += sse(finish)
            if self.include_usage:
                out += sse({**finish, "choices": [], "usage": openai_usage(line)})
            out += sse("[DONE]")
        return out

    @staticmethod
    def error(message: str) -> bytes:
        return sse(openai_error(500, message))


def to_completion(cid: str, line: dict) -> dict:
    """A merged Ollama chat answer as an OpenAI chat.completion."""
    msg = line["message"]
    calls = openai_calls(msg.get("tool_calls"))
    message = {"role": "assistant", "content": msg.get("content") or ""}
    if calls:
        message["tool_calls"] = calls
    choice = {"index": 0, "message": message, "finish_reason": finish_reason(line, bool(calls))}
    if line.get("logprobs"):
        choice["logprobs"] = {"content": line["logprobs"]}
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": line["model"],
        "system_fingerprint": "fp_ollama",
        "choices": [choice],
        "usage": openai_usage(line),
    }


def completion_id() -> str:
    """An id for a chat completion, as Ollama makes them."""
    return f"chatcmpl-{int.from_bytes(os.urandom(2), 'big') % 1000}"


async def v1_chat(request: Request) -> Response:
    body = await read_body(request)
    internal, choice, include_usage = from_openai_chat(body)
    p = chat_plan(registry_of(request), internal, choice)
    job = generation_job(p["m"], p["opts"], p["grammar"], p["keep_alive"], p["make_prompt"], p["shape"], p["finish"])
    cid = completion_id()

    def merge(lines: list[dict]) -> dict:
        merged = {
            **lines[-1],
            "message": {"role": "assistant", "content": "".join(x["message"]["content"] for x in lines[:-1])},
        }
        calls = [c for x in lines for c in x["message"].get("tool_calls") or []]
        if calls:
            merged["message"]["tool_calls"] = calls
        logprobs = [e for x in lines for e in x.get("logprobs") or []]
        if logprobs:
            merged["logprobs"] = logprobs
        return to_completion(cid, merged)

    chunks = ChatChunks(cid, include_usage)
    return await answer(request, job, p["stream"], merge, chunks.encode, chunks.error, "text/event-stream")


async def v1_embeddings(request: Request) -> Response:
    body = await read_body(request)
    m = registry_of(request).find(body.get("model"), "embed")
    value = body.get("input")
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(x, str) for x in texts):
        raise ApiError(400, "'input' must be a string or a non-empty list of strings (token ids are not supported)")
    fmt = field_of(body, "encoding_format", (str,), '"float" or "base64"', "float")
    if fmt not in {"float", "base64"}:
        raise ApiError(400, f'encoding_format must be "float" or "base64", got {fmt!r}')
    dims = field_of(body, "dimensions", (int,), "an integer", None)
    if dims not in (None, EMBED_DIM):
        raise ApiError(400, f"{m.name} makes {EMBED_DIM}-d vectors; 'dimensions' {dims} is not supported")
    vecs, n_tokens, _ = await vectors(request, m, texts, True, None)

    def encoded(v: list[float]) -> list[float] | str:
        return base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() if fmt == "base64" else v

    return JSONResponse(
        {
            "object": "list",
            "model": body["model"],
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
            "data": [{"object": "embedding", "embedding": encoded(v), "index": i} for i, v in enumerate(vecs)],
        }
    )


def openai_model(m: Served) -> dict:
    """One entry of /v1/models."""
    return {"id": m.name, "object": "model", "created": int(m.path.stat().st_mtime), "owned_by": "library"}


async def v1_models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [openai_model(m) for m in registry_of(request).models.values()]})


async def v1_model(request: Request) -> Response:
    name = request.path_params["model"]
    served = registry_of(request).models.get(canonical(name))
    if served is None:
        raise ApiError(
            404,
            f"model '{name}' not found: the workshop's offline server serves only "
            f"{', '.join(registry_of(request).models)}",
        )
    return JSONResponse(openai_model(served))


async def not_served(request: Request) -> Response:
    """Ollama endpoints the stand-in does not serve: a JSON 404 that says what to do instead."""
    await request.body()  # read it, so the kept-alive connection is ready for the next request
    path = request.url.path
    what = (
        f"{path}: of the OpenAI-compatible API it serves /v1/chat/completions, /v1/embeddings and /v1/models"
        if path.startswith("/v1")
        else f"{path}: its models ship inside pip packages and cannot be created, copied, pushed or deleted"
    )
    raise ApiError(
        404,
        f"the workshop's offline server does not serve {what}. For that, use a real Ollama "
        "(install it, and make sure WORKSHOP_OFFLINE is not set).",
    )


async def http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's 404/405 as Ollama-style JSON (never HTML or plain text)."""
    if exc.status_code == 404:
        message = f"404 page not found: {request.method} {request.url.path} is not an endpoint of the offline server"
    elif exc.status_code == 405:
        message = f"405 method not allowed: {request.method} {request.url.path} (allowed: {exc.headers.get('Allow')})"
    else:
        message = str(exc.detail)
    return error_response(request, exc.status_code, message, exc.headers)


def error_response(request: Request, status: int, message: str, headers: dict | None = None) -> Response:
    """An error in the shape of the API asked: Ollama's {"error": message}, or OpenAI's under /v1."""
    if request.url.path.startswith("/v1/"):
        return JSONResponse(openai_error(status, message), status_code=status, headers=headers)
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def api_error(request: Request, exc: ApiError) -> Response:
    return error_response(request, exc.status, exc.message, exc.headers)


async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
    return Response(status_code=499)


async def internal_error(request: Request, exc: Exception) -> Response:
    status, message = error_text(exc)
    return error_response(request, status, message)


def make_app(registry: Registry, request_timeout: float = REQUEST_TIMEOUT_S) -> Starlette:
    """The stand-in's ASGI app over `registry`."""
    routes = [
        Route("/", root, methods=["GET"]),
        Route("/api/version", version, methods=["GET"]),
        Route("/api/tags", tags, methods=["GET"]),
        Route("/api/ps", ps, methods=["GET"]),
        Route("/api/show", show, methods=["POST"]),
        Route("/api/pull", pull, methods=["POST"]),
        Route("/api/chat", chat, methods=["POST"]),
        Route("/api/generate", generate, methods=["POST"]),
        Route("/api/embed", embed, methods=["POST"]),
        Route("/api/embeddings", embeddings, methods=["POST"]),
        *(Route(p, not_served, methods=["POST"]) for p in ("/api/push", "/api/create", "/api/copy")),
        Route("/api/delete", not_served, methods=["DELETE"]),
        Route("/api/blobs/{digest}", not_served, methods=["POST", "HEAD"]),
        Route("/v1/chat/completions", v1_chat, methods=["POST"]),
        Route("/v1/embeddings", v1_embeddings, methods=["POST"]),
        Route("/v1/models", v1_models, methods=["GET"]),
        Route("/v1/models/{model:path}", v1_model, methods=["GET"]),
        Route("/v1/{rest:path}", not_served, methods=["GET", "POST"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            HTTPException: http_error,
            ApiError: api_error,
            ClientDisconnect: client_gone,
            Exception: internal_error,
        },
    )
    app.state.registry = registry
    app.state.request_timeout = request_timeout
    return app


# ---- the HTTP server ------------------------------------------------------------------------------------


class StandInProtocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for the request line and headers, and JSON for a bad request."""

    request_timeout = REQUEST_TIMEOUT_S

    def connection_made(self, transport) -> None:  # noqa: ANN001 - asyncio's signature
        super().connection_made(transport)
        self._deadline = self.loop.call_later(self.request_timeout, self._timed_out)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            if self._deadline is None and self.conn.trailing_data[0]:
                self._deadline = self.loop.call_later(self.request_timeout, self._timed_out)
        elif self._deadline is not None:  # the headers are in; the app times out a slow body itself
            self._deadline.cancel()
            self._deadline = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.our_state is h11.IDLE and self.conn.trailing_data[0]:
            self.send_json_error(408, f"the request did not arrive within {self.request_timeout:g} s")
        else:
            self.transport.close()  # an idle connection that never sent a request

    def send_400_response(self, msg: str) -> None:  # uvicorn's hook for a request h11 cannot parse
        self.send_json_error(400, f"{msg} (malformed request line, header or Content-Length)")

    def send_json_error(self, status: int, message: str) -> None:
        """Answer {"error": message} and close the connection."""
        data = json.dumps({"error": message}).encode()
        headers = [
            (b"content-type", b"application/json; charset=utf-8"),
            (b"content-length", str(len(data)).encode()),
            (b"connection", b"close"),
        ]
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=status, headers=headers)))
            self.transport.write(self.conn.send(h11.Data(data=data)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            pass
        self.transport.close()


class StandInServer:
    """uvicorn serving the stand-in on a socket bound to 127.0.0.1 at construction (so a taken port fails early)."""

    def __init__(self, port: int, registry: Registry, request_timeout: float = REQUEST_TIMEOUT_S) -> None:
        self.registry = registry
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind(("127.0.0.1", port))
        except OSError:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        protocol = type("Protocol", (StandInProtocol,), {"request_timeout": request_timeout})
        config = uvicorn.Config(
            make_app(registry, request_timeout),
            http=protocol,
            ws="none",
            lifespan="off",
            log_config=None,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=3,
            server_header=False,
            loop="asyncio",
        )
        self.server = uvicorn.Server(config)
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        """Serve until shutdown() (or, in the main thread, SIGTERM / Ctrl-C)."""
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Ask the server to stop and wait until it has."""
        self.server.should_exit = True
        self._stopped.wait(timeout)

    def server_close(self) -> None:
        """Close the listening socket."""
        self.socket.close()


def make_server(port: int, registry: Registry, request_timeout: float = REQUEST_TIMEOUT_S) -> StandInServer:
    """Bind 127.0.0.1:port (never another interface) with the given registry."""
    return StandInServer(port, registry, request_timeout)
