"""Per-key limits and a bounded generation queue. Taught in 18_team-service.ipynb.

Per key (app/keys.py names the caller): a request rate over a sliding minute, and a token budget over a sliding window
charged with the token counts the backend reports (the `done` event's prompt_tokens + completion_tokens). Past 80 % of
the budget an answer carries `X-Budget-Warning` and a `budget` SSE event; at 100 % a 429 with Retry-After. At most
queue_max answers generate or wait at once: one more gets 503 with Retry-After at once instead of waiting minutes.
Every refusal is counted in /metrics (rag_refused_total{reason}).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from fastapi import HTTPException
from prometheus_client import CollectorRegistry, Counter, Gauge

SOFT_CAP = 0.8  # past this share of the budget, answers carry a warning
RATE_WINDOW_S = 60.0


@dataclass
class Limits:
    """Rate limit, token budget and generation queue, per key; 0 turns a limit off."""

    registry: CollectorRegistry
    rate_limit: int = 0  # requests per key per minute
    token_budget: int = 0  # tokens per key per window
    window_s: float = 3600.0
    queue_max: int = 32
    clock: Callable[[], float] = time.monotonic
    active: int = 0  # answers generating or waiting now
    requests: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    charges: dict[str, deque[tuple[float, int]]] = field(default_factory=lambda: defaultdict(deque))
    durations: deque[float] = field(default_factory=lambda: deque(maxlen=20))

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.refused = Counter(
            "rag_refused", "Requests refused by reason (no_key, wrong_key, rate, budget, queue)", ["reason"],
            registry=self.registry,
        )  # fmt: skip
        self.warnings = Counter(
            "rag_budget_warnings", "Answers sent past 80 % of a token budget", registry=self.registry
        )
        self.tokens = Counter("rag_tokens_charged", "Tokens charged to keys' budgets", ["key"], registry=self.registry)
        self.queue = Gauge("rag_generation_queue", "Answers generating or waiting now", registry=self.registry)
        self.queue.set_function(lambda: self.active)

    def used(self, key: str) -> int:
        """Tokens charged to key inside the window."""
        with self._lock:
            return sum(n for _, n in self._recent(key))

    def fraction(self, key: str) -> float:
        """The share of key's budget used (0 without a budget)."""
        return self.used(key) / self.token_budget if self.token_budget else 0.0

    def check(self, key: str) -> None:
        """Before a turn: 429 with Retry-After past the rate limit or the budget; else the request is counted."""
        now = self.clock()
        with self._lock:
            if self.token_budget:
                recent = self._recent(key)
                used = sum(n for _, n in recent)
                if used >= self.token_budget:
                    wait = self._budget_wait(recent, used, now)
                    self._refuse("budget", wait, f"{key!r} used {used} of {self.token_budget} tokens allowed per "
                                 f"{self.window_s:g} s")  # fmt: skip
            if self.rate_limit:
                times = self.requests[key]
                while times and times[0] <= now - RATE_WINDOW_S:
                    times.popleft()
                if len(times) >= self.rate_limit:
                    wait = times[0] + RATE_WINDOW_S - now
                    self._refuse("rate", wait, f"{key!r} sent {len(times)} requests in the last minute "
                                 f"(limit {self.rate_limit})")  # fmt: skip
                times.append(now)

    def admit(self) -> None:
        """Take a place in the generation queue, or 503 with Retry-After at once when it is full."""
        with self._lock:
            if self.queue_max and self.active >= self.queue_max:
                typical = sum(self.durations) / len(self.durations) if self.durations else 10.0
                self.refused.labels("queue").inc()
                raise HTTPException(
                    503,
                    f"The service is answering {self.active} questions, its limit (WORKSHOP_QUEUE_MAX="
                    f"{self.queue_max}); retry in about {math.ceil(typical)} s.",
                    headers={"Retry-After": str(max(1, math.ceil(typical)))},
                )
            self.active += 1

    def release(self, *, seconds: float | None = None) -> None:
        """Leave the generation queue (seconds: how long the answer took, for the next Retry-After)."""
        with self._lock:
            self.active = max(0, self.active - 1)
            if seconds is not None:
                self.durations.append(seconds)

    def charge(self, key: str, tokens: int) -> None:
        """Charge key's budget with the tokens the backend reported."""
        with self._lock:
            self.charges[key].append((self.clock(), tokens))
        self.tokens.labels(key).inc(tokens)

    def warning_headers(self, key: str) -> dict[str, str]:
        """`X-Budget-Warning` when key has used more than 80 % of its budget, else nothing."""
        share = self.fraction(key)
        if self.token_budget and share >= SOFT_CAP:
            return {"X-Budget-Warning": f"{share:.0%} of {self.token_budget} tokens per {self.window_s:g} s used"}
        return {}

    def budget_event(self, key: str) -> dict | None:
        """The `budget` SSE event's data when key is past 80 % of its budget, else None."""
        share = self.fraction(key)
        if not self.token_budget or share < SOFT_CAP:
            return None
        self.warnings.inc()
        return {"key": key, "used": self.used(key), "budget": self.token_budget, "fraction": round(share, 3),
                "window_s": self.window_s}  # fmt: skip

    async def metered(self, frames: AsyncIterator[str], key: str, *, started: float) -> AsyncIterator[str]:
        """An answer's SSE frames, its usage charged at `done` (a `budget` event first past 80 %); the queue left."""
        try:
            async for frame in frames:
                if frame.startswith("event: done\n"):
                    data = json.loads(frame.split("data: ", 1)[1])
                    self.charge(key, int(data.get("prompt_tokens") or 0) + int(data.get("completion_tokens") or 0))
                    event = self.budget_event(key)
                    if event is not None:
                        yield f"event: budget\ndata: {json.dumps(event)}\n\n"
                yield frame
        finally:
            self.release(seconds=time.perf_counter() - started)

    def _recent(self, key: str) -> deque[tuple[float, int]]:
        """key's charges inside the window (older ones dropped); call with the lock held."""
        charges, horizon = self.charges[key], self.clock() - self.window_s
        while charges and charges[0][0] <= horizon:
            charges.popleft()
        return charges

    def _budget_wait(self, recent: deque[tuple[float, int]], used: int, now: float) -> float:
        """Seconds until enough charges leave the window to bring key under its budget."""
        for at, n in recent:
            used -= n
            if used < self.token_budget:
                return at + self.window_s - now
        return self.window_s

    def _refuse(self, reason: str, wait_s: float, what: str) -> None:
        """Count the refusal and raise the 429 with Retry-After."""
        self.refused.labels(reason).inc()
        retry = max(1, math.ceil(wait_s))
        raise HTTPException(429, f"Limit reached: {what}. Retry in {retry} s.", headers={"Retry-After": str(retry)})
