"""The stand-in's ASGI app: routes, and every error answered as JSON in the shape of the API asked."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from infra.standin.errors import ApiError, error_text, openai_error
from infra.standin.http import REQUEST_TIMEOUT_S
from infra.standin.registry import Registry
from infra.standin.routes_ollama import (
    chat,
    embed,
    embeddings,
    generate,
    not_served,
    ps,
    pull,
    root,
    show,
    tags,
    version,
)
from infra.standin.routes_openai import v1_chat, v1_embeddings, v1_model, v1_models


async def http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's 404/405 as Ollama-style JSON (never HTML or plain text)."""
    if exc.status_code == 404:
        message = f"404 page not found: {request.method} {request.url.path} is not an endpoint of the offline server"
    elif exc.status_code == 405:
        message = (
            f"405 method not allowed: {request.method} {request.url.path} (allowed: {(exc.headers or {}).get('Allow')})"
        )
    else:
        message = str(exc.detail)
    return error_response(request, exc.status_code, message, dict(exc.headers or {}))


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


# Starlette types every handler as taking the base Exception; each of these takes the one it is registered for.
HANDLERS: dict[Any, Any] = {
    HTTPException: http_error,
    ApiError: api_error,
    ClientDisconnect: client_gone,
    Exception: internal_error,
}


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
        exception_handlers=HANDLERS,
    )
    app.state.registry = registry
    app.state.request_timeout = request_timeout
    return app
