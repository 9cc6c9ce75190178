"""Structured JSON logs with a request id, OpenTelemetry traces, failure metrics. Taught in 14_resilience.ipynb.

    tel = Telemetry("rag-notebook")                        # spans kept in memory unless a collector is configured
    with request_context() as rid, tel.span("chat") as root:
        with tel.span("embed", model="all-minilm"):
            ...
    print(span_tree(tel.finished()))

The one setting that sends the spans to a collector (Jaeger, Phoenix, any OTLP/HTTP receiver) instead:
OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 (the standard OpenTelemetry variable).
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import IO, Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}


@contextmanager
def request_context(request_id: str | None = None) -> Iterator[str]:
    """Set the request id for everything this block logs and traces (a new 8-hex id unless given)."""
    token = REQUEST_ID.set(request_id or uuid.uuid4().hex[:8])
    try:
        yield REQUEST_ID.get()
    finally:
        REQUEST_ID.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id and every `extra=` field."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or REQUEST_ID.get(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in STANDARD and k != "request_id"})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(entry, default=str)


def json_logs(name: str = "rag", *, stream: IO[str] | None = None, level: int = logging.INFO) -> logging.Logger:
    """The logger `name` writing JSON lines to stream (default stderr); calling it again replaces its handler."""
    logger = logging.getLogger(name)
    for handler in [h for h in logger.handlers if getattr(h, "workshop_json", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.workshop_json = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


class RecentSpans(SpanExporter):
    """An in-process span exporter that keeps the last `limit` finished spans (a long-running app stays bounded)."""

    def __init__(self, limit: int = 5000) -> None:
        self.spans: deque[ReadableSpan] = deque(maxlen=limit)
        self.lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.lock:
            self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""


@dataclass
class Stage:
    """What a stage block gets: its span (for attributes) and its metric record (for token counts), either may be None."""

    span: Any = None
    record: Any = None


class Telemetry:
    """A tracer (own TracerProvider, not the global one), its span store, and the failure metrics in `registry`."""

    def __init__(
        self, service: str = "rag", *, registry: CollectorRegistry | None = None, endpoint: str | None = None
    ) -> None:
        endpoint = endpoint if endpoint is not None else os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
        self.provider = TracerProvider(resource=Resource.create({"service.name": service}))
        self.memory: RecentSpans | None = None
        if endpoint:  # a collector: spans leave the process in batches, over OTLP/HTTP
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            self.provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces"))
            )
        else:
            self.memory = RecentSpans()
            self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.tracer = self.provider.get_tracer("workshop")
        self.registry = registry or CollectorRegistry()
        self.failures = Counter(
            "rag_failures",
            "Failures by stage and kind (timeout, connection, http_503, ...)",
            ["stage", "kind"],
            registry=self.registry,
        )
        self.retries = Counter("rag_retries", "Retried attempts by stage", ["stage"], registry=self.registry)
        self.latency = Histogram(
            "rag_request_seconds",
            "Whole chat turns by status (ok, error, unavailable, ...)",
            ["status"],
            registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.breaker_state = Gauge(
            "rag_circuit_state", "Circuit breaker: 0 closed, 1 half-open, 2 open", ["breaker"], registry=self.registry
        )

    @contextmanager
    def span(self, name: str, *, parent: trace.Span | None = None, **attributes: Any) -> Iterator[trace.Span]:
        """A span named `name` (a child of the current span, or of `parent`), with the request id and attributes.

        An exception ends the span with status ERROR, its kind recorded, and the failures counter moves; it is re-raised.
        """
        context = trace.set_span_in_context(parent) if parent is not None else None
        with self.tracer.start_as_current_span(
            name, context=context, record_exception=False, set_status_on_exception=False
        ) as span:
            span.set_attribute("request_id", REQUEST_ID.get())
            for key, value in attributes.items():
                span.set_attribute(key, value)
            try:
                yield span
            except BaseException as exc:
                self.failed(span, name, exc)
                raise

    @contextmanager
    def stage(
        self,
        name: str,
        *,
        metrics: Any = None,
        model: str = "",
        logger: logging.Logger | None = None,
        **attributes: Any,
    ) -> Iterator[Stage]:
        """One stage of a turn recorded three ways at once: its span, its metric row (metrics: a MetricsLog) and a log line.

        Yields a Stage (its span, and its metric record for token counts). The log line (logger "rag" unless given)
        says the stage, its milliseconds, the span's attributes and, on a failure, its kind; the failure is re-raised
        (the span and rag_failures_total record it).
        """
        log = logger or logging.getLogger("rag")
        start = time.perf_counter()
        timed = metrics.timed(name, model=model, request_id=REQUEST_ID.get()) if metrics is not None else nullcontext()
        if model:
            attributes = {"model": model, **attributes}
        with timed as record, self.span(name, **attributes) as span:
            try:
                yield Stage(span, record)
            except BaseException as exc:
                from helpers.resilience import failure_kind

                log.warning(
                    "%s failed", name, extra={"stage": name, "kind": failure_kind(exc), "ms": elapsed_ms(start)}
                )
                raise
            extra = dict(getattr(span, "attributes", None) or {})
            extra.pop("request_id", None)
            log.info("%s done", name, extra={"stage": name, **extra, "ms": elapsed_ms(start)})

    def failed(self, span: trace.Span, stage: str, exc: BaseException) -> str:
        """Mark a span as failed and count the failure; returns its kind."""
        from helpers.resilience import failure_kind

        kind = failure_kind(exc)
        if isinstance(exc, GeneratorExit):  # the caller stopped reading: not the backend's failure
            return kind
        span.set_status(trace.StatusCode.ERROR, f"{kind}: {exc}"[:200])
        span.set_attribute("error.kind", kind)
        self.failures.labels(stage, kind).inc()
        return kind

    def on_breaker_change(self, name: str) -> Any:
        """A CircuitBreaker on_change callback that keeps the rag_circuit_state gauge up to date."""
        self.breaker_state.labels(name).set(0)
        return lambda _old, new: self.breaker_state.labels(name).set(BREAKER_STATES[new])

    def finished(self, request_id: str | None = None) -> list[ReadableSpan]:
        """Finished spans held in memory, oldest first (only those of request_id if given)."""
        if self.memory is None:
            return []
        self.provider.force_flush()
        with self.memory.lock:
            spans = list(self.memory.spans)
        return [s for s in spans if request_id is None or (s.attributes or {}).get("request_id") == request_id]

    def shutdown(self) -> None:
        """Flush and stop the span processors (sends what is batched to the collector)."""
        self.provider.shutdown()


def span_tree(spans: Sequence[ReadableSpan]) -> str:
    """The spans as an indented tree: name, duration, status and attributes, children under their parent."""
    by_parent: dict[int | None, list[ReadableSpan]] = {}
    ids = {s.context.span_id for s in spans}
    for s in sorted(spans, key=lambda s: s.start_time or 0):
        parent = s.parent.span_id if s.parent is not None and s.parent.span_id in ids else None
        by_parent.setdefault(parent, []).append(s)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for s in by_parent.get(parent, []):
            ms = ((s.end_time or 0) - (s.start_time or 0)) / 1e6
            attrs = {k: v for k, v in (s.attributes or {}).items() if k != "request_id"}
            status = "" if s.status.is_unset or s.status.is_ok else f" ERROR({s.status.description})"
            lines.append(f"{'  ' * depth}{s.name:<{22 - 2 * depth}} {ms:8.1f} ms{status} {attrs or ''}".rstrip())
            walk(s.context.span_id, depth + 1)

    walk(None, 0)
    return "\n".join(lines)


def elapsed_ms(start: float) -> float:
    """Milliseconds since a time.perf_counter() reading, rounded for a log line."""
    return round((time.perf_counter() - start) * 1000, 1)
