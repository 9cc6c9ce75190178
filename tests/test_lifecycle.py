"""The stand-in as attendees get it: a background process started, reused and stopped by the launcher."""

from __future__ import annotations

import dataclasses

import ollama

from helpers.config import read_settings
from helpers.offline.launcher import ensure_stand_in, is_stand_in, log_file, pid_file, stop_stand_in
from tests.conftest import free_port, needs_offline


@needs_offline
def test_start_reuse_stop(tmp_path):
    settings = dataclasses.replace(read_settings(), state_dir=tmp_path, stand_in_port=free_port())
    url, started = ensure_stand_in(settings)
    try:
        assert started and is_stand_in(url)
        assert pid_file(settings).exists() and "serving" in log_file(settings).read_text()
        again, started_again = ensure_stand_in(settings)  # a second notebook reuses it
        assert again == url and not started_again
        assert ollama.Client(host=url).embed(model="all-minilm", input="x").embeddings
    finally:
        assert stop_stand_in(settings)
    assert not is_stand_in(url) and not pid_file(settings).exists()
    assert "stopped" in log_file(settings).read_text()
    assert not stop_stand_in(settings)  # stopping twice is harmless
