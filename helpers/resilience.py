"""Timeouts, retries with backoff and jitter, a circuit breaker, a stream deadline. Taught in 14_resilience.ipynb.

    client = make_client(cfg.ollama_host)                  # connect 5 s, read 300 s: a stalled server cannot hang us
    response = retrying()(client.embed, model=..., input=...)   # transient errors only, 3 attempts
    breaker = CircuitBreaker(failures=3, reset_after=10)
    with breaker:                                          # raises CircuitOpenError at once while open
        ...

Lesson 14, helpers.setup and the lesson-13 service (app/service.py) use these.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx
import ollama
import tenacity

log = logging.getLogger("resilience")
CONNECT_S = 5.0  # a server that does not accept the connection in 5 s is down
READ_S = 300.0  # the longest silence between two bytes: a reasoning model's first token can take minutes
WRITE_S = 30.0


def timeouts(*, connect: float = CONNECT_S, read: float = READ_S, write: float = WRITE_S) -> httpx.Timeout:
    """httpx timeouts: connect, read (between two bytes, not the whole answer), write, waiting for a pooled connection."""
    return httpx.Timeout(connect=connect, read=read, write=write, pool=connect)


def make_client(
    host: str,
    *,
    connect: float = CONNECT_S,
    read: float = READ_S,
    headers: dict | None = None,
    asynchronous: bool = False,
) -> Any:
    """An ollama.Client (or AsyncClient) with connect/read timeouts; headers go with every request."""
    cls = ollama.AsyncClient if asynchronous else ollama.Client
    return cls(host=host, timeout=timeouts(connect=connect, read=read), headers=headers)


class DeadlineExceededError(TimeoutError):
    """A whole streamed answer took longer than its deadline."""


def with_deadline(pieces: Iterable, *, seconds: float) -> Iterator:
    """Yield a stream's pieces until `seconds` have passed since the first one was asked for, then close it and raise.

    The deadline is checked at each piece: a stream that sends nothing at all is cut by the client's read timeout.
    """
    start = time.monotonic()
    try:
        for piece in pieces:
            if time.monotonic() - start > seconds:
                raise DeadlineExceededError(f"the answer was not complete after {seconds:g} s (deadline); it was cut")
            yield piece
    finally:
        getattr(pieces, "close", lambda: None)()  # closing the HTTP response stops the generation


def is_transient(exc: BaseException, *, timeouts: bool = True) -> bool:
    """True for errors worth retrying: no connection, a timeout, a dropped connection, HTTP 5xx or 429. Never 4xx.

    timeouts=False: a timeout is not retried (a generation that timed out after minutes should not wait that again).
    """
    if isinstance(exc, httpx.TimeoutException):
        return timeouts
    if isinstance(exc, ollama.ResponseError):
        return exc.status_code >= 500 or exc.status_code == 429  # -1: an error line inside a stream: not retried
    return isinstance(
        exc, ConnectionError | httpx.TransportError
    )  # ollama raises ConnectionError when it can't connect


def failure_kind(exc: BaseException) -> str:
    """A short label for a failure, for logs and the failures counter: timeout, connection, http_503, ..."""
    if isinstance(exc, CircuitOpenError):
        return "circuit_open"
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "timeout"
    if isinstance(exc, ollama.ResponseError):
        return "stream_error" if exc.status_code < 0 else f"http_{exc.status_code}"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return "connection_lost"  # the connection broke after the request was sent (a reset, a crash)
    if isinstance(exc, ConnectionError | httpx.TransportError):
        return "connection"
    return type(exc).__name__


def describe(exc: BaseException) -> str:
    """'Type: message', or 'Type (kind)' when the message is empty (httpx timeouts have none)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else f"{type(exc).__name__} ({failure_kind(exc)})"


def retrying(
    *,
    attempts: int = 3,
    base_s: float = 0.2,
    max_wait_s: float = 2.0,
    on_retry: Callable[[tenacity.RetryCallState], None] | None = None,
    asynchronous: bool = False,
    retry_timeouts: bool = True,
) -> tenacity.Retrying | tenacity.AsyncRetrying:
    """A tenacity policy: up to `attempts` tries on transient errors, waits drawn from 0..base*2^n (full jitter).

    After the last attempt the last error is raised as itself (reraise=True), not wrapped in a RetryError.
    asynchronous=True: an AsyncRetrying, for `await policy(coroutine_function, ...)`. retry_timeouts: see is_transient.
    """

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        sleep = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "attempt %d failed (%s); retrying in %.2f s",
            state.attempt_number,
            describe(exc) if exc else "?",
            sleep,
            extra={"attempt": state.attempt_number, "kind": failure_kind(exc) if exc else "?"},
        )
        if on_retry:
            on_retry(state)

    cls = tenacity.AsyncRetrying if asynchronous else tenacity.Retrying
    return cls(
        stop=tenacity.stop_after_attempt(attempts),
        reraise=True,
        wait=tenacity.wait_random_exponential(multiplier=base_s, max=max_wait_s),
        retry=tenacity.retry_if_exception(lambda exc: is_transient(exc, timeouts=retry_timeouts)),
        before_sleep=before_sleep,
    )


