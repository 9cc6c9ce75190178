"""Several attendees on one real JupyterHub (docs/hub/jupyterhub_config.py): each gets a working setup of their own.

The hub (from the venv), its proxy (configurable-http-proxy from npm, `make hub-proxy`) and a single-user JupyterLab
per attendee all run as real processes on 127.0.0.1; each attendee's kernel runs the lessons' setup call, a chat and a
history write at the same time as the other's. No attendee may reuse or stop another's stand-in, and their pid files,
ports and history databases must differ. Everything started here is stopped here, by pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from infra.standin.launcher import missing_packages
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
HUB_CONFIG = ROOT / "docs" / "hub" / "jupyterhub_config.py"
PROXY = ROOT / "infra" / "hub" / "node_modules" / ".bin" / "configurable-http-proxy"
USERS = ["ada", "grace"]
PORT_BASE = int(os.environ.get("WORKSHOP_HUB_PORT_BASE") or 12610)  # user ids 1, 2: stand-in ports 12611, 12612

pytestmark = pytest.mark.slow

# What each attendee's kernel runs: the lessons' one setup call, one short chat, one history row; then a JSON line.
KERNEL_CODE = """
import json, os
import ollama
from helpers.setup import setup
from helpers.history import HistoryStore, new_chat_id
cfg = setup()
reply = ollama.Client(host=cfg.ollama_host).chat(
    model=cfg.chat_model, messages=[{"role": "user", "content": "Say hello."}], options={"num_predict": 8})
store = HistoryStore(cfg.settings.state_dir / "history.sqlite")
store.add_turn(new_chat_id(), "Say hello.", reply.message.content)
print("RESULT " + json.dumps({
    "backend": cfg.backend, "host": cfg.ollama_host, "state_dir": str(cfg.settings.state_dir),
    "pid_file": json.loads((cfg.settings.state_dir / "stand-in.pid").read_text()),
    "history": str(store.path), "chats": len(store.chat_ids()), "answer": reply.message.content,
    "kernel_pid": os.getpid()}))
"""


def api(base: str, path: str, token: str, *, method: str = "GET", body: dict | None = None) -> tuple[int, dict]:
    """(status, JSON body) of one hub or Jupyter server REST call."""
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    request = urllib.request.Request(base + path, data=data, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        text = response.read().decode() or "{}"
        return response.status, json.loads(text)


def wait_for(check, *, timeout: float, what: str):
    """Poll check() until it returns something truthy; fail naming what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def run_in_kernel(base: str, user: str, token: str, code: str, *, timeout: float = 600.0) -> str:
    """Start a kernel in the user's server (through the hub's proxy), run code, return its output; fail on an error."""
    import websocket

    _, kernel = api(base, f"/user/{user}/api/kernels", token, method="POST", body={"name": "python3"})
    ws_url = base.replace("http://", "ws://") + f"/user/{user}/api/kernels/{kernel['id']}/channels"
    ws = websocket.create_connection(ws_url, header=[f"Authorization: token {token}"], timeout=timeout)
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "msg_type": "execute_request", "username": user, "session": uuid.uuid4().hex}
    content = {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False}
    ws.send(json.dumps({"header": {**header, "version": "5.3"}, "parent_header": {}, "metadata": {},
                        "content": content, "channel": "shell"}))  # fmt: skip
    output, replied, idle = [], False, False
    try:
        while not (replied and idle):
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "stream":
                output.append(msg["content"]["text"])
            elif kind == "error":
                raise AssertionError(f"{user}'s kernel failed: " + "\n".join(msg["content"]["traceback"]))
            elif kind == "execute_reply":
                replied = True
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
    finally:
        ws.close()
    return "".join(output)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """(public URL, admin token, attendees' homes) of a running JupyterHub; hub, proxy and servers stopped after."""
    if missing_packages() or shutil.which("jupyterhub", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("the hub test needs the offline install with JupyterHub: run make install-offline")
    if not PROXY.exists():  # in CI (.ci/run installs it) a failure; on a laptop without Node.js a skip that says why
        message = f"JupyterHub's proxy is missing ({PROXY}): run `make hub-proxy` (it needs Node.js and npm)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    token, homes = uuid.uuid4().hex, tmp_path / "homes"
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(
        f"c = get_config()\nload_subconfig({str(HUB_CONFIG)!r})\n"
        f"c.JupyterHub.services = [{{'name': 'room-test', 'api_token': {token!r}}}]\n"
        "c.JupyterHub.load_roles = [{'name': 'room-test', 'services': ['room-test'], "
        "'scopes': ['admin:users', 'admin:servers', 'access:servers', 'tokens']}]\n"
    )
    public = f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "WORKSHOP_REPO": str(ROOT),
        "WORKSHOP_HUB_HOMES": str(homes),
        "WORKSHOP_HUB_PORT_BASE": str(PORT_BASE),
        "WORKSHOP_HUB_BIND_URL": public,
        "WORKSHOP_HUB_API_PORT": str(free_port()),
        "WORKSHOP_HUB_PROXY_API_PORT": str(free_port()),
        "WORKSHOP_HUB_DUMMY_PASSWORD": uuid.uuid4().hex,
        "WORKSHOP_OFFLINE": "1",
        "WORKSHOP_FAST": "1",
    }
    env.pop("WORKSHOP_STATE_DIR", None)
    env.pop("WORKSHOP_STAND_IN_PORT", None)
    hub_bin = str(Path(sys.executable).parent / "jupyterhub")
    with open(tmp_path / "hub.log", "wb") as log:
        proc = subprocess.Popen([hub_bin, "-f", str(config)], cwd=tmp_path, env=env, stdout=log, stderr=log)
    try:
        wait_for(lambda: api(public, "/hub/api/", token)[0] == 200, timeout=180, what="the hub to answer")
        yield public, token, homes
    finally:
        try:
            seen = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        except psutil.NoSuchProcess:  # the hub died: its log (printed below) says why
            seen = set()
        for user in USERS:  # each attendee's stand-in, by the pid its own pid file names
            stop_stand_in_of(homes / user / ".workshop")
        proc.send_signal(signal.SIGTERM)  # the hub stops the single-user servers and the proxy it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pid in seen:  # anything the hub started that is still running
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
        print((tmp_path / "hub.log").read_text(errors="replace")[-3000:])


