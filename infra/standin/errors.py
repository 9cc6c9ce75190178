"""The stand-in's errors: an HTTP status with a message that says what to do, in Ollama's or OpenAI's shape."""

from __future__ import annotations

import logging

log = logging.getLogger("workshop.stand-in")
USE_REAL_OLLAMA = "use a real Ollama: install it, run `ollama pull {name}`, and make sure WORKSHOP_OFFLINE is not set"


class TemplateRejectedError(ValueError):
    """The model's chat template refuses these messages (e.g. two user turns in a row)."""


class ApiError(Exception):
    """An error answered as HTTP status + {"error": message}, as Ollama does."""

    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def error_text(exc: BaseException) -> tuple[int, str]:
    """Status and message for an exception raised by a model call."""
    if isinstance(exc, ApiError):
        return exc.status, exc.message
    if isinstance(exc, TemplateRejectedError):
        return 400, str(exc)
    log.error("error in the offline server", exc_info=exc)
    return 500, f"the offline server's model failed: {type(exc).__name__}: {exc}"


OPENAI_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error"}


def openai_error(status: int, message: str) -> dict:
    """OpenAI's error body, with the types Ollama uses."""
    return {
        "error": {"message": message, "type": OPENAI_ERROR_TYPES.get(status, "api_error"), "param": None, "code": None}
    }
