"""helpers.chat_app: Send, Enter, Stop and New chat driven from code, against the real stand-in and embedded Qdrant.

The browser test (tests/test_chat_app_browser.py) drives the same widget in a real JupyterLab.
"""

from __future__ import annotations

import html
import time

import pytest
from qdrant_client import QdrantClient

from helpers.chat_app import STOPPED, ChatApp, clean_answer, plain_text, sources_html, transcript_html
from helpers.chunking import chunk_documents
from helpers.config import EMBED_MODEL, STAND_IN_CHAT_MODEL, read_settings
from helpers.corpus import load_documents
from helpers.history import HistoryStore
from helpers.index import index_chunks
from helpers.metrics import MetricsLog
from helpers.rag import Hit
from helpers.setup import Config

DOCS = {"emergency-response-plan", "it-and-connectivity", "quiet-hours"}  # a few documents keep the index fast
QUESTION = "What is the station's search and rescue team called?"
FOLLOW_UP = "Who leads it?"


@pytest.fixture(scope="module")
def index(client):
    """Embedded Qdrant holding the chunks of a few handbook documents."""
    qdrant = QdrantClient(":memory:")
    docs = [d for d in load_documents()[0] if d.id in DOCS]
    index_chunks(client, qdrant, "chat_test", chunk_documents(docs), embed_model=EMBED_MODEL)
    return qdrant


@pytest.fixture
def app(client, stand_in, index, tmp_path):
    cfg = Config(
        backend="stand-in",
        ollama_host=stand_in[0],
        chat_model=STAND_IN_CHAT_MODEL,
        embed_model=EMBED_MODEL,
        embed_dim=384,
        qdrant_url=None,
        fast=True,
        settings=read_settings(),
    )
    app = ChatApp(
        client,
        index,
        "chat_test",
        cfg=cfg,
        history=HistoryStore(tmp_path / "chat.sqlite"),
        metrics=MetricsLog(),
        k=3,
        options={"num_predict": 30},
    )
    yield app
    app.history.close()


def send(app: ChatApp, text: str) -> None:
    """What a user does: type into the box, press Send; then wait for the background turn."""
    app.input.value = text
    app.send_button.click()
    app.wait(600)  # a shared CI machine can be slow
    assert not app.busy and app.last_error is None, f"the send callback failed: {app.last_error!r}"


@pytest.mark.slow
def test_send_answers_and_stores_both_turns(app):
    send(app, QUESTION)
    stored = app.history.messages(app.chat_id)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[0]["content"] == QUESTION and stored[1]["content"].strip()
    assert app.input.value == "" and not app.send_button.disabled
    assert len(app.last_hits) == 3 and {h.doc_id for h in app.last_hits} <= DOCS
    assert all(h.chunk_id in app.sources.value for h in app.last_hits), "the sources panel lists every retrieved chunk"
    assert html.escape(QUESTION) in app.transcript.value and "▍" not in app.transcript.value
    stages = [r.stage for r in app.metrics.records]
    assert stages == ["retrieve", "generate"], stages
    generate = app.metrics.records[-1]
    assert generate.prompt_tokens > 0 and 0 < generate.completion_tokens <= 30


@pytest.mark.slow
def test_follow_up_is_rewritten_and_keeps_the_conversation(app):
    send(app, QUESTION)
    send(app, FOLLOW_UP)
    stored = app.history.messages(app.chat_id)
    assert [m["role"] for m in stored] == ["user", "assistant"] * 2 and stored[2]["content"] == FOLLOW_UP
    assert [r.stage for r in app.metrics.records] == ["retrieve", "generate", "rewrite", "retrieve", "generate"]
    assert app.last_query.strip(), "the follow-up was searched with a non-empty query"
    assert len({r.request_id for r in app.metrics.records}) == 2, "one request id per turn"
    rewrite = app.metrics.records[2]
    assert rewrite.prompt_tokens > 0 and rewrite.completion_tokens > 0, "the rewrite's tokens are counted"
    assert f"rewrite {rewrite.prompt_tokens + rewrite.completion_tokens}" in app.status.value
    retrieve, generate = app.metrics.records[3:5]
    waited = rewrite.duration_s + retrieve.duration_s  # the first token counts from the question, not the model call
    assert generate.ttft_s is not None and generate.ttft_s >= waited, (generate.ttft_s, waited)
    assert f"first token after {generate.ttft_s:.1f} s" in app.status.value


@pytest.mark.slow
def test_the_first_typed_question_starts_a_new_chat_after_code_left_one(app):
    app.ask(QUESTION)  # what Run All leaves behind
    left_behind = app.chat_id
    send(app, "What is the emergency plan?")  # the learner's first typed question
    assert app.chat_id != left_behind, "a new conversation"
    assert [m["content"] for m in app.history.messages(app.chat_id) if m["role"] == "user"] == [
        "What is the emergency plan?"
    ]
    assert len(app.history.messages(left_behind)) == 2, "the chat left behind stays in the store"
    assert [r.stage for r in app.metrics.records][-2:] == ["retrieve", "generate"], "no rewrite: a first question"


