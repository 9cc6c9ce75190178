"""The OpenAI-compatible API, as Ollama serves it under /v1 (docs/api/openai-compatibility.mdx)."""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from infra.standin.body import parse, read_request
from infra.standin.errors import ApiError, openai_error
from infra.standin.generation import chat_plan, generation_job, vectors
from infra.standin.jobs import answer
from infra.standin.models.embedder import EMBED_DIM
from infra.standin.registry import Served, canonical
from infra.standin.routes_ollama import registry_of
from infra.standin.types import ChatCompletionRequest, ChatRequest, EmbeddingRequest


def sse(data: dict | str) -> bytes:
    """One Server-Sent Event of the OpenAI stream."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


def openai_text(content: Any, i: int, model: str) -> str | None:
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


def from_openai_calls(calls: Any, i: int) -> list[dict]:
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


def from_openai_chat(req: ChatCompletionRequest) -> tuple[ChatRequest, Any, bool]:
    """An OpenAI chat request as an Ollama /api/chat request, plus its tool_choice and stream_options.include_usage."""
    out: list[dict] = []
    names: dict[Any, str] = {}
    for i, m in enumerate(req.messages):
        msg: dict[str, Any] = {"role": m.role, "content": openai_text(m.content, i, req.model) or ""}
        if m.tool_calls:
            msg["tool_calls"] = from_openai_calls(m.tool_calls, i)
            names.update({c["id"]: c["function"]["name"] for c in msg["tool_calls"] if c.get("id")})
        if m.role == "tool":
            msg["tool_name"] = m.name or names.get(m.tool_call_id, "")
        out.append(msg)
    if req.n != 1:
        raise ApiError(400, "the workshop's offline server makes one choice per request: 'n' must be 1")
    options = {
        "temperature": req.temperature,
        "top_p": req.top_p,
        "seed": req.seed,
        "num_predict": req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens,
        "stop": req.stop,
    }
    rf = req.response_format
    fmt: Any = None
    if rf.type == "json_object":
        fmt = "json"
    elif rf.type == "json_schema":
        fmt = (rf.json_schema or {}).get("schema")
        if not isinstance(fmt, dict):
            raise ApiError(400, 'response_format json_schema needs {"json_schema": {"name": ..., "schema": {...}}}')
    choice: Any = req.tool_choice or "auto"
    if isinstance(choice, dict):
        choice = (choice.get("function") or {}).get("name")
    if not isinstance(choice, str):
        raise ApiError(
            400, 'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}'
        )
    internal = {
        "model": req.model,
        "messages": out,
        "options": options,
        "format": fmt,
        "tools": req.tools,
        "stream": req.stream,
        "logprobs": req.logprobs,
        "top_logprobs": req.top_logprobs,
    }
    return parse(ChatRequest, internal), choice, bool(req.stream_options.get("include_usage"))


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
            delta: dict[str, Any] = {"role": "assistant"} if self.first else {}
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
    internal, choice, include_usage = from_openai_chat(await read_request(request, ChatCompletionRequest))
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
    req = await read_request(request, EmbeddingRequest)
    m = registry_of(request).find(req.model, "embed")
    fmt = req.encoding_format
    if req.dimensions not in (None, EMBED_DIM):
        raise ApiError(400, f"{m.name} makes {EMBED_DIM}-d vectors; 'dimensions' {req.dimensions} is not supported")
    vecs, n_tokens, _ = await vectors(request, m, req.texts(), True, None)

    def encoded(v: list[float]) -> list[float] | str:
        return base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() if fmt == "base64" else v

    return JSONResponse(
        {
            "object": "list",
            "model": req.model,
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
