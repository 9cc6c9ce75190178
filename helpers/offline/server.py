"""An Ollama-compatible HTTP server for the workshop's offline mode (infrastructure, not a lesson).

It speaks enough of the Ollama REST API (docs/api.md of the Ollama project) that the official
`ollama` Python client works unchanged: /api/version, /api/tags, /api/ps, /api/show, /api/chat,
/api/generate, /api/embed, /api/embeddings, /api/pull. It binds 127.0.0.1 only; requests for one
model wait in a FIFO queue; a client that hangs up mid-stream stops its generation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from helpers.config import STAND_IN_CHAT_MODEL
from helpers.offline.models import (
    EMBED_DIM,
    EMBED_MAX_TOKENS,
    ChatModel,
    Embedder,
    GenerationStats,
    SamplingOptions,
    make_grammar,
)

log = logging.getLogger("workshop.stand-in")
STAND_IN_VERSION = "0.6.3"  # the Ollama API level it follows; /api/version also says it is the stand-in
EMBED_NAME = "all-minilm:latest"


class ApiError(Exception):
    """An error answered as HTTP status + {"error": message}, as Ollama does."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class FifoLock:
    """A lock that serves waiters in arrival order, so queued requests are never starved."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    def __enter__(self) -> FifoLock:
        with self._cv:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._cv.wait_for(lambda: self._serving == ticket)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cv:
            self._serving += 1
            self._cv.notify_all()

    @property
    def waiting(self) -> int:
        """Requests holding or waiting for the lock."""
        return self._next_ticket - self._serving


def now_iso() -> str:
    """The current UTC time in the ISO-8601 form Ollama uses."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def canonical(name: str) -> str:
    """'all-minilm' -> 'all-minilm:latest'; names with a tag are kept."""
    name = (name or "").strip()
    return name if ":" in name else f"{name}:latest"


@dataclass
class Served:
    """One model the stand-in serves."""

    name: str
    kind: str  # "chat" or "embed"
    path: Path
    family: str
    parameter_size: str
    quantization: str
    loader: object  # () -> ChatModel | Embedder
    instance: object = None
    load_ns: int = 0
    lock: FifoLock | None = None
    loading: threading.Lock | None = None

    def __post_init__(self) -> None:
        self.lock = FifoLock()
        self.loading = threading.Lock()

    def get(self) -> tuple[object, int]:
        """The loaded model, and the nanoseconds this call spent loading it (0 when already loaded)."""
        with self.loading:
            if self.instance is not None:
                return self.instance, 0
            start = time.perf_counter_ns()
            self.instance = self.loader()
            self.load_ns = time.perf_counter_ns() - start
            log.info("loaded %s in %.2f s", self.name, self.load_ns / 1e9)
            return self.instance, self.load_ns

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


class Registry:
    """The models served, by canonical name."""

    def __init__(self, chat_gguf: str | None = None, chat_name: str | None = None) -> None:
        from helpers.offline.models import minilm_onnx, smollm2_gguf

        gguf = Path(chat_gguf) if chat_gguf else smollm2_gguf()
        name = chat_name or (STAND_IN_CHAT_MODEL if not chat_gguf else canonical(gguf.stem.lower()))
        self.models: dict[str, Served] = {}
        self.models[canonical(name)] = Served(
            name=canonical(name), kind="chat", path=gguf, family="llama",
            parameter_size="135M" if not chat_gguf else "unknown",
            quantization="Q4_1" if not chat_gguf else "unknown", loader=lambda: ChatModel(gguf),
        )
        self.models[EMBED_NAME] = Served(
            name=EMBED_NAME, kind="embed", path=minilm_onnx(), family="bert", parameter_size="23M",
            quantization="int8", loader=Embedder,
        )

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
                f"Set CHAT_MODEL / EMBED_MODEL to one of those, or install Ollama, run "
                f"`ollama pull {name}` and unset WORKSHOP_OFFLINE so the workshop uses it.",
            )
        if kind == "chat" and served.kind != "chat":
            raise ApiError(400, f"\"{served.name}\" does not support chat or generate (it is an embedding model)")
        if kind == "embed" and served.kind != "embed":
            raise ApiError(400, f"\"{served.name}\" does not support embeddings; use {EMBED_NAME}")
        return served


def _final_fields(stats: GenerationStats, load_ns: int, started_ns: int) -> dict:
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


