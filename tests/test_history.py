"""helpers.history: the SQLite store, the history bounds, and follow-up rewriting (real models, embedded Qdrant)."""

from __future__ import annotations

import collections
import types

import pytest

from helpers.chunking import count_tokens
from helpers.corpus import load_questions
from helpers.history import (
    HistoryStore,
    content_words,
    context_query,
    last_n,
    llm_rewrite,
    new_chat_id,
    rewrite_problem,
    rewrite_query,
    within_token_budget,
)
from helpers.rag import retrieve

CHAT = "smollm2:135m"
EMBED = "all-minilm"
SYSTEM = {"role": "system", "content": "You answer questions about the station."}


def chat(n: int) -> list[dict]:
    """A system message, then n alternating user/assistant messages numbered 0..n-1."""
    return [SYSTEM] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " + "word " * i} for i in range(n)
    ]


def test_rows_persist_across_close_and_reopen(tmp_path):
    path = tmp_path / "state" / "history.sqlite"
    store = HistoryStore(path)
    store.add("c1", "user", "Which course do I need to drive a snowmobile?")
    store.add("c1", "assistant", "VH-120.")
    store.close()
    again = HistoryStore(path)
    assert again.messages("c1") == [
        {"role": "user", "content": "Which course do I need to drive a snowmobile?"},
        {"role": "assistant", "content": "VH-120."},
    ]
    again.close()


