"""The stand-in's real HTTP server over FAKE models, for the protocol tests (fast tier, no llama.cpp).

The models are fakes on purpose: they make failures that real models can't be made to produce on demand (an error
after two tokens, a template that rejects two user turns in a row, a slow generation to give up on) and they record
the order in which requests were served. Everything else is real: the stand-in's own app on uvicorn, on a loopback
port. Used by tests/test_stand_in_protocol.py and tests/test_stand_in_fake_tools.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from infra.standin.models import GenerationStats, SamplingOptions, TemplateRejectedError
from infra.standin.registry import Registry, Served
from infra.standin.server import make_server
from tests.conftest import free_port

CHAT = "fake-chat:latest"
EMBED = "fake-embed:latest"
REQUEST_TIMEOUT_S = 1.0  # the server's deadline for a request to arrive, short for these tests
USER = [{"role": "user", "content": "hello"}]


@dataclass
class Record:
    """What the fake models did: prompts in the order they were served, tokens made, generations running."""

    served: list[str] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)  # a "GATE" prompt waits for it at its 2nd token
    tokens: int = 0
    running: int = 0
    closed: int = 0


class FakeChat:
    """A fake ChatModel: emits `w0 w1 ...`; "SLOW" in the prompt: 20 ms a token; "FAIL": raises after 2 tokens;
    "GATE": holds the model after its first token until the test opens record.gate."""

    template = "{{ fake }}"
    metadata = {"llama.context_length": 2048, "llama.embedding_length": 64}

    def __init__(self, record: Record) -> None:
        self.record = record

    def chat_prompt(self, messages: list[dict], num_ctx: int) -> str:
        roles = [m["role"] for m in messages]
        if any(a == b == "user" for a, b in zip(roles, roles[1:])):  # as Mistral-style GGUF templates do
            raise TemplateRejectedError("the chat template rejects these messages: roles must alternate")
        return "\n".join(f"{m['role']}: {m.get('content') or ''}" for m in messages)

    def stream(self, prompt: str, opts: SamplingOptions, grammar: object, stats: GenerationStats) -> Iterator[str]:
        self.record.served.append(prompt)
        if isinstance(grammar, dict) and "fake_tools" in grammar:  # a call of the first tool allowed, in two pieces
            call = json.dumps({"name": grammar["fake_tools"][0], "arguments": {}})
            stats.eval_count = 2
            yield from (call[:5], call[5:])
            return
        self.record.running += 1
        try:
            stats.prompt_eval_count = len(prompt.split())
            n = opts.num_predict if opts.num_predict is not None else 5
            for i in range(n):
                if "FAIL" in prompt and i == 2:
                    raise RuntimeError("the fake model broke down mid-answer")
                if "SLOW" in prompt:
                    time.sleep(0.02)
                if "GATE" in prompt and i == 1:
                    self.record.gate.wait(30)
                stats.eval_count += 1
                self.record.tokens += 1
                yield f"w{i} "
            stats.done_reason = "length"
        finally:
            self.record.running -= 1

    def close(self) -> None:
        self.record.closed += 1


class FakeEmbedder:
    """A fake Embedder: unit vectors of 384 dimensions."""

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(t.split()) + 2 for t in texts]

    def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        return np.full((len(texts), 384), 384**-0.5, dtype=np.float32), sum(self.count_tokens(texts))


def fake_tool_grammar(tools: list[dict]) -> dict:
    """Stands for the real tool grammar: the fake model calls the first tool it allows."""
    return {"fake_tools": [t["function"]["name"] for t in tools]}


def fake_grammar(fmt: object) -> object:
    """Accepts what the real make_grammar accepts, without llama.cpp."""
    if fmt in (None, "", "json") or isinstance(fmt, dict):
        return fmt or None
    raise ValueError("'format' must be \"json\" or a JSON schema object")


@contextmanager
def serve_fake(folder: Path) -> Iterator[tuple[str, object, Record]]:
    """(base URL, server, record) of the stand-in's real HTTP server over fake models."""
    record = Record()
    (folder / "fake.gguf").write_bytes(b"GGUF" + b"\0" * 100)
    (folder / "fake.onnx").write_bytes(b"\0" * 100)
    registry = Registry(
        models=[
            Served(
                CHAT,
                "chat",
                folder / "fake.gguf",
                "llama",
                "1M",
                "F16",
                lambda: FakeChat(record),
                fake_grammar,
                fake_tool_grammar,
            ),
            Served(EMBED, "embed", folder / "fake.onnx", "bert", "1M", "F16", FakeEmbedder),
        ]
    )
    server = make_server(free_port(), registry, request_timeout=REQUEST_TIMEOUT_S)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = "http://{}:{}".format(*server.server_address[:2])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/api/version", timeout=0.5)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    try:
        yield url, server, record
    finally:
        server.shutdown()
        server.server_close()


def chat_lock(fake: tuple) -> threading.Lock:
    """The fake chat model's lock in the running server."""
    return fake[1].registry.models[CHAT].lock


def wait_until(condition, timeout: float = 5.0) -> bool:
    """Poll condition until it holds or timeout seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()
