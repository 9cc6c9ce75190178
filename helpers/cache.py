"""Caches for the RAG turn, each with its hit and miss counts. Taught in 18_team-service.ipynb.

- EmbeddingCache: a query's embedding, keyed by (model, text): the same text always embeds the same.
- AnswerCache: a whole answer, keyed by everything that makes it the same (answer_key), used only when the answer is
  repeatable (temperature 0 or a fixed seed) and emptied whenever the index changes (invalidate()).
- SemanticCache: a *similar* question reuses an answer; semantic_cache_errors measures how often that answer is wrong.

    caches = TurnCaches(answers=True)            # RagTurn(..., caches=caches); index path: caches.invalidate()
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

PROMPT_VERSION = "rag-v1"  # bump when the prompt's wording changes: old answers no longer match


def digest(value: Any) -> str:
    """A stable SHA-256 hex digest of a JSON-able value (dict keys sorted)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def repeatable(options: dict) -> bool:
    """True when the same prompt gives the same answer: temperature 0 or a fixed seed."""
    return options.get("temperature") == 0 or options.get("seed") is not None


class LruCache:
    """A bounded mapping that forgets the least recently used entry; counts hits and misses; thread-safe."""

    def __init__(self, *, size: int = 1024) -> None:
        if size < 1:
            raise ValueError(f"cache size {size} must be at least 1")
        self.size, self.hits, self.misses = size, 0, 0
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        """The cached value (now the most recent) or None; a hit or a miss is counted."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
            return None

    def put(self, key: str, value: Any) -> None:
        """Store value under key, forgetting the oldest entry past `size`."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def invalidate(self) -> int:
        """Forget everything; the number of entries dropped."""
        with self._lock:
            dropped = len(self._items)
            self._items.clear()
            return dropped

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> dict[str, float]:
        """Hits, misses, entries and the hit rate."""
        asked = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "entries": len(self),
            "hit_rate": self.hits / asked if asked else 0.0,
        }


class EmbeddingCache(LruCache):
    """Query embeddings keyed by (model, text)."""

    def embed(self, client: Any, text: str, *, model: str, embed: Callable[..., Any] | None = None) -> list[float]:
        """text's vector from the cache, or from client.embed (through `embed`, e.g. a retry policy) and cached."""
        key = digest([model, text])
        vector = self.get(key)
        if vector is None:
            call = embed or (lambda **kw: client.embed(**kw))
            vector = list(call(model=model, input=text).embeddings[0])
            self.put(key, vector)
        return vector


def answer_key(*, question: str, chunks: Sequence[tuple[str, str]], past: list[dict], model: str, options: dict) -> str:
    """The answer cache's key: the question as asked, each retrieved chunk's id and content hash, the earlier turns,
    the model, the prompt version and the generation options."""
    hashed = [[chunk_id, hashlib.sha256(text.encode()).hexdigest()[:16]] for chunk_id, text in chunks]
    turns = [[m["role"], m["content"]] for m in past if m["role"] != "system"]
    return digest([question, hashed, turns, model, PROMPT_VERSION, options])


@dataclass
class CachedAnswer:
    """What an answer cache hit replays: the answer as finished, and the token counts it cost the first time."""

    text: str
    usage: dict = field(default_factory=dict)


class AnswerCache(LruCache):
    """Whole answers keyed by answer_key; `lookup`/`store` do nothing for options that are not repeatable."""

    def lookup(self, key: str, options: dict) -> CachedAnswer | None:
        """The cached answer, or None (always None when the options are not repeatable)."""
        return self.get(key) if repeatable(options) else None

    def store(self, key: str, options: dict, answer: CachedAnswer) -> None:
        """Cache the answer if the options make it repeatable."""
        if repeatable(options):
            self.put(key, answer)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


class SemanticCache:
    """A similar question (cosine >= threshold between question embeddings) reuses an answer: fast, and sometimes wrong."""

    def __init__(self, *, threshold: float = 0.9) -> None:
        self.threshold, self.hits, self.misses = threshold, 0, 0
        self.entries: list[tuple[list[float], str, Any]] = []  # (vector, question, answer)

    def nearest(self, vector: Sequence[float]) -> tuple[float, str, Any] | None:
        """(similarity, question, answer) of the most similar cached question, or None when empty."""
        scored = [(cosine(vector, v), q, a) for v, q, a in self.entries]
        return max(scored, key=lambda s: s[0]) if scored else None

    def lookup(self, vector: Sequence[float]) -> tuple[float, str, Any] | None:
        """The nearest cached (similarity, question, answer) if similar enough, else None; counted."""
        best = self.nearest(vector)
        if best is not None and best[0] >= self.threshold:
            self.hits += 1
            return best
        self.misses += 1
        return None

    def store(self, vector: Sequence[float], question: str, answer: Any) -> None:
        """Remember an answer under its question's vector."""
        self.entries.append((list(vector), question, answer))

    def invalidate(self) -> int:
        """Forget everything; the number of entries dropped."""
        dropped = len(self.entries)
        self.entries.clear()
        return dropped


def semantic_cache_errors(vectors: Sequence[Sequence[float]], answers: Sequence[str], *, threshold: float) -> dict:
    """Each question looked up among all the *other* questions: hits, and wrong answers served (a different answer).

    The questions are distinct, so a hit serves another question's answer; it is wrong unless the answers agree.
    """
    hits = wrong = 0
    for i, vector in enumerate(vectors):
        cache = SemanticCache(threshold=threshold)
        for j, (other, answer) in enumerate(zip(vectors, answers, strict=True)):
            if j != i:
                cache.store(other, str(j), answer)
        found = cache.lookup(vector)
        if found is not None:
            hits += 1
            wrong += found[2].strip().lower() != answers[i].strip().lower()
    n = len(vectors)
    return {"threshold": threshold, "questions": n, "hits": hits, "wrong": wrong, "wrong_rate": wrong / n if n else 0.0}


@dataclass
class TurnCaches:
    """The caches one RAG turn uses: query embeddings always, answers only when `answers` is on (WORKSHOP_CACHE=1)."""

    answers: bool = False
    size: int = 1024
    embeddings: EmbeddingCache = field(init=False)
    answer_cache: AnswerCache = field(init=False)

    def __post_init__(self) -> None:
        self.embeddings = EmbeddingCache(size=self.size)
        self.answer_cache = AnswerCache(size=self.size)

    def invalidate(self) -> int:
        """The index changed: forget every cached answer (embeddings of a query text stay true); entries dropped."""
        return self.answer_cache.invalidate()