def stop_stand_in_of(state_dir: Path) -> None:
    """Stop the stand-in named by one attendee's pid file (the launcher's own stop, with that attendee's settings)."""
    record_path = state_dir / "stand-in.pid"
    if not record_path.exists():
        return
    port = json.loads(record_path.read_text())["port"]
    env = {**os.environ, "WORKSHOP_STATE_DIR": str(state_dir), "WORKSHOP_STAND_IN_PORT": str(port)}
    subprocess.run([sys.executable, "-m", "infra.standin", "stop"], cwd=ROOT, env=env, check=False, timeout=60)


def session_footprint(kernel_pid: int, stand_in_pid: int) -> str:
    """Resident memory and CPU seconds so far of an attendee's JupyterLab server, kernel and stand-in."""
    kernel = psutil.Process(kernel_pid)
    parts = {"JupyterLab": kernel.parent(), "kernel": kernel, "stand-in": psutil.Process(stand_in_pid)}
    text = [
        f"{name} {p.memory_info().rss / 2**20:.0f} MB, {sum(p.cpu_times()[:2]):.1f} s CPU" for name, p in parts.items()
    ]
    total = sum(p.memory_info().rss for p in parts.values()) / 2**20
    return "; ".join(text) + f"; total {total:.0f} MB resident (load {os.getloadavg()[0]:.1f})"


def version_at(host: str) -> dict:
    """/api/version of the stand-in at host."""
    with urllib.request.urlopen(host + "/api/version", timeout=5) as response:
        return json.loads(response.read())


def test_two_attendees_at_once_each_get_their_own_stand_in_and_state(hub: tuple[str, str, Path]) -> None:
    public, token, homes = hub
    for user in USERS:
        api(public, f"/hub/api/users/{user}", token, method="POST")
        status, _ = api(public, f"/hub/api/users/{user}/server", token, method="POST")
        assert status in (201, 202)
    for user in USERS:
        wait_for(
            lambda u=user: api(public, f"/hub/api/users/{u}", token)[1]["servers"].get("", {}).get("ready"),
            timeout=300,
            what=f"{user}'s JupyterLab",
        )

    results: dict[str, dict] = {}
    errors: list[BaseException] = []

    def attendee(user: str) -> None:
        try:
            out = run_in_kernel(public, user, token, KERNEL_CODE)
            line = next(line for line in out.splitlines() if line.startswith("RESULT "))
            results[user] = json.loads(line.removeprefix("RESULT "))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=attendee, args=(user,)) for user in USERS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=900)
    assert not errors, errors
    assert sorted(results) == USERS

    ada, grace = results["ada"], results["grace"]
    for user, result in results.items():
        print(user, {k: v for k, v in result.items() if k != "answer"})
        assert result["backend"] == "stand-in"
        assert result["answer"].strip(), f"{user}'s stand-in gave an empty answer"
        assert result["state_dir"] == str(homes / user / ".workshop")
        assert result["history"] == str(homes / user / ".workshop" / "history.sqlite")
        assert result["chats"] == 1, f"{user}'s history holds another attendee's chat"
        port = result["pid_file"]["port"]
        assert result["host"] == f"http://127.0.0.1:{port}"
        assert version_at(result["host"])["pid"] == result["pid_file"]["pid"], "the pid file names the serving stand-in"
    assert {ada["pid_file"]["port"], grace["pid_file"]["port"]} == {PORT_BASE + 1, PORT_BASE + 2}
    assert ada["pid_file"]["pid"] != grace["pid_file"]["pid"], "one attendee reused the other's stand-in"
    assert ada["kernel_pid"] != grace["kernel_pid"]

    for user, result in results.items():  # one attendee's session: JupyterLab, a kernel, a stand-in (printed only)
        print(f"{user}'s session:", session_footprint(result["kernel_pid"], result["pid_file"]["pid"]))

    # Ada runs the setup again (a second lesson): she reuses her own stand-in, and Grace's keeps running untouched.
    again = run_in_kernel(public, "ada", token, KERNEL_CODE)
    ada2 = json.loads(next(line for line in again.splitlines() if line.startswith("RESULT ")).removeprefix("RESULT "))
    assert ada2["pid_file"]["pid"] == ada["pid_file"]["pid"] and ada2["chats"] == 2
    assert version_at(grace["host"])["pid"] == grace["pid_file"]["pid"], "Grace's stand-in was stopped or replaced"
    assert psutil.pid_exists(ada["pid_file"]["pid"]) and psutil.pid_exists(grace["pid_file"]["pid"])
