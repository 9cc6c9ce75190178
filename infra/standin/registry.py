"""The models the stand-in serves, by name: each loaded on first use and kept (or unloaded with keep_alive 0)."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra.standin.errors import USE_REAL_OLLAMA, ApiError
from infra.standin.jobs import FifoLock
from infra.standin.models.embedder import EMBED_MAX_TOKENS
from infra.standin.models.grammar import make_grammar, make_tool_grammar
from infra.standin.models.memory import release_freed_memory
from infra.standin.settings import CHAT_NAME, E5_NAME, EMBED_NAME

log = logging.getLogger("workshop.stand-in")


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
    loader: Callable[[], Any]
    grammar: Callable[[Any], Any] = make_grammar  # Ollama's `format` -> a constraint for the model
    tool_grammar: Callable[[list[dict]], Any] = make_tool_grammar  # declared tools -> a constraint for a call
    instance: Any = None
    load_ns: int = 0
    info: dict = field(default_factory=dict)  # template and metadata, kept after an unload for /api/show
    lock: FifoLock = field(default_factory=FifoLock)
    loading: threading.Lock = field(default_factory=threading.Lock)
    context_length: int = EMBED_MAX_TOKENS  # an embedder's token limit (a chat model's is its num_ctx)
    warm: bool = True  # loaded when the stand-in starts; False: on its first request (memory: Binder has ~2 GB)

    def get(self) -> tuple[Any, int]:
        """The loaded model, and the nanoseconds this call spent loading it (0 when already loaded)."""
        with self.loading:
            if self.instance is not None:
                return self.instance, 0
            start = time.perf_counter_ns()
            self.instance = self.loader()
            release_freed_memory()  # a loader's temporary buffers (onnxruntime's graph optimisation: ~50 MB)
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
            release_freed_memory()
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
    """SmolLM2-135M (or the GGUF file given), all-MiniLM-L6-v2 and multilingual-e5-small, from their pip packages."""
    from infra.standin.models import (
        E5_MAX_TOKENS,
        ChatModel,
        E5Embedder,
        Embedder,
        ModelFilesMissingError,
        e5_model_file,
        minilm_onnx,
        smollm2_gguf,
    )

    gguf = Path(chat_gguf) if chat_gguf else smollm2_gguf()
    name = chat_name or (CHAT_NAME if not chat_gguf else canonical(gguf.stem.lower()))
    served = [
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
    try:
        e5_file = e5_model_file()
    except ModelFilesMissingError as exc:  # an older install: serve the rest, and say how to get it
        log.warning("multilingual-e5-small is not served: %s", exc)
        return served
    served.append(
        Served(
            name=E5_NAME,
            kind="embed",
            path=e5_file,
            family="bert",
            parameter_size="118M",
            quantization="Q4_0",
            loader=E5Embedder,
            context_length=E5_MAX_TOKENS,
            warm=False,
        )
    )
    return served


class Registry:
    """The models served, by canonical name."""

    def __init__(
        self, chat_gguf: str | None = None, chat_name: str | None = None, models: list[Served] | None = None
    ) -> None:
        served = models if models is not None else default_models(chat_gguf, chat_name)
        self.models: dict[str, Served] = {m.name: m for m in served}

    def find(self, name: Any, kind: str | None = None) -> Served:
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
