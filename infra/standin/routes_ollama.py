"""The Ollama endpoints (docs/api.md of the Ollama project) that the workshop uses."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from infra.standin.body import read_request
from infra.standin.errors import ApiError
from infra.standin.generation import chat_plan, common_fields, generation, load_only, vectors
from infra.standin.jobs import ndjson
from infra.standin.models.embedder import EMBED_DIM
from infra.standin.models.sampling import STAND_IN_NUM_PREDICT, SamplingOptions
from infra.standin.registry import Registry
from infra.standin.settings import REPO_ROOT
from infra.standin.types import ChatRequest, EmbeddingsRequest, EmbedRequest, GenerateRequest, PullRequest, ShowRequest

STAND_IN_VERSION = "0.6.3"  # the Ollama API level it follows; /api/version also says it is the stand-in


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
                    "context_length": SamplingOptions().num_ctx if m.kind == "chat" else m.context_length,
                }
                for m in loaded
            ]
        }
    )


async def show(request: Request) -> Response:
    req = await read_request(request, ShowRequest)
    m = registry_of(request).find(req.model_asked)
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
            "bert.context_length": m.context_length,
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
    req = await read_request(request, PullRequest)
    m = registry_of(request).find(req.model_asked)
    if req.stream:
        lines = [{"status": "pulling manifest"}, {"status": f"{m.name} ships with the workshop"}, {"status": "success"}]
        return Response(b"".join(ndjson(x) for x in lines), media_type="application/x-ndjson")
    return JSONResponse({"status": "success"})


async def chat(request: Request) -> Response:
    p = chat_plan(registry_of(request), await read_request(request, ChatRequest))
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
    req = await read_request(request, GenerateRequest)
    m, opts, grammar = common_fields(registry_of(request), req)
    prompt, system, raw = req.prompt, req.system, req.raw
    if raw and (req.template or system or req.context):
        raise ApiError(400, "raw mode does not support template, system, or context")
    if req.suffix:
        raise ApiError(400, f'"{m.name}" does not support insert')
    if req.images:
        raise ApiError(400, f'"{m.name}" does not support vision')
    if req.template:
        raise ApiError(
            400,
            "the workshop's offline server does not take a 'template' override; "
            "it formats prompts with the model's own chat template (or send raw=true)",
        )
    if not prompt:
        return await load_only(request, m, req.keep_alive, {"response": ""})

    def make_prompt(model: Any) -> str:
        if raw:
            return prompt
        msgs = [{"role": "system", "content": system}] if system else []
        return model.chat_prompt(msgs + [{"role": "user", "content": prompt}], opts.num_ctx)

    return await generation(
        request,
        m,
        opts,
        grammar,
        req.stream,
        req.keep_alive,
        make_prompt,
        lambda piece: {"response": piece},
        lambda line: line["response"],
    )


async def embed(request: Request) -> Response:
    started = time.perf_counter_ns()
    req = await read_request(request, EmbedRequest)
    m = registry_of(request).find(req.model, "embed")
    if req.dimensions not in (None, EMBED_DIM):
        raise ApiError(400, f"{m.name} makes {EMBED_DIM}-d vectors; 'dimensions' {req.dimensions} is not supported")
    vecs, n_tokens, load_ns = await vectors(request, m, req.texts(), req.truncate, req.keep_alive)
    return JSONResponse(
        {
            "model": req.model,  # the name as the client sent it, as Ollama echoes it
            "embeddings": vecs,
            "total_duration": time.perf_counter_ns() - started,
            "load_duration": load_ns,
            "prompt_eval_count": n_tokens,
        }
    )


async def embeddings(request: Request) -> Response:
    req = await read_request(request, EmbeddingsRequest)
    m = registry_of(request).find(req.model, "embed")
    if not req.prompt:
        return JSONResponse({"embedding": []})
    vecs, _, _ = await vectors(request, m, [req.prompt], True, req.keep_alive)
    return JSONResponse({"embedding": vecs[0]})


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
