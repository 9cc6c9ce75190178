"""The chat widget in a real JupyterLab, driven by a real headless Chromium (Playwright), as a learner uses it.

JupyterLab is started on 127.0.0.1 with a token by the fixture and stopped by it; the notebook's kernel uses the
session's stand-in (the root conftest.py starts it). Screenshots go to build/test-artifacts/.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.support.lab import running_lab

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "build" / "test-artifacts"
DOCS = {"emergency-response-plan", "it-and-connectivity", "quiet-hours"}
BUILD_APP = f"""import ollama
from IPython.display import display
from qdrant_client import QdrantClient

from helpers.chat_app import ChatApp
from helpers.chunking import chunk_documents
from helpers.corpus import load_documents
from helpers.history import HistoryStore
from helpers.index import index_chunks
from helpers.metrics import MetricsLog
from helpers.setup import setup

cfg = setup()
client = ollama.Client(host=cfg.ollama_host)
qdrant = QdrantClient(":memory:")
docs = [d for d in load_documents()[0] if d.id in {sorted(DOCS)!r}]
index_chunks(client, qdrant, "ui_test", chunk_documents(docs), embed_model=cfg.embed_model)
app = ChatApp(client, qdrant, "ui_test", cfg=cfg, history=HistoryStore("chat.sqlite"), metrics=MetricsLog(), k=3, options={{"num_predict": 160}})
display(app.widget)"""
STATES = ("thinking", "rewriting", "searching", "reading", "writing")


def notebook(cells: list[str]) -> dict:
    """A minimal nbformat-4 notebook of code cells on the python3 kernel."""
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [
            {"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None, "outputs": [], "source": src}
            for i, src in enumerate(cells)
        ],
    }


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a free loopback port, serving tmp_path, with the test's environment: (base URL, token)."""
    port, token = free_port(), secrets.token_hex(16)
    (tmp_path / "chat.ipynb").write_text(json.dumps(notebook([BUILD_APP])))
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws"),
    }
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={tmp_path}",
        "--ServerApp.port_retries=0",
    ]
    if os.getuid() == 0:
        cmd.append("--allow-root")
    log_path = tmp_path / "lab.log"
    with running_lab(cmd, cwd=tmp_path, env=env, port=port, token=token, log_path=log_path) as url:
        yield url, token


def state(page) -> dict:  # noqa: ANN001 - playwright's Page
    """What the learner sees: the last bubbles' text, the status, the sources and the transcript's scroll geometry."""
    return page.evaluate("""() => {
        const t = document.querySelector('.chat-transcript');
        const bubbles = [...document.querySelectorAll('.chat-transcript .chat-user, .chat-transcript .chat-assistant')];
        const last = bubbles[bubbles.length - 1];
        const tr = t.getBoundingClientRect(), lr = last ? last.getBoundingClientRect() : tr;
        const html = [...document.querySelectorAll('.widget-html')].map(e => e.innerText);
        return {transcript: t.innerText, last: last ? last.innerText : '', n: bubbles.length,
                scrollable: t.scrollHeight > t.clientHeight + 1, last_bottom: lr.bottom, box_bottom: tr.bottom,
                last_top: lr.top, box_top: tr.top,
                status: html.find(s => /searched for|stopping|got no answer|Still answering/.test(s)) || '',
                sources: document.querySelectorAll('.chat-source').length,
                sources_text: html.find(s => s.startsWith('Sources')) || ''};
    }""")


def wait_for(page, predicate, timeout: float, what: str) -> dict:  # noqa: ANN001
    """Poll the page's state until predicate(state) holds; fail with what was expected and what was seen."""
    deadline = time.monotonic() + timeout
    while True:
        seen = state(page)
        if predicate(seen):
            return seen
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; last state: {seen}")
        time.sleep(0.02)


def ask(page, text: str) -> float:  # noqa: ANN001
    """Type a question and press Enter; seconds until a thinking state shows in the assistant's bubble."""
    box = page.locator(".widget-textarea textarea")
    box.click()
    box.press_sequentially(text, delay=5)
    page.wait_for_timeout(300)  # let the last keystrokes sync before Enter
    start = time.monotonic()
    box.press("Enter")
    wait_for(
        page,
        lambda s: s["last"] and any(w in s["last"] for w in STATES) and text in s["transcript"],
        10,
        "a thinking state",
    )
    return time.monotonic() - start