class StandInHandler(BaseHTTPRequestHandler):
    """Routes requests to the registry; writes JSON, or NDJSON in HTTP/1.1 chunks when streaming."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "workshop-stand-in"
    registry: Registry  # set by make_server

    # ---- plumbing -------------------------------------------------------------------------
    def log_message(self, fmt: str, *args: object) -> None:  # noqa: D102 - route http.server logs
        log.info("%s %s", self.address_string(), fmt % args)

    def _send_json(self, status: int, body: dict | str) -> None:
        data = (json.dumps(body) if isinstance(body, dict) else body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8" if isinstance(body, dict) else "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _stream(self, lines: Iterator[dict]) -> None:
        """Send NDJSON lines as HTTP chunks; a hang-up closes the generator, which stops generation."""
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for line in lines:
                data = (json.dumps(line) + "\n").encode("utf-8")
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            log.info("client hung up mid-stream; generation stopped")
            self.close_connection = True
        finally:
            close = getattr(lines, "close", None)
            if close:
                close()

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"invalid JSON in request body: {exc}") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        return body

    def _dispatch(self, routes: dict) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        handler = routes.get(path)
        try:
            if handler is None:
                raise ApiError(404, f"404 page not found: {self.command} {path} is not an endpoint of the stand-in")
            handler(self)
        except ApiError as exc:
            self._send_json(exc.status, {"error": exc.message})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # answer instead of dropping the connection; the log has the trace
            log.exception("internal error on %s", path)
            self._send_json(500, {"error": f"internal error in the offline server: {exc}"})

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._dispatch({"/": StandInHandler.root, "/api/version": StandInHandler.version,
                        "/api/tags": StandInHandler.tags, "/api/ps": StandInHandler.ps})

    do_HEAD = do_GET  # noqa: N815 - http.server naming

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        self._dispatch({"/api/chat": StandInHandler.chat, "/api/generate": StandInHandler.generate,
                        "/api/embed": StandInHandler.embed, "/api/embeddings": StandInHandler.embeddings,
                        "/api/show": StandInHandler.show, "/api/pull": StandInHandler.pull})

    def do_DELETE(self) -> None:  # noqa: N802 - http.server naming
        self._body()
        self._send_json(501, {"error": "the workshop's offline server cannot delete models; its models come from pip packages"})

    # ---- endpoints ------------------------------------------------------------------------
    def root(self) -> None:
        self._send_json(200, "Ollama is running")

    def version(self) -> None:
        self._send_json(200, {"version": STAND_IN_VERSION, "workshop_stand_in": True})

    def tags(self) -> None:
        self._send_json(200, {"models": [m.listing() for m in self.registry.models.values()]})

    def ps(self) -> None:
        loaded = [m for m in self.registry.models.values() if m.instance is not None]
        self._send_json(200, {"models": [
            {**m.listing(), "expires_at": "2099-01-01T00:00:00Z", "size_vram": 0} for m in loaded]})

    def show(self) -> None:
        body = self._body()
        m = self.registry.find(body.get("model") or body.get("name"))
        if m.kind == "chat":
            instance, _ = m.get()
            info = {"general.architecture": "llama", "llama.context_length": int(instance.metadata.get("llama.context_length", 0)),
                    "llama.embedding_length": int(instance.metadata.get("llama.embedding_length", 0))}
            template, caps = instance.template, ["completion"]
        else:
            info = {"general.architecture": "bert", "bert.context_length": EMBED_MAX_TOKENS,
                    "bert.embedding_length": EMBED_DIM}
            template, caps = "", ["embedding"]
        self._send_json(200, {
            "modelfile": f"# served by the workshop's offline server\nFROM {m.path}\n",
            "parameters": "", "template": template, "details": m.details(), "model_info": info,
            "capabilities": caps, "modified_at": m.listing()["modified_at"]})

    def pull(self) -> None:
        body = self._body()
        m = self.registry.find(body.get("model") or body.get("name"))
        if body.get("stream", True):
            self._stream(iter([{"status": "pulling manifest"}, {"status": f"{m.name} ships with the workshop"},
                               {"status": "success"}]))
        else:
            self._send_json(200, {"status": "success"})

    def _common(self, body: dict) -> tuple[Served, SamplingOptions, object]:
        """Model, options and grammar of a chat/generate request, validated before any streaming."""
        m = self.registry.find(body.get("model"), "chat")
        if body.get("think"):
            raise ApiError(400, f"\"{m.name}\" does not support thinking")
        if body.get("tools"):
            raise ApiError(400, f"\"{m.name}\" does not support tools")
        try:
            opts = SamplingOptions.from_request(body.get("options"))
            grammar = make_grammar(body.get("format"))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from exc
        return m, opts, grammar

    def _run(self, body: dict, m: Served, opts: SamplingOptions, grammar: object, make_prompt, shape) -> None:
        """Queue for the model, generate, and answer streamed or whole."""
        started = time.perf_counter_ns()
        stream = body.get("stream", True)

        def lines() -> Iterator[dict]:
            with m.lock:
                model, load_ns = m.get()
                prompt = make_prompt(model)
                stats = GenerationStats()
                pieces = model.stream(prompt, opts, grammar, stats)
                try:
                    for piece in pieces:
                        yield {"model": m.name, "created_at": now_iso(), **shape(piece), "done": False}
                finally:
                    pieces.close()
                yield {"model": m.name, "created_at": now_iso(), **shape(""),
                       **_final_fields(stats, load_ns, started)}

        if stream:
            self._stream(lines())
            return
        text, final = [], {}
        for line in lines():
            if line["done"]:
                final = line
            else:
                text.append(_text_of(line))
        final.update(shape("".join(text)))
        self._send_json(200, final)

    def chat(self) -> None:
        body = self._body()
        m, opts, grammar = self._common(body)
        messages = body.get("messages") or []
        if not isinstance(messages, list) or not all(
            isinstance(x, dict) and isinstance(x.get("role"), str) for x in messages
        ):
            raise ApiError(400, "'messages' must be a list of {\"role\": ..., \"content\": ...} objects")
        if not messages:  # Ollama loads the model and answers with an empty, finished message
            _, load_ns = m.get()
            self._send_json(200, {"model": m.name, "created_at": now_iso(),
                                  "message": {"role": "assistant", "content": ""},
                                  "done_reason": "load", "done": True})
            return
        self._run(body, m, opts, grammar,
                  lambda model: model.chat_prompt(messages, opts.num_ctx),
                  lambda piece: {"message": {"role": "assistant", "content": piece}})

    def generate(self) -> None:
        body = self._body()
        m, opts, grammar = self._common(body)
        prompt = body.get("prompt") or ""
        if not isinstance(prompt, str):
            raise ApiError(400, "'prompt' must be a string")
        if not prompt:
            _, load_ns = m.get()
            self._send_json(200, {"model": m.name, "created_at": now_iso(), "response": "",
                                  "done_reason": "load", "done": True})
            return

        def make_prompt(model: ChatModel) -> str:
            if body.get("raw"):
                return prompt
            msgs = ([{"role": "system", "content": body["system"]}] if body.get("system") else [])
            return model.chat_prompt(msgs + [{"role": "user", "content": prompt}], opts.num_ctx)

        self._run(body, m, opts, grammar, make_prompt, lambda piece: {"response": piece})

    def _embed_inputs(self, body: dict, key: str) -> list[str]:
        value = body.get(key)
        items = [value] if isinstance(value, str) else value
        if items is None:
            items = []
        if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
            raise ApiError(400, f"'{key}' must be a string or a list of strings")
        return items

    def _embed_vectors(self, m: Served, texts: list[str], truncate: bool) -> tuple[list[list[float]], int, int]:
        with m.lock:
            model, load_ns = m.get()
            if not truncate:
                too_long = [i for i, n in enumerate(model.count_tokens(texts)) if n > EMBED_MAX_TOKENS]
                if too_long:
                    raise ApiError(400, f"input {too_long[0]} exceeds the model's context length "
                                        f"({EMBED_MAX_TOKENS} tokens); send shorter text or truncate=true")
            vectors, n_tokens = model.embed(texts) if texts else ([], 0)
        return [v.tolist() for v in vectors], n_tokens, load_ns

    def embed(self) -> None:
        started = time.perf_counter_ns()
        body = self._body()
        m = self.registry.find(body.get("model"), "embed")
        texts = self._embed_inputs(body, "input")
        dims = body.get("dimensions")
        if dims not in (None, EMBED_DIM):
            raise ApiError(400, f"{m.name} makes {EMBED_DIM}-d vectors; 'dimensions' {dims} is not supported")
        vectors, n_tokens, load_ns = self._embed_vectors(m, texts, body.get("truncate", True) is not False)
        self._send_json(200, {"model": m.name, "embeddings": vectors, "total_duration": time.perf_counter_ns() - started,
                              "load_duration": load_ns, "prompt_eval_count": n_tokens})

    def embeddings(self) -> None:
        body = self._body()
        m = self.registry.find(body.get("model"), "embed")
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise ApiError(400, "'prompt' must be a string")
        vectors, _, _ = self._embed_vectors(m, [prompt], True)
        self._send_json(200, {"embedding": vectors[0]})


def _text_of(line: dict) -> str:
    """The text piece of a chat or generate line."""
    return line["message"]["content"] if "message" in line else line["response"]


class StandInServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with daemon threads and a fixed loopback address."""

    daemon_threads = True
    allow_reuse_address = True


def make_server(port: int, registry: Registry) -> StandInServer:
    """Bind 127.0.0.1:port (never another interface) with the given registry."""
    handler = type("Handler", (StandInHandler,), {"registry": registry})
    return StandInServer(("127.0.0.1", port), handler)
