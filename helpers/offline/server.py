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
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from helpers.config import REPO_ROOT, STAND_IN_CHAT_MODEL
from helpers.offline.models import (
    EMBED_DIM,
    EMBED_MAX_TOKENS,
    STAND_IN_NUM_PREDICT,
    GenerationStats,
    SamplingOptions,
    TemplateRejectedError,
    make_grammar,
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
            self.info = {"template": getattr(self.instance, "template", ""),
                         "metadata": dict(getattr(self.instance, "metadata", {}) or {})}
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

    def details(self) -> dict:
        """Ollama's `details` object."""
        fmt = "gguf" if self.path.suffix == ".gguf" else "onnx"
        return {"parent_model": "", "format": fmt, "family": self.family, "families": [self.family],
                "parameter_size": self.parameter_size, "quantization_level": self.quantization}

    def listing(self) -> dict:
        """One entry of /api/tags."""
        stat = self.path.stat()
        modified = datetime.fromtimestamp(stat.st_mtime, UTC).isoformat()
        return {"name": self.name, "model": self.name, "modified_at": modified, "size": stat.st_size,
                "digest": hashlib.sha256(f"{self.name}:{stat.st_size}".encode()).hexdigest(), "details": self.details()}


def default_models(chat_gguf: str | None = None, chat_name: str | None = None) -> list[Served]:
    """SmolLM2-135M (or the GGUF file given) and all-MiniLM-L6-v2, from their pip packages."""
    from helpers.offline.models import ChatModel, Embedder, minilm_onnx, smollm2_gguf

    gguf = Path(chat_gguf) if chat_gguf else smollm2_gguf()
    name = chat_name or (STAND_IN_CHAT_MODEL if not chat_gguf else canonical(gguf.stem.lower()))
    return [
        Served(name=canonical(name), kind="chat", path=gguf, family="llama",
               parameter_size="135M" if not chat_gguf else "unknown",
               quantization="Q4_1" if not chat_gguf else "unknown", loader=lambda: ChatModel(gguf)),
        Served(name=EMBED_NAME, kind="embed", path=minilm_onnx(), family="bert", parameter_size="23M",
               quantization="int8", loader=Embedder),
    ]


class Registry:
    """The models served, by canonical name."""

    def __init__(self, chat_gguf: str | None = None, chat_name: str | None = None,
                 models: list[Served] | None = None) -> None:
        served = models if models is not None else default_models(chat_gguf, chat_name)
        self.models: dict[str, Served] = {m.name: m for m in served}

    def find(self, name: object, kind: str | None = None) -> Served:
        """The served model called `name`, or an ApiError that says what is served instead."""
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "model is required")
        served = self.models.get(canonical(name))
        if served is None:
            names = ", ".join(self.models)
            raise ApiError(404, f"model '{name}' not found: the workshop's offline server serves only {names}. "
                                f"Set CHAT_MODEL / EMBED_MODEL to one of those, or {USE_REAL_OLLAMA.format(name=name)}.")
        if kind == "chat" and served.kind != "chat":
            raise ApiError(400, f"\"{served.name}\" does not support chat or generate (it is an embedding model)")
        if kind == "embed" and served.kind != "embed":
            raise ApiError(400, f"\"{served.name}\" does not support embeddings; use {EMBED_NAME}")
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
        raise ApiError(400, f"'keep_alive' must be a number of seconds or a duration such as \"5m\", got {json.dumps(value)}")
    if not isinstance(value, str):
        return float(value)
    text = value.strip()
    if text in {"0", "+0", "-0"}:
        return 0.0
    if not DURATION.match(text):
        raise ApiError(400, f"'keep_alive' {value!r} is not a duration: use seconds (a number) or e.g. \"5m\", \"1h\", \"0\"")
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    sign = -1 if text.startswith("-") else 1
    return sign * sum(float(n) * units[u] for n, _, _, u in re.findall(r"((\d+(\.\d*)?|\.\d+))(ns|us|µs|ms|s|m|h)", text))


