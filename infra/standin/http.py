"""HTTP quirks uvicorn has no public setting for: a deadline for a request's line and headers, JSON for a bad request.

uvicorn takes a protocol class (`Config(http=...)`, public), but offers no hook for either quirk: its
timeout_keep_alive only runs between requests, and a request h11 cannot parse is answered in plain text by
H11Protocol.send_400_response. So StandInProtocol subclasses uvicorn's H11Protocol (a private module), here and
nowhere else; an upgrade of uvicorn is checked by tests/test_stand_in_protocol.py (malformed and half-sent requests).
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

REQUEST_TIMEOUT_S = 30.0  # a request (headers and body) must arrive within this


# ---- the HTTP server ------------------------------------------------------------------------------------


class StandInProtocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for the request line and headers, and JSON for a bad request."""

    request_timeout = REQUEST_TIMEOUT_S

    def connection_made(self, transport) -> None:  # noqa: ANN001 - asyncio's signature
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = self.loop.call_later(self.request_timeout, self._timed_out)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            if self._deadline is None and self.conn.trailing_data[0]:
                self._deadline = self.loop.call_later(self.request_timeout, self._timed_out)
        elif self._deadline is not None:  # the headers are in; the app times out a slow body itself
            self._deadline.cancel()
            self._deadline = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.our_state is h11.IDLE and self.conn.trailing_data[0]:
            self.send_json_error(408, f"the request did not arrive within {self.request_timeout:g} s")
        else:
            self.transport.close()  # an idle connection that never sent a request

    def send_400_response(self, msg: str) -> None:  # uvicorn's hook for a request h11 cannot parse
        self.send_json_error(400, f"{msg} (malformed request line, header or Content-Length)")

    def send_json_error(self, status: int, message: str) -> None:
        """Answer {"error": message} and close the connection."""
        data = json.dumps({"error": message}).encode()
        headers = [
            (b"content-type", b"application/json; charset=utf-8"),
            (b"content-length", str(len(data)).encode()),
            (b"connection", b"close"),
        ]
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=status, headers=headers)))
            self.transport.write(self.conn.send(h11.Data(data=data)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            pass
        self.transport.close()
