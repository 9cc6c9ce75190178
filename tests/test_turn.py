"""helpers/turn.py: the notebook's ChatApp and the served app run ONE RAG turn.

Both are driven with the same history and follow-up against the real stand-in behind a recording proxy; the model
must receive identical messages and options, with the user's own words as the question (not the rewrite, which is
for retrieval only, nor the earlier answer). Plus pure-function tests of the turn's pieces.
"""

from __future__ import annotations

import httpx
import ollama
import pytest

from app.service import create_app
from helpers.chat_app import ChatApp
from helpers.corpus import collection_name
from helpers.history import HistoryStore, context_query, refers_back
from helpers.metrics import MetricsLog
from helpers.rag import Hit
from helpers.turn import OPTIONS, RagTurn, cited_sources, clean_answer, generation_options
from infra.background import BackgroundServer
from tests.support.recording import RecordingProxy
from tests.support.served import ask, stand_in_config

QUESTION = "What is the station's search and rescue team called?"
EARLIER = "The station's search and rescue team is the Field Safety Officer, Dr. Maren Ostvold."  # a wrong answer
FOLLOW_UP = "Who leads it?"
SHORT = {"num_predict": 16}  # the checks are on what the model receives, not on what it writes


@pytest.mark.slow
@pytest.mark.timeout(2400)  # the handbook indexed once, then two turns: over 15 minutes on a busy shared machine
def test_chat_app_and_service_send_the_model_identical_messages_with_the_users_words(stand_in, served_qdrant, tmp_path):
    with RecordingProxy(stand_in[0]) as proxy:
        cfg = stand_in_config(proxy.url)
        qdrant = served_qdrant
        notebook_history, served_history = HistoryStore(tmp_path / "nb.sqlite"), HistoryStore(tmp_path / "app.sqlite")
        app = ChatApp(
            ollama.Client(host=proxy.url),
            qdrant,
            collection_name(embed_model=cfg.embed_model),
            cfg=cfg,
            history=notebook_history,
            k=2,
            options=SHORT,
        )
        app.chat_id = "same-chat"
        for store in (notebook_history, served_history):
            store.add_turn("same-chat", QUESTION, EARLIER)
        app.ask(FOLLOW_UP)
        service = create_app(cfg, qdrant=qdrant, history=served_history, options=SHORT, guardrails=False)
        service.state.service.k = 2  # a shorter prompt: quicker on a shared machine; the same in both
        with BackgroundServer(service) as server, httpx.Client(base_url=server.url, timeout=600) as http:
            events = ask(http, "same-chat", FOLLOW_UP)
        notebook, served = proxy.answers()
    assert [e for e, _ in events][-2:] == ["sources", "done"]
    query = dict(events)["sources"]["query"]
    assert query == app.last_query, "both searched with the same standalone query"
    assert served["messages"] == notebook["messages"], "the model received different messages"
    assert served["options"] == notebook["options"] == generation_options(SHORT)
    question = notebook["messages"][-1]["content"]
    assert f"Question: {FOLLOW_UP}\n" in question, "the prompt carries the user's own words"
    assert EARLIER not in question and QUESTION not in question, "the earlier turn is history, not the question"
    if query != FOLLOW_UP:
        assert f"Question: {query}" not in question, "the rewrite is for retrieval only"
    assert notebook["messages"][1:3] == [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": EARLIER},
    ], "the earlier turn goes in as history"
    served_history.close()
    notebook_history.close()


def test_a_new_topic_is_not_searched_with_the_previous_turns_words():
    history = [
        {"role": "user", "content": "When are the quiet hours?"},
        {"role": "assistant", "content": "Quiet hours are 22:30-06:30 [1]."},
    ]
    assert not refers_back("And what about the emergency plan?")
    assert context_query("And what about the emergency plan?", history=history) == "And what about the emergency plan?"
    assert refers_back("Who leads it?") and refers_back("And then?")
    follow_up = context_query("Do they apply on Sundays?", history=history)
    assert follow_up.startswith("Do they apply on Sundays?") and "quiet hours" in follow_up


def test_one_options_one_cleaning_one_citation_marking():
    assert OPTIONS["stop"] == ["\nQuestion:"] and generation_options({"num_predict": 5})["stop"] == OPTIONS["stop"]
    assert generation_options({"num_predict": 5})["num_predict"] == 5 and OPTIONS["num_predict"] == 120
    assert clean_answer(" Team Fulmar [1].\nQuestion: Who leads it?") == "Team Fulmar [1]."
    hits = [Hit(f"d{n}#0", f"d{n}", f"D{n}", "text", 0.5, {}) for n in (1, 2)]
    assert [s["cited"] for s in cited_sources(hits, "So [2].")] == [False, True]
    turn = RagTurn(None, None, "c", chat_model="m", embed_model="e")
    finished = turn.finish("It is so [2].\nQuestion: next?", hits)
    assert finished.text == "It is so [2]." and [s["n"] for s in finished.sources if s["cited"]] == [2]
    assert turn.prepare is not None and MetricsLog  # the presenters' shared entry points exist