def grows_while_streaming(page) -> tuple[int, int]:  # noqa: ANN001
    """Two samples of the streaming answer's length (the text before its cursor): the second is longer."""

    def streamed(s: dict) -> int:
        return len(s["last"].split("▍")[0]) if "▍" in s["last"] else -1

    first = streamed(wait_for(page, lambda s: streamed(s) > 0, 240, "the first tokens"))
    second = streamed(wait_for(page, lambda s: streamed(s) > first, 60, "more tokens while the cursor shows"))
    return first, second


def shot(page, name: str) -> None:  # noqa: ANN001
    """A screenshot of the page and one of the whole chat app, under build/test-artifacts/."""
    page.screenshot(path=ARTIFACTS / f"{name}.png")
    page.locator(".chat-app").screenshot(path=ARTIFACTS / f"{name}-app.png")


def in_view(s: dict) -> bool:
    """The newest bubble's bottom is inside the transcript box."""
    return s["box_top"] - 1 <= s["last_bottom"] <= s["box_bottom"] + 1


@pytest.mark.slow
def test_two_turns_and_a_stop_in_jupyterlab(lab, browser):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    url, token = lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    try:
        page.goto(f"{url}/lab/tree/chat.ipynb?token={token}")
        page.locator(".jp-Notebook").wait_for(timeout=60_000)
        select = page.get_by_role("button", name="Select", exact=True)
        try:  # JupyterLab may ask which kernel to start: the notebook's own, python3
            select.wait_for(timeout=15_000)
            select.click()
        except PlaywrightTimeout:
            pass
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_text("Run All Cells", exact=True).click()
        page.locator(".widget-textarea textarea").wait_for(timeout=300_000)
        page.screenshot(path=ARTIFACTS / "chat-0-ready.png")

        # turn 1: Enter sends, a state shows at once, the answer grows in its own bubble
        latency = ask(page, "Describe the emergency response plan of the station in detail.")
        before, after = grows_while_streaming(page)
        assert after > before, f"the answer did not grow while streaming ({before} -> {after} characters)"
        shot(page, "chat-1-streaming")
        done = wait_for(page, lambda s: "searched for" in s["status"] and "▍" not in s["last"], 240, "turn 1 done")
        assert done["sources"] == 3 and "cited ones marked" in done["sources_text"]
        assert "##" not in done["sources_text"] and "| " not in done["sources_text"], "sources are readable text"

        # turn 2, a follow-up: the previous turn's status and sources are gone at once, the newest turn is in view
        latency2 = ask(page, "Who leads it?")
        now = state(page)
        assert "cited ones marked" not in now["sources_text"] and "searched for" not in now["status"]
        done = wait_for(page, lambda s: "searched for" in s["status"] and "▍" not in s["last"], 240, "turn 2 done")
        assert done["n"] == 4 and done["scrollable"], "two turns overflow the box, which scrolls"
        assert in_view(done), f"the newest turn is scrolled into view: {done}"
        assert "rewritten follow-up" in done["status"] or "your question" in done["status"]
        shot(page, "chat-2-follow-up")

        # a stop: the answer ends early, the turn is kept and marked
        ask(page, "List every step of the fire alarm procedure, one by one, with all details.")
        grows_while_streaming(page)
        page.get_by_role("button", name="Stop").click()
        stopped = wait_for(page, lambda s: "stopped by you" in s["status"], 60, "the stop")
        assert stopped["last"].rstrip().endswith("(stopped)") and "▍" not in stopped["last"] and in_view(stopped)
        assert page.get_by_role("button", name="Send").is_enabled()
        shot(page, "chat-3-stopped")
        print(f"thinking state shown {latency * 1000:.0f} ms and {latency2 * 1000:.0f} ms after Enter")
        assert latency < 1.0 and latency2 < 1.0, "the thinking state shows at once (shared machine: under 1 s)"
    except BaseException:
        page.screenshot(path=ARTIFACTS / "chat-failure.png")
        raise
    finally:
        page.close()