def test_messages_in_order_and_chats_separate(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite")
    a, b = new_chat_id(), new_chat_id()
    assert a != b
    for i in range(5):
        store.add(a, "user" if i % 2 == 0 else "assistant", f"a{i}")
        store.add(b, "user", f"b{i}")
    assert [m["content"] for m in store.messages(a)] == ["a0", "a1", "a2", "a3", "a4"]
    assert [m["role"] for m in store.messages(a)] == ["user", "assistant", "user", "assistant", "user"]
    assert [m["content"] for m in store.messages(b)] == ["b0", "b1", "b2", "b3", "b4"]
    assert store.chat_ids() == [b, a] and store.messages("nobody") == []
    store.delete(a)
    assert store.messages(a) == [] and len(store.messages(b)) == 5
    with pytest.raises(Exception, match="CHECK"):
        store.add(b, "tool", "roles are checked by the table")
    store.close()


def test_last_n_keeps_system_and_the_newest():
    msgs = chat(9)
    kept = last_n(msgs, n=4)
    assert kept[0] == SYSTEM and kept[1:] == msgs[-4:]
    assert last_n(msgs, n=0) == [SYSTEM] and last_n(msgs, n=100) == msgs


def test_within_token_budget_holds_and_keeps_system():
    msgs = chat(12)
    for budget in (0, 20, 60, 150, 10_000):
        kept = within_token_budget(msgs, budget)
        assert kept[0] == SYSTEM
        rest = kept[1:]
        assert rest == (msgs[-len(rest) :] if rest else [])  # the newest, in order, without gaps
        left = max(0, budget - count_tokens(SYSTEM["content"]))  # the system message is kept even over budget
        assert sum(count_tokens(m["content"]) for m in rest) <= left
    assert within_token_budget(msgs, 10_000) == msgs


def test_rewrite_problem_accepts_a_resolved_question_and_rejects_the_rest():
    history = [
        {"role": "user", "content": "Which course do I need before I can drive a snowmobile?"},
        {"role": "assistant", "content": "VH-120, the vehicle and snowmobile driving course."},
    ]
    follow_up = "How long does that take?"
    assert rewrite_problem("How long does the VH-120 course take?", follow_up, history) is None
    assert rewrite_problem("VH-120 takes one day.", follow_up, history) == "not a single question"
    assert rewrite_problem("How long does that take?", follow_up, history) == "unchanged"
    assert rewrite_problem(history[0]["content"], follow_up, history) == "copies an earlier question"
    assert rewrite_problem("Which snowmobile is the fastest?", follow_up, history) == "lost what the follow-up asks"
    assert rewrite_problem("How long does the trip take?", follow_up, history) == "adds nothing from the conversation"
    assert content_words("Who approves it?") == content_words("who APPROVE it")


def test_context_query_joins_the_last_exchange_and_the_follow_up():
    history = [
        {"role": "user", "content": "Q1?"},
        {"role": "assistant", "content": "A1."},
        {"role": "user", "content": "Q2?"},
        {"role": "assistant", "content": " ".join(["w"] * 100)},
    ]
    assert context_query("And then?", history=history) == "And then? Q2? " + " ".join(["w"] * 60)
    assert context_query("And then?", history=history, max_words=0) == "And then? Q2?"
    assert context_query("Hello?", history=[]) == "Hello?"


def test_rewrite_query_without_history_is_the_question(client):
    assert rewrite_query(client, "And who approves it?", history=[], model=CHAT) == "And who approves it?"
    assert rewrite_query(client, "And who approves it?", history=[SYSTEM], model=CHAT) == "And who approves it?"


def test_rewrite_query_uses_a_good_rewrite_and_falls_back_otherwise(client):
    history = [
        {"role": "user", "content": "On which days is the sauna open?"},
        {"role": "assistant", "content": "Tuesday, Thursday and Saturday, 19:00-22:00."},
    ]
    question = "How many people does it hold?"
    rewrite = llm_rewrite(
        client, question, history=history, model=CHAT
    )  # decoding is repeatable: rewrite_query sees the same
    expected = (
        rewrite if rewrite_problem(rewrite, question, history) is None else context_query(question, history=history)
    )
    out = rewrite_query(client, question, history=history, model=CHAT)
    assert out == expected
    assert "sauna" in out.lower(), "the query does not say what 'it' is"


class ScriptedClient:
    """A fake client whose model answers a fixed text: the only way to get a bad rewrite on demand (fast tier)."""

    def __init__(self, answer: str) -> None:
        self.answer = answer

    def chat(self, **kwargs: object) -> object:
        return types.SimpleNamespace(message=types.SimpleNamespace(content=self.answer))


@pytest.mark.parametrize(
    "answer, used",
    [
        ("How many people does the sauna hold?", True),
        ("The sauna holds eight people.", False),
        ("", False),
        ("How many people does it hold?", False),
    ],
)
def test_rewrite_query_falls_back_to_the_context_query_for_a_bad_rewrite(answer, used):
    history = [
        {"role": "user", "content": "On which days is the sauna open?"},
        {"role": "assistant", "content": "Tuesday, Thursday and Saturday, 19:00-22:00."},
    ]
    question = "How many people does it hold?"
    out = rewrite_query(ScriptedClient(answer), question, history=history, model=CHAT)
    assert out == (answer if used else context_query(question, history=history))


def follow_ups() -> list[tuple[dict, list[dict]]]:
    """Every multi-turn question of turn >= 2, with the earlier turns (reference answers as the assistant's)."""
    conversations = collections.defaultdict(list)
    for q in load_questions():
        if q["kind"] == "multi_turn":
            conversations[q["conversation"]].append(q)
    items = []
    for turns in conversations.values():
        turns.sort(key=lambda q: q["turn"])
        for i in range(1, len(turns)):
            history = [
                m
                for t in turns[:i]
                for m in ({"role": "user", "content": t["question"]}, {"role": "assistant", "content": t["answer"]})
            ]
            items.append((turns[i], history))
    return items


@pytest.mark.slow
def test_rewritten_follow_ups_retrieve_the_gold_document(client, handbook_index):
    qdrant, _, collection = handbook_index

    def hit(query: str, gold: list[str]) -> bool:
        return any(h.doc_id in gold for h in retrieve(client, qdrant, collection, query, embed_model=EMBED, k=5))

    raw, rewritten, accepted = collections.Counter(), collections.Counter(), collections.Counter()
    for q, history in follow_ups():
        group = "elliptical" if q["conversation"].startswith("conv-d") else "older"
        raw[group] += hit(q["question"], q["doc_ids"])
        rewrite = llm_rewrite(
            client, q["question"], history=history, model=CHAT
        )  # what rewrite_query does, step by step
        usable = rewrite_problem(rewrite, q["question"], history) is None
        accepted[group] += usable
        rewritten[group] += hit(rewrite if usable else context_query(q["question"], history=history), q["doc_ids"])
    n = collections.Counter(
        ("elliptical" if q["conversation"].startswith("conv-d") else "older") for q, _ in follow_ups()
    )
    print(f"hit@5 raw {dict(raw)} rewritten {dict(rewritten)} of {dict(n)}; model rewrites used {dict(accepted)}")
    assert n["elliptical"] >= 8
    assert sum(rewritten.values()) >= 0.7 * sum(n.values())  # measured 19 of 22 with the offline model
    assert rewritten["elliptical"] >= 0.7 * n["elliptical"]  # measured 9 of 10
    assert raw["elliptical"] <= 0.5 * n["elliptical"]  # measured 3 of 10: the follow-ups need their history
