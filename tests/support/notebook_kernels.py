"""Run a notebook as JupyterLab does: a session (and its kernel) opened through a Jupyter server's REST API, each
code cell sent over the kernel's websocket in order. The kernel is left running afterwards, as a learner leaves it.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEAD_STATES = {"dead", "restarting", "autorestarting"}  # what the server reports when a kernel dies


class KernelDiedError(RuntimeError):
    """The kernel died (or was restarted) while a cell ran."""


@dataclass(frozen=True)
class CellResult:
    """One code cell's run: its index in the notebook, its text output, and its error (None when it passed)."""

    index: int
    output: str
    error: str | None


def api(base: str, token: str, path: str, *, method: str = "GET", body: dict | None = None) -> dict | list:
    """One Jupyter server REST call; its JSON answer."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read().decode() or "{}")


def open_notebook(base: str, token: str, path: str) -> str:
    """Open the notebook at path (relative to the server's root) in a new session, as JupyterLab does; its kernel id."""
    name = Path(path).name
    body = {"path": path, "name": name, "type": "notebook", "kernel": {"name": "python3"}}
    session = api(base, token, "/api/sessions", method="POST", body=body)
    assert isinstance(session, dict)
    return session["kernel"]["id"]


def code_cells(notebook: Path) -> list[tuple[int, str]]:
    """(index, source) of every code cell of a notebook file."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return [(i, "".join(c["source"])) for i, c in enumerate(cells) if c["cell_type"] == "code"]


def execute(ws, code: str, *, session: str) -> tuple[str, str | None]:
    """Run code in the kernel behind ws; (text output, error or None). KernelDiedError when the kernel dies."""
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "msg_type": "execute_request", "username": "learner", "session": session}
    content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False}
    ws.send(json.dumps({"header": {**header, "version": "5.3"}, "parent_header": {}, "metadata": {},
                        "content": content, "channel": "shell"}))  # fmt: skip
    output, error, replied, idle = [], None, False, False
    while not (replied and idle):
        msg = json.loads(ws.recv())
        kind, body = msg["msg_type"], msg.get("content", {})
        if kind == "status" and body.get("execution_state") in DEAD_STATES:
            raise KernelDiedError(f"the kernel is {body['execution_state']}")
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if kind == "stream":
            output.append(body["text"])
        elif kind == "error":
            error = "\n".join(body.get("traceback") or [f"{body.get('ename')}: {body.get('evalue')}"])
        elif kind == "execute_reply":
            replied = True
            if body.get("status") != "ok" and error is None:
                error = f"execute_reply status {body.get('status')}: {body.get('ename')} {body.get('evalue')}"
        elif kind == "status" and body.get("execution_state") == "idle":
            idle = True
    return "".join(output), error


def run_notebook(
    base: str,
    token: str,
    kernel_id: str,
    notebook: Path,
    *,
    timeout: float,
    before_cell: Callable[[int], None] | None = None,
) -> list[CellResult]:
    """Run the notebook's code cells in order in the kernel; stop at the first error (as Run All does)."""
    import websocket

    url = base.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels"
    ws = websocket.create_connection(url, header=[f"Authorization: token {token}"], timeout=timeout)
    session, results = uuid.uuid4().hex, []
    try:
        for index, code in code_cells(notebook):
            if before_cell:
                before_cell(index)
            output, error = execute(ws, code, session=session)
            results.append(CellResult(index, output, error))
            if error:
                break
    finally:
        ws.close()
    return results