def open_stream(start: Callable[[], Iterable], *, policy: tenacity.Retrying | None = None) -> Iterator:
    """Start a stream and retry (policy) only until its first piece arrives; after that an error is raised, never retried.

    A half-streamed answer has already reached the user: sending the question again would repeat it.
    """

    def first() -> tuple[Iterator, Any]:
        pieces = iter(start())
        return pieces, next(pieces)

    retry: Any = policy or retrying()
    pieces, head = retry(first)
    yield head
    yield from pieces


async def open_stream_async(
    start: Callable[[], Any], *, policy: tenacity.AsyncRetrying | None = None
) -> tuple[Any, Any]:
    """The async open_stream: await start() (e.g. AsyncClient.chat(stream=True)) and its first piece, retried.

    Returns (first piece, the stream for the rest); errors after the first piece are the caller's to handle.
    """

    async def first() -> tuple[Any, Any]:
        pieces = await start()
        return await anext(pieces), pieces

    return await (policy or retrying(asynchronous=True))(first)


class CircuitOpenError(RuntimeError):
    """The circuit breaker is open: the backend failed too often; retry_after_s says when it will be probed."""

    def __init__(self, name: str, retry_after_s: float) -> None:
        super().__init__(
            f"{name} is unavailable (circuit breaker open after repeated failures); next try in {retry_after_s:.0f} s"
        )
        self.retry_after_s = retry_after_s


class CircuitBreaker:
    """closed -> (K failures in a row) -> open -> (reset_after s) -> half-open -> one probe -> closed or open again.

    Thread-safe. `clock` is injectable (tests). Use `with breaker:` around one call; only transient errors count as
    failures (a 400 is the caller's mistake, not the backend's). on_change(old, new) hears every state change.
    """

    def __init__(
        self,
        name: str = "llm",
        *,
        failures: int = 3,
        reset_after: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self.name, self.threshold, self.reset_after, self.clock = name, failures, reset_after, clock
        self.on_change = on_change
        self.lock = threading.Lock()
        self._state, self.failures, self.opened_at, self.probing = "closed", 0, 0.0, False

    @property
    def state(self) -> str:
        """'closed', 'open' or 'half-open' (open turns half-open once reset_after has passed)."""
        with self.lock:
            return self._current()

    def _current(self) -> str:
        if self._state == "open" and self.clock() - self.opened_at >= self.reset_after:
            self._set("half-open")
        return self._state

    def _set(self, state: str) -> None:
        old, self._state = self._state, state
        if old != state:
            log.warning("circuit %s: %s -> %s", self.name, old, state, extra={"breaker": self.name, "state": state})
            if self.on_change:
                self.on_change(old, state)

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a probe through (0 if it is not open)."""
        with self.lock:
            return max(0.0, self.reset_after - (self.clock() - self.opened_at)) if self._current() == "open" else 0.0

    def before(self) -> None:
        """Raise CircuitOpenError unless a call may go ahead (closed; or half-open and no other probe is running)."""
        with self.lock:
            state = self._current()
            if state == "closed":
                return
            if state == "half-open" and not self.probing:
                self.probing = True
                return
            wait = max(0.0, self.reset_after - (self.clock() - self.opened_at)) if state == "open" else 1.0
            raise CircuitOpenError(self.name, wait)

    def success(self) -> None:
        """A call succeeded: close the circuit."""
        with self.lock:
            self.failures, self.probing = 0, False
            self._set("closed")

    def failure(self) -> None:
        """A call failed: open the circuit after `failures` in a row, or at once if it was a half-open probe."""
        with self.lock:
            self.failures += 1
            if self._state == "half-open" or self.failures >= self.threshold:
                self.opened_at, self.probing = self.clock(), False
                self._set("open")

    def release(self) -> None:
        """A call ended with an error that says nothing about the backend (a 4xx): let the next probe through."""
        with self.lock:
            self.probing = False

    def __enter__(self) -> CircuitBreaker:
        self.before()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            self.success()
        elif is_transient(exc) or isinstance(exc, TimeoutError):
            self.failure()
        else:
            self.release()
