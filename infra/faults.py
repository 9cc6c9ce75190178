"""A fault-injecting reverse proxy in front of any Ollama: a TEST DEVICE, not part of the lesson pipeline.

Used by 14_resilience.ipynb as one uses a chaos proxy: a process of its own, driven over HTTP. Real requests pass
through to a real server (the offline stand-in in CI); the proxy breaks some of them on purpose so that timeouts,
retries, the circuit breaker and the fallbacks can be shown and tested against real failures:

    python -m infra.faults --upstream http://127.0.0.1:11435 [--port 0] [--url-file PATH]
        listens on 127.0.0.1 (port 0: a free one), prints its URL on stdout once it answers, stops on SIGTERM/SIGINT
        (or when its stdin closes, with --watch-stdin: a notebook kernel that dies takes its proxy with it)
    curl -X POST URL/_faults -d '{"fault": "503", "times": 2, "path": "/api/chat"}'   # per process (null heals)
    curl URL/_faults/seen ; curl -X DELETE URL/_faults/seen                            # the requests handled
    ollama.Client(host=URL, headers={"X-Fault": "die:3"})                              # per request: a header

Tests may run it in-process: `with FaultProxy(upstream) as proxy: proxy.set("503", times=2)`.

Faults (one string, `kind` or `kind:number`):
    "500", "503", "429", "404", "400"  HTTP status with Ollama's error body {"error": ...}, upstream not called
    "reset"                            the TCP connection is reset (RST) before any response
    "delay:S"                          wait S seconds, then pass the request through (added latency)
    "slow-first:S"                     headers at once, the first body line S seconds late (a long first token)
    "stall:N"                          pass N lines of a streamed answer, then send nothing more (connection open)
    "die:N"                            pass N lines of a streamed answer, then reset the connection mid-answer
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from infra.background import BackgroundServer

STATUSES = {
    400: "bad request (injected)",
    404: "not found (injected)",
    429: "too many requests (injected)",
    500: "internal server error (injected)",
    503: "service unavailable (injected)",
}
KINDS = ("reset", "delay", "slow-first", "stall", "die")
HEADER = "x-fault"
Receive = Callable[[], Awaitable[dict[str, Any]]]  # the ASGI callables
Send = Callable[[dict[str, Any]], Awaitable[None]]
ADMIN = "/_faults"  # the control endpoints: never forwarded, never faulted, never in `seen`


def closed_writes(record: logging.LogRecord) -> bool:
    """Drop asyncio's "socket.send() raised exception." (a write to a client that hung up: what faults are for)."""
    return not record.getMessage().startswith("socket.send() raised exception")


@dataclass(frozen=True)
class Fault:
    """A parsed fault: kind ("503", "reset", "delay", ...) and its number (seconds or lines), if any."""

    kind: str
    arg: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """'503', 'reset', 'delay:2', 'slow-first:1.5', 'stall:3', 'die:3'; a ValueError says what is allowed."""
        kind, _, arg = spec.strip().partition(":")
        if kind.isdigit() and int(kind) in STATUSES and not arg:
            return cls(kind)
        if kind in KINDS and (kind == "reset") == (arg == ""):
            try:
                return cls(kind, float(arg or 0))
            except ValueError:
                pass
        raise ValueError(
            f"unknown fault {spec!r}: use one of {sorted(STATUSES)}, 'reset', 'delay:SECONDS', "
            "'slow-first:SECONDS', 'stall:LINES' or 'die:LINES'"
        )


@dataclass
class Plan:
    """The per-process fault: applies to the next `times` requests (None: all) whose path starts with `path`."""

    fault: Fault | None = None
    times: int | None = None
    path: str = ""


@dataclass
class Seen:
    """One request the proxy handled: its path, the fault applied (or None) and when."""

    path: str
    fault: str | None
    at: float = field(default_factory=time.monotonic)


async def hang_up(receive: Receive) -> None:
    """Return once the client has gone away (ASGI http.disconnect); the request body must have been read."""
    while (await receive())["type"] != "http.disconnect":
        pass


def reset(send: Send) -> None:
    """Reset the client's TCP connection (SO_LINGER 0, then abort: the peer gets an RST, not a clean close)."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError(
            "cannot reach the connection's transport: serve the proxy with uvicorn (FaultProxy, python -m infra.faults)"
        )
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def read_body(receive: Receive) -> bytes:
    """The whole request body from an ASGI receive channel."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


