"""The service's state: the backends, the history store, the metrics and the one RAG turn (helpers/turn.py)."""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import Counter
from qdrant_client import QdrantClient

from app.keys import KEYS_FILE, KeyStore
from app.limits import Limits
from helpers.cache import TurnCaches
from helpers.chunking import chunk_documents
from helpers.corpus import Skipped, collection_name, corpus_folder, load_documents
from helpers.guardrails import Guard
from helpers.history import HistoryStore
from helpers.index import collection_vector_size, sync_index
from helpers.language import resolve_language
from helpers.metrics import MetricsLog
from helpers.providers import BackendSpec, make_chain, parse_backends
from helpers.resilience import CircuitBreaker, make_client, retrying
from helpers.setup import Config
from helpers.telemetry import Telemetry
from helpers.turn import RagTurn, generation_options

log = logging.getLogger("app")


@dataclass
class Service:
    """Everything a request needs: the backends, the history store, the metrics, the generation settings."""

    cfg: Config
    qdrant: QdrantClient
    history: HistoryStore
    corpus_dir: Path | None = None  # the folder of documents; None: CORPUS_DIR, else data/corpus
    collection: str = ""  # "": collection_name(corpus_dir, embed_model=...), e.g. "handbook-all-minilm"
    k: int = 4
    hybrid: bool = False  # True: dense + BM25 fused by RRF (lesson 11)
    max_messages: int = 6  # the last 3 question/answer pairs go into the prompt
    options: dict = field(default_factory=generation_options)
    metrics: MetricsLog = field(default_factory=MetricsLog)
    startup_s: float | None = None
    indexed: int = 0
    documents: int | None = None  # documents read from corpus_dir at start-up (None: not read yet)
    skipped: list[Skipped] = field(default_factory=list)  # files in corpus_dir that could not be read, and why
    read_s: float = 300.0  # the longest silence allowed between two bytes of a model's answer
    deadline_s: float = 600.0  # the longest a whole answer may take
    attempts: int = 3  # tries for a call that fails transiently (before the first token only)
    breaker_failures: int = 3  # failed turns in a row that open the circuit
    breaker_reset_s: float = 10.0  # how long it stays open before one request probes the backend
    guard: Guard | None = None  # lesson 15's guardrails (create_app turns them on unless WORKSHOP_GUARDRAILS=0)
    language: str = "en"  # of the prompt and refusals: WORKSHOP_LANGUAGE, or detected from the documents (use_language)
    caches: TurnCaches | None = None  # lesson 18: None reads WORKSHOP_CACHE (off unless it is 1)
    keys: KeyStore | None = None  # lesson 18: None reads WORKSHOP_API_KEYS (off unless it is 1)
    history_ttl_days: float | None = None  # chats idle longer are deleted; None: HISTORY_TTL_DAYS (0: never)
    backends: list[BackendSpec] | None = None  # the chat backends in order; None: CHAT_BACKENDS, else cfg.ollama_host

    def __post_init__(self) -> None:
        self.corpus_dir = corpus_folder(self.corpus_dir or self.cfg.settings.corpus_dir).resolve()
        self.collection = self.collection or collection_name(self.corpus_dir, embed_model=self.cfg.embed_model)
        host = self.cfg.ollama_host
        self.client = make_client(host, read=self.read_s)  # embeddings, rewrites (sync, in the thread pool)
        self.aclient = make_client(host, read=self.read_s, asynchronous=True)  # the answer stream (cancellable)
        self.probe = make_client(host, read=5)  # /healthz answers fast even when the backend hangs
        self.telemetry = Telemetry("rag-app", registry=self.metrics.registry)
        self.breaker = CircuitBreaker(
            "llm",
            failures=self.breaker_failures,
            reset_after=self.breaker_reset_s,
            on_change=self.telemetry.on_breaker_change("llm"),
        )
        self.requests = Counter(
            "http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.metrics.registry,
        )
        self.turns = Counter(
            "rag_chat_turns",
            "Chat turns by outcome (ok, error, disconnected, blocked, unavailable)",
            ["outcome"],
            registry=self.metrics.registry,
        )
        self.answers = Counter(
            "rag_answers",
            "Answers by the backend and model that gave them",
            ["backend", "model"],
            registry=self.metrics.registry,
        )
        self.fallbacks = Counter(
            "rag_fallbacks",
            "Backends passed over, by backend and why",
            ["backend", "kind"],
            registry=self.metrics.registry,
        )
        self.unsaved = Counter(
            "rag_turns_unsaved", "Answered turns the history store could not save", registry=self.metrics.registry
        )
        self.index_lock = threading.Lock()
        self.team_settings()
        self.chain = self.make_chain()

    def team_settings(self) -> None:
        """Lesson 18: the caches, the API keys and the limits from the settings (unless given)."""
        s = self.cfg.settings
        if self.caches is None and s.answer_cache:
            self.caches = TurnCaches(answers=True)
        if self.keys is None and s.api_keys:
            self.keys = KeyStore(s.state_dir / KEYS_FILE)
        self.limits = Limits(
            self.metrics.registry,
            rate_limit=s.rate_limit,
            token_budget=s.token_budget,
            window_s=s.budget_window_s,
            queue_max=s.queue_max,
        )

    def make_chain(self) -> Any:
        """The fallback chain of chat backends (lesson 19); the first backend at cfg.ollama_host reuses self.breaker."""
        cfg = self.cfg
        specs = self.backends or (
            parse_backends(cfg.settings.chat_backends)
            if cfg.settings.chat_backends
            else [BackendSpec("ollama", cfg.ollama_host)]
        )
        return make_chain(
            specs,
            default_model=cfg.chat_model,
            read_s=self.read_s,
            failures=self.breaker_failures,
            reset_after=self.breaker_reset_s,
            breakers={BackendSpec("ollama", cfg.ollama_host).name: self.breaker},
            on_change=self.telemetry.on_breaker_change,
        )

    def retry(self, stage: str, *, asynchronous: bool = False) -> Any:
        """The retry policy of one stage; each retry moves rag_retries_total{stage}. Generation never retries a timeout."""
        return retrying(
            attempts=self.attempts,
            on_retry=lambda _state: self.telemetry.retries.labels(stage).inc(),
            asynchronous=asynchronous,
            retry_timeouts=stage != "generate",
        )

    def turn(self) -> RagTurn:
        """The one RAG turn with this service's settings, its stages traced, metered and logged."""
        return RagTurn(
            self.client,
            self.qdrant,
            self.collection,
            chat_model=self.cfg.chat_model,
            embed_model=self.cfg.embed_model,
            k=self.k,
            hybrid=self.hybrid,
            guard=self.guard,
            language=self.language,
            options=self.options,
            metrics=self.metrics,
            telemetry=self.telemetry,
            retry=self.retry,
            caches=self.caches,
        )

    def use_language(self, documents: Iterable[str]) -> None:
        """Answer and refuse in WORKSHOP_LANGUAGE, or with `auto` in the language of these document texts."""
        self.language = resolve_language(self.cfg.settings.language, documents)
        if self.guard is not None and self.guard.texts.language != self.language:
            self.guard = Guard(self.client, settings=self.guard.settings, language=self.language)


