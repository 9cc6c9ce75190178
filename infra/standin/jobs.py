"""Model calls in worker threads: a FIFO queue per model, a job per request, and the answer streamed or whole.

- model calls block, so each runs in a worker thread; requests for one model wait in a FIFO queue;
- a streamed answer commits to HTTP 200 only once its first line is there, so an early error is a
  proper status + {"error": ...}; an error after that is an {"error": ...} NDJSON line, as Ollama sends;
- a client that disconnects (streamed or not, queued or generating) cancels its request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

if TYPE_CHECKING:
    from infra.standin.registry import Served

from infra.standin.errors import ApiError, error_text

log = logging.getLogger("workshop.stand-in")

POLL_S = 0.1  # how often a waiting request checks whether its client is still there


class FifoLock:
    """A lock that serves waiters in arrival order; a waiter whose client is gone leaves the queue."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._queue: deque[Any] = deque()
        self._held = False

    def acquire(self, cancelled: threading.Event | None = None) -> bool:
        """Wait for our turn; False (and out of the queue) if `cancelled` is set first."""
        me = object()
        with self._cv:
            self._queue.append(me)
            while self._held or self._queue[0] is not me:
                if cancelled is not None and cancelled.is_set():
                    self._queue.remove(me)
                    self._cv.notify_all()
                    return False
                self._cv.wait(timeout=POLL_S)
            self._queue.popleft()
            self._held = True
            return True

    def release(self) -> None:
        """Hand the lock to the next waiter."""
        with self._cv:
            self._held = False
            self._cv.notify_all()

    def __enter__(self) -> FifoLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    @property
    def waiting(self) -> int:
        """Requests holding or waiting for the lock."""
        with self._cv:
            return len(self._queue) + self._held


class Job:
    """A blocking model call in a worker thread; what it yields reaches the event loop through a deque.

    The hand-off costs one wake-up per line: the worker appends to a deque (thread-safe) and schedules one call
    on the loop, which resolves the future the request is waiting on (if any). The request pops lines straight
    from the deque while there are some, and checks for a hang-up at most every POLL_S (a timer only while it
    waits). Measured on 2 cores, an asyncio.Queue read through a task and asyncio.wait per line cost the decode
    loop CPU it needs (see docs/benchmarks.md).
    """

    def __init__(self, work: Callable[[threading.Event], Iterator[dict]]) -> None:
        self.loop = asyncio.get_running_loop()
        self.items: deque[tuple[str, Any]] = deque()
        self.cancelled = threading.Event()
        self._waiter: asyncio.Future | None = None
        self._checked = time.monotonic()
        threading.Thread(target=self._run, args=(work,), daemon=True, name="stand-in-job").start()

    def _wake(self) -> None:
        """On the loop: let a waiting next() go on."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _put(self, kind: str, value: Any) -> None:
        self.items.append((kind, value))
        try:
            self.loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the server has shut down its loop
            pass

    def _run(self, work: Callable[[threading.Event], Generator[dict, None, None]]) -> None:
        try:
            lines = work(self.cancelled)
            try:
                for line in lines:
                    if self.cancelled.is_set():
                        break
                    self._put("item", line)
            finally:
                lines.close()
        except Exception as exc:  # handed to the request, which answers with it
            self._put("error", exc)
        finally:
            self._put("end", None)

    async def _gone(self, request: Request) -> bool:
        """True (and the work cancelled) if the client has disconnected; asked at most every POLL_S."""
        now = time.monotonic()
        if now - self._checked < POLL_S:
            return False
        self._checked = now
        if await request.is_disconnected():
            self.cancel()
            return True
        return False

    async def next(self, request: Request) -> tuple[str, Any]:
        """("item", line), ("error", exc) or ("end", None); ("gone", None) once the client has disconnected."""
        while True:
            if await self._gone(request):  # also while lines flow: a busy stream must notice a hang-up too
                return "gone", None
            if self.items:
                return self.items.popleft()
            waiter = self._waiter = self.loop.create_future()
            timer = self.loop.call_later(POLL_S, self._wake)
            try:
                if not self.items:  # a line may have arrived since the check above
                    await waiter
            finally:
                timer.cancel()
                self._waiter = None

    def cancel(self) -> None:
        """Stop the work at its next token (or take it out of the queue if it waits there)."""
        self.cancelled.set()
        self._wake()


def queued(
    served: Served, keep_alive: float | None, body: Callable[[Any, int, threading.Event], Iterator[dict]]
) -> Callable[[threading.Event], Iterator[dict]]:
    """Work that waits its turn for the model, loads it, runs body(model, load_ns, cancelled), honours keep_alive 0."""

    def work(cancelled: threading.Event) -> Iterator[dict]:
        if not served.lock.acquire(cancelled):
            log.info("a queued request for %s was cancelled: its client went away", served.name)
            return
        try:
            model, load_ns = served.get()
            yield from body(model, load_ns, cancelled)
        finally:
            if keep_alive == 0:
                served.unload()
            served.lock.release()

    return work


def ndjson(line: dict) -> bytes:
    """One NDJSON line."""
    return (json.dumps(line) + "\n").encode("utf-8")


def ndjson_error(message: str) -> bytes:
    """Ollama's mid-stream error line."""
    return ndjson({"error": message})


async def answer(
    request: Request,
    job: Job,
    stream: bool,
    merge: Callable[[list[dict]], dict],
    encode: Callable[[dict], bytes] = ndjson,
    error_line: Callable[[str], bytes] = ndjson_error,
    media_type: str = "application/x-ndjson",
) -> Response:
    """Pull the first line, then stream (errors as NDJSON lines) or answer one JSON object merged from all.

    encode, error_line and media_type make the stream another API's (the OpenAI-compatible one's SSE).
    """
    kind, first = await job.next(request)
    if kind == "error":
        raise ApiError(*error_text(first))  # before anything was sent: a proper status + {"error": ...}
    if kind in {"gone", "end"}:
        return Response(status_code=499 if kind == "gone" else 500)
    if not stream:
        lines = [first]
        while True:
            kind, value = await job.next(request)
            if kind == "item":
                lines.append(value)
            elif kind == "error":
                raise ApiError(*error_text(value))
            elif kind == "gone":
                log.info("client went away; generation stopped")
                return Response(status_code=499)
            else:
                return JSONResponse(merge(lines))

    async def rest() -> AsyncIterator[bytes]:
        try:
            yield encode(first)
            while True:
                kind, value = await job.next(request)
                if kind == "item":
                    yield encode(value)
                elif kind == "error":
                    yield error_line(error_text(value)[1])  # the API's mid-stream error
                    return
                else:
                    if kind == "gone":
                        log.info("client hung up mid-stream; generation stopped")
                    return
        finally:
            job.cancel()

    return StreamingResponse(rest(), media_type=media_type)