class FaultApp:
    """The ASGI reverse proxy: forwards each request to upstream with httpx, line by line, unless a fault applies."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.plan = Plan()
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.http: httpx.AsyncClient | None = None

    def choose(self, path: str, header: str | None) -> Fault | None:
        """The fault for this request: its X-Fault header first, else the per-process plan (counting it down)."""
        if header:
            return Fault.parse(header)
        with self.lock:
            plan = self.plan
            if plan.fault is None or not path.startswith(plan.path) or plan.times == 0:
                return None
            if plan.times is not None:
                plan.times -= 1
            return plan.fault

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    self.http = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5.0))
                    await send({"type": "lifespan.startup.complete"})
            if self.http is not None:
                await self.http.aclose()
            return await send({"type": "lifespan.shutdown.complete"})
        if scope["path"] == ADMIN or scope["path"].startswith(ADMIN + "/"):
            return await self.admin(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            fault = self.choose(scope["path"], headers.pop(HEADER, None))
        except ValueError as exc:
            return await self.reply(send, 400, str(exc))
        self.seen.append(Seen(scope["path"], None if fault is None else f"{fault.kind}:{fault.arg:g}"))
        body = await read_body(receive)
        if fault and fault.kind.isdigit():
            return await self.reply(send, int(fault.kind), STATUSES[int(fault.kind)])
        if fault and fault.kind == "reset":
            return reset(send)
        gone = asyncio.ensure_future(hang_up(receive))  # done when the client goes away (a timeout, a Stop)
        try:
            if fault and fault.kind == "delay":
                await asyncio.wait({gone}, timeout=fault.arg)
            if not gone.done():  # a client that gave up is not forwarded: the backend never sees it
                relay = asyncio.ensure_future(self.forward(scope, gone, send, headers, body, fault))
                await asyncio.wait({relay, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not relay.done():  # the client hung up first: cancelling closes the upstream request too
                    relay.cancel()
                await asyncio.gather(relay, return_exceptions=True)
        finally:
            gone.cancel()

    async def forward(
        self, scope: dict, gone: asyncio.Future, send: Send, headers: dict, body: bytes, fault: Fault | None
    ) -> None:
        """Pass the request upstream; relay the answer line by line, applying slow-first, stall or die.

        When the client hangs up, the upstream response is closed, so the backend stops generating for nobody.
        """
        headers.pop("host", None)
        for name in ("content-length", "accept-encoding"):
            headers.pop(name, None)
        url = self.upstream + scope["path"] + (f"?{scope['query_string'].decode()}" if scope["query_string"] else "")
        if self.http is None:
            raise RuntimeError("the proxy's HTTP client is made at start-up: serve FaultApp with lifespan on")
        request = self.http.build_request(scope["method"], url, headers=headers, content=body)
        try:
            upstream = await self.http.send(request, stream=True)
        except httpx.TransportError as exc:
            return await self.reply(send, 502, f"the proxy's upstream {self.upstream} does not answer: {exc!r}")
        try:
            keep = [
                (k.encode(), v.encode())
                for k, v in upstream.headers.items()
                if k.lower() not in {"content-length", "transfer-encoding", "connection", "content-encoding"}
            ]
            await send({"type": "http.response.start", "status": upstream.status_code, "headers": keep})
            lines = 0
            async for line in upstream.aiter_lines():
                if fault and fault.kind == "slow-first" and lines == 0:
                    await asyncio.wait({gone}, timeout=fault.arg)
                if fault and fault.kind in ("stall", "die") and lines >= fault.arg:
                    if fault.kind == "die":
                        return reset(send)
                    await gone  # stalls until the client hangs up
                if gone.done():
                    return None
                await send({"type": "http.response.body", "body": line.encode() + b"\n", "more_body": True})
                lines += 1
            await send({"type": "http.response.body", "body": b""})
        finally:
            await upstream.aclose()  # closing the upstream stream makes the server stop generating

    def set(self, spec: str | None, *, times: int | None = None, path: str = "") -> Plan:
        """Break the next `times` requests (None: every one) whose path starts with `path`; spec None heals."""
        if times is not None and (not isinstance(times, int) or times < 0):
            raise ValueError(f"times must be a whole number >= 0 or null, not {times!r}")
        plan = Plan(None if spec is None else Fault.parse(spec), times, path)
        with self.lock:
            self.plan = plan
        return plan

    def plan_json(self) -> dict:
        """The per-process plan as JSON: {"fault": "503" | "die:3" | null, "times": ..., "path": ...}."""
        f = self.plan.fault
        spec = None if f is None else (f.kind if f.kind.isdigit() or f.kind == "reset" else f"{f.kind}:{f.arg:g}")
        return {"fault": spec, "times": self.plan.times, "path": self.plan.path}

    async def admin(self, scope: dict, receive: Receive, send: Send) -> None:
        """POST /_faults {"fault", "times", "path"}; GET /_faults; GET and DELETE /_faults/seen."""
        body = await read_body(receive)
        route = (scope["method"], scope["path"].rstrip("/"))
        if route == ("GET", ADMIN):
            return await self.reply_json(send, 200, self.plan_json())
        if route == ("POST", ADMIN):
            try:
                wanted = json.loads(body or b"{}")
                unknown = set(wanted) - {"fault", "times", "path"}
                if unknown:
                    raise ValueError(f"unknown field(s) {sorted(unknown)}: send fault, times and path")
                self.set(wanted.get("fault"), times=wanted.get("times"), path=wanted.get("path") or "")
            except (ValueError, TypeError, AttributeError) as exc:
                return await self.reply(send, 400, str(exc))
            return await self.reply_json(send, 200, self.plan_json())
        if route == ("GET", ADMIN + "/seen"):
            return await self.reply_json(send, 200, [{"path": x.path, "fault": x.fault} for x in self.seen])
        if route == ("DELETE", ADMIN + "/seen"):
            cleared = len(self.seen)
            self.seen.clear()
            return await self.reply_json(send, 200, {"cleared": cleared})
        return await self.reply(send, 404, f"no {route[0]} {route[1]}: use POST/GET {ADMIN}, GET/DELETE {ADMIN}/seen")

    @staticmethod
    async def reply_json(send: Send, status: int, payload: object) -> None:
        """A JSON response."""
        body = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def reply(send: Send, status: int, error: str) -> None:
        """An Ollama-shaped error response: status + {"error": ...}."""
        body = json.dumps({"error": error}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


class FaultProxy:
    """FaultApp served in this process (infra.background: 127.0.0.1, a free port, a daemon thread); for tests."""

    def __init__(self, upstream: str, *, port: int = 0, app: FaultApp | None = None) -> None:
        self.app = app or FaultApp(upstream)  # app: a FaultApp subclass, e.g. one that records requests
        self.server = BackgroundServer(self.app, port=port, log_level="critical")
        self.url = ""

    def start(self, timeout: float = 30) -> FaultProxy:
        """Start serving; returns once the port listens (self.url)."""
        logging.getLogger("asyncio").addFilter(closed_writes)  # added once, however many proxies start
        self.url = self.server.start(timeout=timeout).url
        return self

    def set(self, spec: str | None, *, times: int | None = None, path: str = "") -> None:
        """Break the next `times` requests (None: every one) whose path starts with `path`; set(None) heals."""
        self.app.set(spec, times=times, path=path)

    def clear(self) -> None:
        """No fault: every request passes through."""
        self.set(None)

    @property
    def seen(self) -> list[Seen]:
        """Every request handled so far, in order."""
        return self.app.seen

    def stop(self) -> None:
        """Stop the server and wait for its thread."""
        self.server.stop()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m infra.faults --upstream URL [--port P] [--url-file PATH] [--watch-stdin]`: serve until stopped."""
    parser = argparse.ArgumentParser(prog="python -m infra.faults", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--upstream", required=True, help="the Ollama (or stand-in) to forward to, e.g. http://127.0.0.1:11435"
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: a free one)")
    parser.add_argument("--url-file", type=Path, help="also write the URL to this file once the proxy answers")
    parser.add_argument("--watch-stdin", action="store_true", help="stop when stdin closes (the parent went away)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.watch_stdin:

        def watch() -> None:
            sys.stdin.read()  # returns at end of file: the parent closed the pipe, or went away
            stop.set()

        threading.Thread(target=watch, name="stdin-watch", daemon=True).start()
    proxy = FaultProxy(args.upstream, port=args.port).start()
    if args.url_file:
        args.url_file.write_text(proxy.url + "\n", encoding="utf-8")
    print(proxy.url, flush=True)
    try:
        stop.wait()
    finally:
        proxy.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
