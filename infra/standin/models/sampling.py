"""What a generation is asked (Ollama's options) and what it reports (counts, durations), and the stop-string scanner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from infra.standin.types import Options, explain

DEFAULT_NUM_CTX = 4096
STAND_IN_NUM_PREDICT = 400  # cap when a request sets no num_predict (a 135M model can ramble)


@dataclass
class GenerationStats:
    """Token counts and nanosecond durations, as Ollama reports them."""

    prompt_eval_count: int = 0
    eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_duration: int = 0
    done_reason: str = "stop"
    logprobs: list[dict] | None = None  # a list to fill: one {"token", "logprob", "bytes", "top_logprobs"} a token


@dataclass
class SamplingOptions:
    """The Ollama `options` the stand-in honours, with Ollama's defaults."""

    temperature: float = 0.8
    seed: int | None = None
    num_predict: int | None = None
    num_ctx: int = DEFAULT_NUM_CTX
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    repeat_penalty: float = 1.1
    stop: list[str] = field(default_factory=list)
    top_logprobs: int = -1  # -1: no logprobs; else how many alternatives to report per token (set by the server)

    @classmethod
    def from_options(cls, options: Options) -> SamplingOptions:
        """The sampling settings of a validated `options` object: what it sets, Ollama's defaults for the rest."""
        o = cls()
        for key in ("temperature", "seed", "num_predict", "num_ctx", "top_k", "top_p", "min_p", "repeat_penalty"):
            value = getattr(options, key)
            if value is not None:
                setattr(o, key, value)
        o.stop = options.stops() or []
        return o

    @classmethod
    def from_request(cls, options: Any) -> SamplingOptions:
        """Validate and convert a request's `options` object; ValueError says what is wrong."""
        try:
            return cls.from_options(Options.model_validate({} if options is None else options))
        except ValidationError as exc:
            raise ValueError(explain(exc).replace("the request body", "'options'")) from exc


class StopScanner:
    """Streams text while holding back any tail that could be the start of a stop string."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Add text; return what is safe to emit now."""
        if self.stopped:
            return ""
        self.pending += text
        hits = [self.pending.find(s) for s in self.stops if s in self.pending]
        if hits:
            self.stopped = True
            out, self.pending = self.pending[: min(hits)], ""
            return out
        keep = 0
        for s in self.stops:  # longest suffix of pending that is a prefix of a stop string
            for n in range(min(len(s) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(s[:n]):
                    keep = max(keep, n)
                    break
        out = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep :]
        return out

    def flush(self) -> str:
        """Whatever is still held back once generation ends."""
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out
