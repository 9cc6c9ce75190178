"""A reverse proxy in front of the stand-in that records every chat request's JSON body: what the model receives.

Built on the fault proxy (infra.faults), with no fault planned: requests pass through unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from infra.faults import FaultApp, FaultProxy


class RecordingApp(FaultApp):
    """FaultApp that keeps the body of every POST /api/chat."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.chats: list[dict] = []

    async def forward(self, scope: dict, gone: Any, send: Any, headers: dict, body: bytes, fault: Any) -> None:
        """Record, then pass the request on."""
        if scope["path"] == "/api/chat":
            self.chats.append(json.loads(body or b"{}"))
        return await super().forward(scope, gone, send, headers, body, fault)


class RecordingProxy(FaultProxy):
    """A FaultProxy whose app records chat bodies: `answers()` are the streamed (answer) requests, in order."""

    def __init__(self, upstream: str) -> None:
        self.recorder = RecordingApp(upstream)
        super().__init__(upstream, app=self.recorder)

    def answers(self) -> list[dict]:
        """The chat requests that asked for a streamed answer (rewrites are not streamed)."""
        return [c for c in self.recorder.chats if c.get("stream")]
