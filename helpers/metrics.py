"""Record what every call costs, as rows for pandas and counters for Prometheus. Taught in 08_metrics.ipynb."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

NS = 1e9


@dataclass
class CallRecord:
    """One call: which stage, which model, tokens in and out, and where the time went (seconds)."""

    stage: str  # "embed", "search", "rewrite", "generate", ...
    model: str
    duration_s: float  # wall clock, as the caller saw it
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None  # time to first token (generate only)
    tokens_per_s: float | None = None  # decode speed (generate only)
    request_id: str = ""
    prompt_eval_s: float | None = None  # server-side time reading the prompt (generate only)
    eval_s: float | None = None  # server-side time writing the answer (generate only)
    stopped: bool = False  # the caller stopped the stream early (completion_tokens: the pieces received)


def generation_record(
    stage: str, final: Any, *, wall_s: float, ttft_s: float | None = None, request_id: str = ""
) -> CallRecord:
    """A record from the final piece (done=True) of an ollama chat/generate response."""
    eval_ns = final.eval_duration or 0
    prompt_ns = final.prompt_eval_duration or 0
    return CallRecord(
        stage=stage,
        model=final.model,
        duration_s=wall_s,
        prompt_tokens=final.prompt_eval_count or 0,
        completion_tokens=final.eval_count or 0,
        ttft_s=ttft_s,
        tokens_per_s=(final.eval_count or 0) / (eval_ns / NS) if eval_ns else None,
        request_id=request_id,
        prompt_eval_s=prompt_ns / NS if prompt_ns else None,
        eval_s=eval_ns / NS if eval_ns else None,
    )


def count_usage(record: CallRecord, response: Any) -> CallRecord:
    """Add a non-streamed chat/generate/embed response's token counts to a record (e.g. inside `timed`)."""
    record.prompt_tokens += getattr(response, "prompt_eval_count", None) or 0
    record.completion_tokens += getattr(response, "eval_count", None) or 0
    return record


class MetricsLog:
    """CallRecords in memory, mirrored into Prometheus counters and histograms."""

    def __init__(self) -> None:
        self.records: list[CallRecord] = []
        self.registry = CollectorRegistry()
        self._seconds = Histogram(
            "rag_stage_seconds",
            "Duration of one call, by stage",
            ["stage", "model"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self._ttft = Histogram(
            "rag_time_to_first_token_seconds",
            "Time to the first streamed token",
            ["model"],
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self._tokens = Counter(
            "rag_tokens",
            "Tokens processed, by stage and direction",
            ["stage", "model", "direction"],
            registry=self.registry,
        )

    def add(self, record: CallRecord) -> CallRecord:
        """Keep a record and update the Prometheus metrics."""
        self.records.append(record)
        self._seconds.labels(record.stage, record.model).observe(record.duration_s)
        if record.ttft_s is not None:
            self._ttft.labels(record.model).observe(record.ttft_s)
        if record.prompt_tokens or record.completion_tokens:  # a search reads no tokens: no token series for it
            self._tokens.labels(record.stage, record.model, "prompt").inc(record.prompt_tokens)
            self._tokens.labels(record.stage, record.model, "completion").inc(record.completion_tokens)
        return record

    @contextmanager
    def timed(self, stage: str, *, model: str = "", request_id: str = "") -> Iterator[CallRecord]:
        """Time a block; the yielded record can be given token counts before the block ends."""
        record = CallRecord(stage=stage, model=model, duration_s=0.0, request_id=request_id)
        start = time.perf_counter()
        try:
            yield record
        finally:
            record.duration_s = time.perf_counter() - start
            self.add(record)

    def stream(
        self,
        pieces: Iterable,
        *,
        stage: str = "generate",
        request_id: str = "",
        on_text: Callable[[str], object] | None = None,
        should_stop: Callable[[], bool] | None = None,
        started: float | None = None,
    ) -> tuple[str, CallRecord]:
        """Consume a streamed chat/generate response: (full text, its record, with time to first token).

        Pass the stream straight from `client.chat(..., stream=True)`, whose request is sent at the first piece asked
        for: the clock starts here. started (a time.perf_counter() reading, e.g. when the user asked) is where the
        time to first token counts from instead. When should_stop() turns true the stream is closed (the server stops
        generating) and the partial text returned.
        """
        start = time.perf_counter()
        first_from = start if started is None else started
        ttft: float | None = None
        parts: list[str] = []
        final = None
        for piece in pieces:
            if should_stop and should_stop():
                getattr(pieces, "close", lambda: None)()  # closing the HTTP response ends the generation
                record = CallRecord(
                    stage,
                    getattr(piece, "model", "") or "",
                    time.perf_counter() - start,
                    completion_tokens=sum(1 for p in parts if p),
                    ttft_s=ttft,
                    request_id=request_id,
                    stopped=True,
                )
                return "".join(parts), self.add(record)
            text = piece.message.content if hasattr(piece, "message") else piece.response
            if text and ttft is None:
                ttft = time.perf_counter() - first_from
            parts.append(text or "")
            if on_text and text:
                on_text(text)
            if piece.done:
                final = piece
        if final is None:
            raise RuntimeError("the stream ended without a final piece (done=True): was stream=True set?")
        record = generation_record(stage, final, wall_s=time.perf_counter() - start, ttft_s=ttft, request_id=request_id)
        return "".join(parts), self.add(record)

    def dataframe(self) -> pd.DataFrame:
        """All records as a DataFrame, one row per call."""
        columns = list(CallRecord.__dataclass_fields__)
        return pd.DataFrame([asdict(r) for r in self.records], columns=columns)

    def prometheus_text(self) -> str:
        """The metrics in Prometheus text exposition format."""
        return generate_latest(self.registry).decode("utf-8")


def cost_usd(prompt_tokens: int, completion_tokens: int, usd_per_m_input: float, usd_per_m_output: float) -> float:
    """What the tokens would cost on a paid API at the given prices per million tokens."""
    return prompt_tokens / 1e6 * usd_per_m_input + completion_tokens / 1e6 * usd_per_m_output
