"""The Ollama endpoints (docs/api.md of the Ollama project) that the workshop uses."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from infra.standin.errors import ApiError
from infra.standin.generation import chat_plan, common_fields, generation, load_only, vectors
from infra.standin.jobs import ndjson
from infra.standin.models.embedder import EMBED_DIM, EMBED_MAX_TOKENS
from infra.standin.models.sampling import STAND_IN_NUM_PREDICT, SamplingOptions
from infra.standin.registry import Registry
from infra.standin.settings import REPO_ROOT
from infra.standin.validation import embed_inputs, field_of, keep_alive_seconds, read_body

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
        stream,
        keep_alive,
        make_prompt,
        lambda piece: {"response": piece},
        lambda line: line["response"],
    )


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
            "model": body["model"],  # the name as the client sent it, as Ollama echoes it
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