def check_messages(messages: object, model: str) -> list[dict]:
    """Ollama's `messages`: a list of {role, content, ...} objects with text content."""
    if not isinstance(messages, list):
        raise ApiError(400, "'messages' must be a list of {\"role\": ..., \"content\": ...} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(400, f"messages[{i}] must be an object with a string 'role'")
        content = m.get("content")
        if content is not None and not isinstance(content, str):
            raise ApiError(400, f"messages[{i}].content must be a string, got {type(content).__name__}: Ollama's API "
                                "takes the text as one string (pictures go in 'images'), not a list of parts")
        if m.get("images"):
            raise ApiError(400, f"\"{model}\" does not support vision (messages[{i}] has images)")
    return messages


def common_fields(registry: Registry, body: dict) -> tuple[Served, SamplingOptions, object, bool, float | None]:
    """Model, options, grammar, stream and keep_alive of a chat/generate request, all checked up front."""
    m = registry.find(body.get("model"), "chat")
    stream = field_of(body, "stream", (bool,), "true or false (a JSON boolean)", True)
    keep_alive = keep_alive_seconds(body)
    think = field_of(body, "think", (bool, str), "true, false or \"high\"/\"medium\"/\"low\"", False)
    if think:
        raise ApiError(400, f"\"{m.name}\" does not support thinking")
    if field_of(body, "tools", (list,), "a list of tools", []):
        raise ApiError(400, f"\"{m.name}\" does not support tools")
    top = field_of(body, "top_logprobs", (int,), "an integer", 0)
    if not 0 <= top <= 20:
        raise ApiError(400, "top_logprobs must be between 0 and 20")
    if field_of(body, "logprobs", (bool,), "true or false", False) or top:
        raise ApiError(400, "the workshop's offline server does not return logprobs; use a real Ollama for them")
    try:
        opts = SamplingOptions.from_request(body.get("options"))
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


def queued(served: Served, keep_alive: float | None,
           body: Callable[[object, int, threading.Event], Iterator[dict]]) -> Callable[[threading.Event], Iterator[dict]]:
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


async def answer(request: Request, job: Job, stream: bool, merge: Callable[[list[dict]], dict]) -> Response:
    """Pull the first line, then stream (errors as NDJSON lines) or answer one JSON object merged from all."""
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
            yield ndjson(first)
            while True:
                kind, value = await job.next(request)
                if kind == "item":
                    yield ndjson(value)
                elif kind == "error":
                    yield ndjson({"error": error_text(value)[1]})  # Ollama's mid-stream error
                    return
                else:
                    if kind == "gone":
                        log.info("client hung up mid-stream; generation stopped")
                    return
        finally:
            job.cancel()

    return StreamingResponse(rest(), media_type="application/x-ndjson")


# ---- endpoints ----------------------------------------------------------------------------------------


async def read_body(request: Request) -> dict:
    """The JSON object of a request; Ollama's 400s for a missing or malformed body; 408 if it never arrives."""
    try:
        raw = await asyncio.wait_for(request.body(), request.app.state.request_timeout)
    except TimeoutError as exc:
        raise ApiError(408, f"the request body did not arrive within {request.app.state.request_timeout:g} s",
                       headers={"Connection": "close"}) from exc
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
    return JSONResponse({"version": STAND_IN_VERSION, "workshop_stand_in": True, "pid": os.getpid(),
                         "checkout": str(REPO_ROOT), "port": request.scope["server"][1],
                         "models": list(registry_of(request).models), "num_predict_default": STAND_IN_NUM_PREDICT})


async def tags(request: Request) -> Response:
    return JSONResponse({"models": [m.listing() for m in registry_of(request).models.values()]})


async def ps(request: Request) -> Response:
    loaded = [m for m in registry_of(request).models.values() if m.instance is not None]
    return JSONResponse({"models": [{**m.listing(), "expires_at": "2099-01-01T00:00:00Z", "size_vram": 0,
                                     "context_length": SamplingOptions().num_ctx if m.kind == "chat" else EMBED_MAX_TOKENS}
                                    for m in loaded]})


async def show(request: Request) -> Response:
    body = await read_body(request)
    m = registry_of(request).find(body.get("model") or body.get("name"))
    if not m.info:
        await asyncio.to_thread(m.get)
    if m.kind == "chat":
        meta = m.info.get("metadata", {})
        info = {"general.architecture": "llama", "llama.context_length": int(meta.get("llama.context_length", 0)),
                "llama.embedding_length": int(meta.get("llama.embedding_length", 0))}
        template, caps = m.info.get("template", ""), ["completion"]
    else:
        info = {"general.architecture": "bert", "bert.context_length": EMBED_MAX_TOKENS,
                "bert.embedding_length": EMBED_DIM}
        template, caps = "", ["embedding"]
    return JSONResponse({
        "modelfile": f"# served by the workshop's offline server\nFROM {m.path}\n",
        "parameters": "", "template": template, "details": m.details(), "model_info": info,
        "capabilities": caps, "modified_at": m.listing()["modified_at"]})


async def pull(request: Request) -> Response:
    body = await read_body(request)
    m = registry_of(request).find(body.get("model") or body.get("name"))
    if field_of(body, "stream", (bool,), "true or false (a JSON boolean)", True):
        lines = [{"status": "pulling manifest"}, {"status": f"{m.name} ships with the workshop"}, {"status": "success"}]
        return Response(b"".join(ndjson(x) for x in lines), media_type="application/x-ndjson")
    return JSONResponse({"status": "success"})


def final_fields(stats: GenerationStats, load_ns: int, started_ns: int) -> dict:
    """The metric fields of a final Ollama response (durations in nanoseconds)."""
    return {"done_reason": stats.done_reason, "done": True, "total_duration": time.perf_counter_ns() - started_ns,
            "load_duration": load_ns, "prompt_eval_count": stats.prompt_eval_count,
            "prompt_eval_duration": stats.prompt_eval_duration, "eval_count": stats.eval_count,
            "eval_duration": stats.eval_duration}


async def generation(request: Request, m: Served, opts: SamplingOptions, grammar: object, stream: bool,
                     keep_alive: float | None, make_prompt: Callable[[object], str], shape: Callable[[str], dict],
                     text_of: Callable[[dict], str]) -> Response:
    """Queue for the model, generate in a worker thread, answer streamed or whole."""
    started = time.perf_counter_ns()

    def body(model: object, load_ns: int, cancelled: threading.Event) -> Iterator[dict]:
        prompt = make_prompt(model)  # a template that rejects the messages raises here, before any line
        stats = GenerationStats()
        pieces = model.stream(prompt, opts, grammar, stats)
        try:
            for piece in pieces:
                if cancelled.is_set():
                    return
                yield {"model": m.name, "created_at": now_iso(), **shape(piece), "done": False}
        finally:
            pieces.close()
        yield {"model": m.name, "created_at": now_iso(), **shape(""), **final_fields(stats, load_ns, started)}

    def merge(lines: list[dict]) -> dict:
        return {**lines[-1], **shape("".join(text_of(x) for x in lines[:-1]))}

    return await answer(request, Job(queued(m, keep_alive, body)), stream, merge)


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
    m, opts, grammar, stream, keep_alive = common_fields(registry_of(request), body)
    messages = check_messages(body.get("messages") if body.get("messages") is not None else [], m.name)
    if not messages:  # Ollama loads (or, with keep_alive 0, unloads) the model and answers an empty message
        return await load_only(request, m, keep_alive, {"message": {"role": "assistant", "content": ""}})
    return await generation(request, m, opts, grammar, stream, keep_alive,
                            lambda model: model.chat_prompt(messages, opts.num_ctx),
                            lambda piece: {"message": {"role": "assistant", "content": piece}},
                            lambda line: line["message"]["content"])


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
        raise ApiError(400, f"\"{m.name}\" does not support insert")
    if field_of(body, "images", (list,), "a list of base64 images", []):
        raise ApiError(400, f"\"{m.name}\" does not support vision")
    if template:
        raise ApiError(400, "the workshop's offline server does not take a 'template' override; "
                            "it formats prompts with the model's own chat template (or send raw=true)")
    if not prompt:
        return await load_only(request, m, keep_alive, {"response": ""})

    def make_prompt(model: object) -> str:
        if raw:
            return prompt
        msgs = [{"role": "system", "content": system}] if system else []
        return model.chat_prompt(msgs + [{"role": "user", "content": prompt}], opts.num_ctx)

    return await generation(request, m, opts, grammar, stream, keep_alive, make_prompt,
                            lambda piece: {"response": piece}, lambda line: line["response"])


def embed_inputs(body: dict, key: str) -> list[str]:
    """A string or a list of strings."""
    value = body.get(key)
    items = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise ApiError(400, f"'{key}' must be a string or a list of strings")
    return items


async def vectors(request: Request, m: Served, texts: list[str], truncate: bool,
                  keep_alive: float | None) -> tuple[list[list[float]], int, int]:
    """Embed texts in the model's queue: (vectors, tokens, load_ns)."""

    def body(model: object, load_ns: int, cancelled: threading.Event) -> Iterator[dict]:
        if not truncate:
            too_long = [i for i, n in enumerate(model.count_tokens(texts)) if n > EMBED_MAX_TOKENS]
            if too_long:
                raise ApiError(400, f"input {too_long[0]} exceeds the model's context length "
                                    f"({EMBED_MAX_TOKENS} tokens); send shorter text or truncate=true")
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
    return JSONResponse({"model": m.name, "embeddings": vecs, "total_duration": time.perf_counter_ns() - started,
                         "load_duration": load_ns, "prompt_eval_count": n_tokens})


async def embeddings(request: Request) -> Response:
    body = await read_body(request)
    m = registry_of(request).find(body.get("model"), "embed")
    prompt = field_of(body, "prompt", (str,), "a string", "")
    if not prompt:
        return JSONResponse({"embedding": []})
    vecs, _, _ = await vectors(request, m, [prompt], True, keep_alive_seconds(body))
    return JSONResponse({"embedding": vecs[0]})


async def not_served(request: Request) -> Response:
    """Ollama endpoints the stand-in does not serve: a JSON 404 that says what to do instead."""
    await request.body()  # read it, so the kept-alive connection is ready for the next request
    path = request.url.path
    what = ("the OpenAI-compatible API" if path.startswith("/v1") else
            f"{path}: its models ship inside pip packages and cannot be created, copied, pushed or deleted")
    raise ApiError(404, f"the workshop's offline server does not serve {what}. For that, use a real Ollama "
                        "(install it, and make sure WORKSHOP_OFFLINE is not set).")


async def http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's 404/405 as Ollama-style JSON (never HTML or plain text)."""
    if exc.status_code == 404:
        message = f"404 page not found: {request.method} {request.url.path} is not an endpoint of the offline server"
    elif exc.status_code == 405:
        message = f"405 method not allowed: {request.method} {request.url.path} (allowed: {exc.headers.get('Allow')})"
    else:
        message = str(exc.detail)
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


async def api_error(request: Request, exc: ApiError) -> Response:
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)


async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
    return Response(status_code=499)


async def internal_error(request: Request, exc: Exception) -> Response:
    status, message = error_text(exc)
    return JSONResponse({"error": message}, status_code=status)


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
        Route("/v1/{rest:path}", not_served, methods=["GET", "POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={
        HTTPException: http_error, ApiError: api_error, ClientDisconnect: client_gone, Exception: internal_error})
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
        headers = [(b"content-type", b"application/json; charset=utf-8"), (b"content-length", str(len(data)).encode()),
                   (b"connection", b"close")]
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
        config = uvicorn.Config(make_app(registry, request_timeout), http=protocol, ws="none", lifespan="off",
                                log_config=None, timeout_keep_alive=5, timeout_graceful_shutdown=3,
                                server_header=False, loop="asyncio")
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
