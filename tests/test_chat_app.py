"""helpers.chat_app: the Send and New chat buttons, clicked from code, against the real stand-in and embedded Qdrant."""

from __future__ import annotations

import html

import pytest
from qdrant_client import QdrantClient

from helpers.chat_app import ChatApp
from helpers.chunking import chunk_documents
from helpers.config import EMBED_MODEL, STAND_IN_CHAT_MODEL, read_settings
from helpers.corpus import load_documents
from helpers.history import HistoryStore
from helpers.index import index_chunks
from helpers.metrics import MetricsLog
from helpers.setup import Config

DOCS = {"emergency-response-plan", "it-and-connectivity", "quiet-hours"}  # a few documents keep the index fast
QUESTION = "What is the station's search and rescue team called?"
FOLLOW_UP = "Who leads it?"


@pytest.fixture(scope="module")
def index(client):
    """Embedded Qdrant holding the chunks of a few handbook documents."""
    qdrant = QdrantClient(":memory:")
    docs = [d for d in load_documents()[0] if d.id in DOCS]
    index_chunks(qdrant, client, "chat_test", chunk_documents(docs), EMBED_MODEL)
    return qdrant


@pytest.fixture
def app(client, stand_in, index, tmp_path):
    cfg = Config(backend="stand-in", ollama_host=stand_in[0], chat_model=STAND_IN_CHAT_MODEL, embed_model=EMBED_MODEL,
                 embed_dim=384, qdrant_url=None, fast=True, settings=read_settings())
    app = ChatApp(client, index, cfg, "chat_test", HistoryStore(tmp_path / "chat.sqlite"), MetricsLog(), k=3,
                  options={"num_predict": 30})
    yield app
    app.history.close()


def send(app: ChatApp, text: str) -> None:
    """What a user does: type into the box, press Send."""
    app.input.value = text
    app.send_button.click()
    assert app.last_error is None, f"the send callback failed: {app.last_error!r}"


def test_send_answers_and_stores_both_turns(app):
    send(app, QUESTION)
    stored = app.history.messages(app.chat_id)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[0]["content"] == QUESTION and stored[1]["content"].strip()
    assert app.input.value == "" and not app.send_button.disabled
    assert len(app.last_hits) == 3 and {h.doc_id for h in app.last_hits} <= DOCS
    assert all(h.chunk_id in app.sources.value for h in app.last_hits), "the sources panel lists every retrieved chunk"
    assert html.escape(QUESTION) in app.transcript.value and app.answer_box.value == ""
    stages = [r.stage for r in app.metrics.records]
    assert stages == ["retrieve", "generate"], stages
    generate = app.metrics.records[-1]
    assert generate.prompt_tokens > 0 and 0 < generate.completion_tokens <= 30


def test_follow_up_is_rewritten_and_keeps_the_conversation(app):
    send(app, QUESTION)
    send(app, FOLLOW_UP)
    stored = app.history.messages(app.chat_id)
    assert [m["role"] for m in stored] == ["user", "assistant"] * 2 and stored[2]["content"] == FOLLOW_UP
    assert [r.stage for r in app.metrics.records] == ["retrieve", "generate", "rewrite", "retrieve", "generate"]
    assert app.last_query.strip(), "the follow-up was searched with a non-empty query"
    assert len({r.request_id for r in app.metrics.records}) == 2, "one request id per turn"


def test_new_chat_starts_a_fresh_chat_id(app):
    send(app, QUESTION)
    old = app.chat_id
    app.new_button.click()
    assert app.chat_id != old
    assert app.history.messages(app.chat_id) == [] and len(app.history.messages(old)) == 2
    assert app.transcript.value == "" and app.sources.value == "" and app.last_hits == []
    send(app, QUESTION)  # the new chat does not see the old one: no rewrite step
    assert [r.stage for r in app.metrics.records][-2:] == ["retrieve", "generate"]
    assert set(app.history.chat_ids()) == {old, app.chat_id}


def test_an_empty_question_does_nothing(app):
    send(app, "   ")
    assert app.history.messages(app.chat_id) == [] and app.metrics.records == []
