"""Chat and generate requests as jobs: checked up front, queued for the model, Ollama's lines out."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from infra.standin.errors import ApiError, error_text
from infra.standin.jobs import Job, answer, queued
from infra.standin.models.embedder import EMBED_MAX_TOKENS
from infra.standin.models.memory import release_freed_memory
from infra.standin.models.sampling import GenerationStats, SamplingOptions
from infra.standin.registry import Registry, Served, now_iso
from infra.standin.toolcalls import call_tools, template_messages, tool_call_message
from infra.standin.types import ChatRequest, GenerationRequest


def common_fields(registry: Registry, req: GenerationRequest) -> tuple[Served, SamplingOptions, Any]:
    """Model, options and grammar of a validated chat/generate request, checked against the model up front."""
    m = registry.find(req.model, "chat")
    if req.think:
        raise ApiError(400, f'"{m.name}" does not support thinking')
    opts = SamplingOptions.from_options(req.options)
    opts.top_logprobs = req.top_logprobs if req.logprobs else -1  # -1: none asked (Ollama ignores top_logprobs alone)
    try:
        grammar = m.grammar(req.format)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from exc
    return m, opts, grammar


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
    grammar: Any,
    keep_alive: float | None,
    make_prompt: Callable[[Any], str],
    shape: Callable[[str], dict],
    finish: Callable[[str], dict] | None = None,
) -> Job:
    """Queue for the model and generate in a worker thread: Ollama's lines, the last one with the metrics.

    With `finish` (a constrained tool call), the pieces are collected, not streamed, and finish(text) is the one line
    sent before the last, as Ollama sends a call whole once it has parsed it.
    """
    started = time.perf_counter_ns()

    def body(model: Any, load_ns: int, cancelled: threading.Event) -> Iterator[dict]:
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
    grammar: Any,
    stream: bool,
    keep_alive: float | None,
    make_prompt: Callable[[Any], str],
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


def chat_plan(registry: Registry, req: ChatRequest, choice: Any = "auto") -> dict:
    """Everything a chat request needs, checked before it queues (the /api/chat and /v1 handlers share it)."""
    m, opts, grammar = common_fields(registry, req)
    for i, message in enumerate(req.messages):
        if message.images:
            raise ApiError(400, f'"{m.name}" does not support vision (messages[{i}] has images)')
    messages, tools = req.message_dicts(), req.tool_dicts()
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
        "stream": req.stream,
        "keep_alive": req.keep_alive,
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


async def vectors(
    request: Request, m: Served, texts: list[str], truncate: bool, keep_alive: float | None
) -> tuple[list[list[float]], int, int]:
    """Embed texts in the model's queue: (vectors, tokens, load_ns)."""

    def body(model: Any, load_ns: int, cancelled: threading.Event) -> Iterator[dict]:
        if not truncate:
            limit = getattr(model, "max_tokens", EMBED_MAX_TOKENS)
            too_long = [i for i, n in enumerate(model.count_tokens(texts)) if n > limit]
            if too_long:
                raise ApiError(
                    400,
                    f"input {too_long[0]} exceeds the model's context length "
                    f"({limit} tokens); send shorter text or truncate=true",
                )
        vecs, n_tokens = model.embed(texts) if texts else ([], 0)
        yield {"vectors": np.asarray(vecs).tolist(), "tokens": n_tokens, "load_ns": load_ns}
        # After the answer is handed over (the model's queue is still held): the batch's freed activations back to
        # the OS, or the process keeps the memory of its largest batch.
        release_freed_memory()

    kind, value = await Job(queued(m, keep_alive, body)).next(request)
    if kind == "error":
        raise ApiError(*error_text(value))
    if kind != "item":
        raise ClientDisconnect()
    return value["vectors"], value["tokens"], value["load_ns"]
