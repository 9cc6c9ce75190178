"""The stand-in as attendees get it: a background process started, reused and stopped by the launcher.

The first tests are fast: they check whom the launcher trusts, against a stranger's process (`sleep`)
and a small HTTP server that answers /api/version as another checkout's stand-in would. The last one
starts the real stand-in (slow).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import ollama
import pytest

from infra.standin.launcher import (
    StandInError,
    ensure_stand_in,
    is_stand_in,
    log_file,
    pid_file,
    process_is_our_stand_in,
    stop_stand_in,
)
from infra.standin.settings import REPO_ROOT, read_settings
from tests.conftest import free_port, needs_offline


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen]:
    """A process that is not a stand-in, as a stale pid file may name after a reboot."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def other_checkout(stranger) -> Iterator[int]:
    """The port of an HTTP server that answers /api/version as the stand-in of another checkout."""
    info = {
        "version": "0.6.3",
        "workshop_stand_in": True,
        "pid": stranger.pid,
        "checkout": "/home/someone/else",
        "models": ["smollm2:135m"],
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            data = json.dumps(info).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def settings_for(tmp_path, port: int):
    return dataclasses.replace(read_settings(), state_dir=tmp_path, stand_in_port=port)


def test_stop_with_a_stale_pid_file_signals_nobody(tmp_path, stranger):
    settings = settings_for(tmp_path, free_port())
    pid_file(settings).write_text(json.dumps({"pid": stranger.pid, "port": settings.stand_in_port}))
    assert not process_is_our_stand_in(stranger.pid)
    assert not stop_stand_in(settings)
    assert stranger.poll() is None, "make stop signalled a process that is not the stand-in"
    assert not pid_file(settings).exists(), "the stale pid file is left behind"


def test_another_checkouts_stand_in_is_neither_reused_nor_stopped(tmp_path, stranger, other_checkout):
    settings = settings_for(tmp_path, other_checkout)
    with pytest.raises(StandInError) as err:
        ensure_stand_in(settings)
    message = str(err.value)
    assert "another checkout" in message and "/home/someone/else" in message
    assert "WORKSHOP_STAND_IN_PORT" in message
    pid_file(settings).write_text(json.dumps({"pid": stranger.pid, "port": other_checkout}))  # its pid, our file
    assert not stop_stand_in(settings)
    assert stranger.poll() is None


@pytest.mark.slow
@needs_offline
def test_start_reuse_stop(tmp_path):
    settings = settings_for(tmp_path, free_port())
    url, started = ensure_stand_in(settings)
    try:
        assert started and is_stand_in(url)
        record = json.loads(pid_file(settings).read_text())
        assert record["checkout"] == str(REPO_ROOT) and process_is_our_stand_in(record["pid"])
        assert "serving" in log_file(settings).read_text()
        again, started_again = ensure_stand_in(settings)  # a second notebook reuses it
        assert again == url and not started_again
        assert ollama.Client(host=url).embed(model="all-minilm", input="x").embeddings
    finally:
        assert stop_stand_in(settings)
    assert not is_stand_in(url) and not pid_file(settings).exists()
    assert "stopped" in log_file(settings).read_text()
    assert not stop_stand_in(settings)  # stopping twice is harmless
