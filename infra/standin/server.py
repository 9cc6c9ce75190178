"""uvicorn serving the stand-in's app on 127.0.0.1 (a socket bound up front, so a taken port fails early)."""

from __future__ import annotations

import socket
import threading

import uvicorn

from infra.standin.app import make_app
from infra.standin.http import REQUEST_TIMEOUT_S, StandInProtocol
from infra.standin.registry import Registry


class StandInServer:
    """uvicorn serving the stand-in on a socket bound to 127.0.0.1 at construction (so a taken port fails early)."""

    def __init__(self, port: int, registry: Registry, request_timeout: float = REQUEST_TIMEOUT_S) -> None:
        self.registry = registry
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind(("127.0.0.1", port))
        except OSError:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        protocol = type("Protocol", (StandInProtocol,), {"request_timeout": request_timeout})
        config = uvicorn.Config(
            make_app(registry, request_timeout),
            http=protocol,
            ws="none",
            lifespan="off",
            log_config=None,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=3,
            server_header=False,
            loop="asyncio",
        )
        self.server = uvicorn.Server(config)
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        """Serve until shutdown() (or, in the main thread, SIGTERM / Ctrl-C)."""
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Ask the server to stop and wait until it has."""
        self.server.should_exit = True
        self._stopped.wait(timeout)

    def server_close(self) -> None:
        """Close the listening socket."""
        self.socket.close()


def make_server(port: int, registry: Registry, request_timeout: float = REQUEST_TIMEOUT_S) -> StandInServer:
    """Bind 127.0.0.1:port (never another interface) with the given registry."""
    return StandInServer(port, registry, request_timeout)