@pytest.mark.slow
def test_the_prompt_carries_the_users_question_not_the_rewrite(app, monkeypatch):
    send(app, QUESTION)
    sent = []
    real_chat = app.client.chat

    def spy(**kwargs):  # the real call, recorded: which messages reached the model
        sent.append(kwargs)
        return real_chat(**kwargs)

    monkeypatch.setattr(app.client, "chat", spy)
    send(app, FOLLOW_UP)
    generate = [c for c in sent if c.get("stream")][-1]
    assert generate["messages"][-1]["content"].rstrip().endswith(f"Question: {FOLLOW_UP}\nAnswer with citations:")
    assert app.last_query != FOLLOW_UP, "retrieval used a standalone query"


@pytest.mark.slow
def test_enter_sends_and_a_newline_elsewhere_does_not(app):
    app.input.value = "What is the"
    app.input.value = "What is the\nstation's search and rescue team called?"  # a newline inside: no send
    assert not app.busy and app.history.messages(app.chat_id) == []
    app.input.value += "\n"  # Enter at the end
    app.wait(120)
    assert app.last_error is None and app.input.value == ""
    assert [m["role"] for m in app.history.messages(app.chat_id)] == ["user", "assistant"]


@pytest.mark.slow
def test_stop_ends_the_answer_early_and_keeps_the_turn(app):
    app.options["num_predict"] = 400
    app.input.value = "Describe everything the handbook says about the emergency response plan."
    app.send_button.click()
    deadline = time.monotonic() + 120
    while "▍" not in app.transcript.value and time.monotonic() < deadline:  # wait for the first tokens
        time.sleep(0.02)
    assert app.busy and not app.stop_button.disabled and app.send_button.disabled
    app.stop_button.click()
    app.wait(30)
    assert not app.busy and app.last_error is None
    record = app.metrics.records[-1]
    assert record.stopped and 0 < record.completion_tokens < 400
    stored = app.history.messages(app.chat_id)
    assert stored[-1]["content"].endswith(STOPPED.strip()) and "stopped by you" in app.status.value
    assert app.stop_button.disabled and not app.send_button.disabled


@pytest.mark.slow
def test_new_chat_starts_a_fresh_chat_id(app):
    send(app, QUESTION)
    old = app.chat_id
    app.new_button.click()
    assert app.chat_id != old
    assert app.history.messages(app.chat_id) == [] and len(app.history.messages(old)) == 2
    assert "No messages yet" in app.transcript.value and app.sources.value == "" and app.last_hits == []
    send(app, QUESTION)  # the new chat does not see the old one: no rewrite step
    assert [r.stage for r in app.metrics.records][-2:] == ["retrieve", "generate"]
    assert set(app.history.chat_ids()) == {old, app.chat_id}


@pytest.mark.slow
def test_an_empty_question_does_nothing(app):
    send(app, "   ")
    assert app.history.messages(app.chat_id) == [] and app.metrics.records == []


@pytest.mark.slow
def test_an_error_is_shown_in_the_status_line(app):
    app.collection = "no_such_collection"
    app.input.value = QUESTION
    app.send_button.click()
    app.wait(60)
    assert app.last_error is not None and "got no answer" in app.status.value and not app.send_button.disabled


def test_plain_text_strips_markdown():
    text = plain_text("## 3. Alarms\n| Signal | Meaning |\n|---|---|\n| one bell | fire |\n- [ ] FS-101 **done**")
    assert text == "3. Alarms Signal · Meaning one bell · fire FS-101 done"
    assert plain_text("word " * 100, limit=20).endswith(" …") and len(plain_text("word " * 100, limit=20)) <= 22


def test_sources_mark_the_cited_ones_and_nothing_shows_without_hits():
    hits = [Hit(f"doc-{n}#0", f"doc-{n}", f"Doc {n}", "## Heading\ntext", 0.5, {}) for n in (1, 2)]
    out = sources_html(hits, "It is so [2].")
    assert out.count("cited</span>") == 1 and out.index("cited</span>") > out.index("[2] Doc 2")
    assert "##" not in out and sources_html([], "x") == ""


def test_transcript_escapes_and_shows_the_turn_in_progress():
    out = transcript_html([{"role": "user", "content": "Is <b>this</b> bold?"}], ("Next?", "Part", "writing ..."))
    assert "&lt;b&gt;this&lt;/b&gt;" in out and "<b>this</b>" not in out
    assert "Part▍" in out and "writing ..." in out and "column-reverse" in out


def test_clean_answer_drops_an_echoed_question():
    assert clean_answer(" Team Fulmar [1].\nQuestion: Who leads it?") == "Team Fulmar [1]."
