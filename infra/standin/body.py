"""A request's body: read within the deadline, parsed as JSON, validated into its pydantic model (types.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from infra.standin.errors import ApiError
from infra.standin.types import explain

M = TypeVar("M", bound=BaseModel)


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


def parse(kind: type[M], data: Any) -> M:
    """`data` as a `kind`, or a 400 whose message names the field and what it must be."""
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, explain(exc)) from exc


async def read_request(request: Request, kind: type[M]) -> M:
    """The request's body validated as a `kind`."""
    return parse(kind, await read_body(request))
