"""Pytest session hooks: every notebook in a run shares one stand-in, stopped at the end if we started it.

It is started once collection is done, and only when the run selected a slow test or a notebook
(tests/conftest.py marks them): `pytest tests -m "not slow"` (make test-fast) starts no stand-in.
"""

from __future__ import annotations

import pytest

from helpers.config import probe_ollama, read_settings

_started_here = False


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start (or reuse) the offline stand-in when no Ollama answers or WORKSHOP_OFFLINE=1."""
    global _started_here
    if session.config.option.collectonly or not any(item.get_closest_marker("slow") for item in session.items):
        return
    settings = read_settings()
    if settings.force_offline or probe_ollama(settings.ollama_host) is None:
        from infra.standin.launcher import ensure_stand_in, missing_packages

        if not missing_packages():
            _, _started_here = ensure_stand_in()  # the stand-in reads its own settings from the same environment


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the stand-in this session started, so no server outlives the test run."""
    if _started_here:
        from infra.standin.launcher import stop_stand_in

        stop_stand_in()