def index_handbook(svc: Service) -> int:
    """Read svc.corpus_dir and sync the collection with it (only new and changed documents embedded); the chunk count.

    Files that could not be read are logged one by one and kept in svc.skipped; /healthz fails when none could.
    """
    with svc.index_lock:
        with warnings.catch_warnings():  # each skipped file is logged below, with its reason
            warnings.simplefilter("ignore", UserWarning)
            docs, svc.skipped = load_documents(svc.corpus_dir)
        svc.documents = len(docs)
        for s in svc.skipped:
            log.warning("skipped %s in %s: %s", s.path, svc.corpus_dir, s.reason)
        if not docs:
            log.error("no document in %s could be read: /healthz fails until the folder holds one", svc.corpus_dir)
        chunks = chunk_documents(docs)
        svc.use_language(c.text for c in chunks)
        counts = sync_index(svc.client, svc.qdrant, svc.collection, chunks, embed_model=svc.cfg.embed_model)
        log.info(
            "%d documents (%d chunks) from %s in %r: %d added, %d updated, %d deleted, %d unchanged; %d files skipped",
            len(docs),
            len(chunks),
            svc.corpus_dir,
            svc.collection,
            counts.added,
            counts.updated,
            counts.deleted,
            counts.unchanged,
            len(svc.skipped),
        )
        if svc.caches is not None and (counts.added or counts.updated or counts.deleted):
            svc.caches.invalidate()  # lesson 18: answers built on the old index are no longer true
        svc.indexed = len(chunks)
        return len(chunks)


def documents_health(svc: Service) -> str:
    """The documents part of /healthz: ok once start-up read at least one document, else what went wrong."""
    if svc.documents is None:
        return f"fail: {svc.corpus_dir} has not been read yet (start-up failed: see the log), restart the app"
    if not svc.documents:
        why = "; ".join(f"{s.path}: {s.reason}" for s in svc.skipped[:3]) or "the folder holds no document"
        return (
            f"fail: no document in {svc.corpus_dir} could be read ({why}): add .md, .txt, .pdf or .html files "
            "with text and restart the app"
        )
    return "ok"


def health(svc: Service) -> dict[str, str]:
    """Each part: "ok", or what fails and how to fix it."""
    parts, cfg = {"documents": documents_health(svc)}, svc.cfg
    try:
        names = {n for m in svc.probe.list().models for n in (m.model or "", (m.model or "").removesuffix(":latest"))}
        parts["llm"] = (
            "ok"
            if cfg.chat_model in names
            else (f"fail: {cfg.ollama_host} does not serve {cfg.chat_model}: run `ollama pull {cfg.chat_model}`")
        )
    except Exception as exc:  # noqa: BLE001 - every failure is reported, not raised
        parts["llm"] = (
            f"fail: no LLM backend answers at {cfg.ollama_host} ({type(exc).__name__}): start Ollama or "
            "the offline stand-in (`.venv/bin/python -m infra.standin start`)"
        )
    dim = None
    try:
        dim = len(svc.probe.embed(model=cfg.embed_model, input="health check").embeddings[0])
        parts["embedding"] = "ok"
    except Exception as exc:  # noqa: BLE001
        parts["embedding"] = f"fail: {cfg.embed_model} does not embed ({type(exc).__name__}: {exc})"
    try:
        count = svc.qdrant.count(svc.collection).count if svc.qdrant.collection_exists(svc.collection) else 0
        size = collection_vector_size(svc.qdrant, svc.collection)
        if not count:
            parts["qdrant"] = f"fail: collection {svc.collection!r} is empty: restart the app to index"
        elif dim is not None and size != dim:
            parts["qdrant"] = (
                f"fail: collection {svc.collection!r} holds {size}-d vectors but {cfg.embed_model} makes {dim}-d "
                "vectors (EMBED_MODEL changed?): restart the app, which indexes again at the new size"
            )
        else:
            parts["qdrant"] = "ok"
    except Exception as exc:  # noqa: BLE001
        parts["qdrant"] = (
            f"fail: Qdrant ({svc.cfg.qdrant_url or 'embedded'}) does not answer ({type(exc).__name__}: {exc})"
        )
    return parts
