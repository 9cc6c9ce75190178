"""helpers.evaluation: each metric on hand-made rankings whose values are worked out by hand."""

from __future__ import annotations

import math

import pytest

from helpers.evaluation import (
    contains_answer,
    dedupe,
    hit_rate_at_k,
    is_refusal,
    ndcg_at_k,
    numbers,
    recall_at_k,
    reciprocal_rank,
    retrieval_scores,
    short_answer,
)

AT_1 = ["gold", "x", "y", "z"]
AT_3 = ["x", "y", "gold", "z"]
ABSENT = ["x", "y", "z"]
GOLD = {"gold"}


def test_dedupe_keeps_the_best_rank_of_each_id():
    assert dedupe(["a", "b", "a", "c", "b"]) == ["a", "b", "c"]
    assert dedupe([]) == []


@pytest.mark.parametrize(
    ("ranked", "k", "expected"),
    [(AT_1, 1, 1.0), (AT_1, 5, 1.0), (AT_3, 1, 0.0), (AT_3, 2, 0.0), (AT_3, 3, 1.0), (ABSENT, 10, 0.0)],
)
def test_hit_rate_at_k(ranked, k, expected):
    assert hit_rate_at_k(ranked, GOLD, k=k) == expected


def test_reciprocal_rank_at_1_3_and_absent():
    assert reciprocal_rank(AT_1, GOLD) == 1.0
    assert reciprocal_rank(AT_3, GOLD) == pytest.approx(1 / 3)
    assert reciprocal_rank(ABSENT, GOLD) == 0.0
    assert reciprocal_rank(AT_3, GOLD, k=2) == 0.0  # outside the cut-off


def test_duplicates_are_counted_once():
    ranked = ["x", "x", "x", "gold"]  # three chunks of one document, then the gold one
    assert hit_rate_at_k(ranked, GOLD, k=2) == 1.0  # 'gold' is the 2nd distinct document
    assert reciprocal_rank(ranked, GOLD) == 0.5
    assert ndcg_at_k(["gold", "gold", "x"], {"gold": 1.0}) == 1.0  # a repeat earns no second gain
    assert recall_at_k(["a", "a", "a", "b"], {"a", "b"}, k=2) == 1.0


def test_recall_at_k_is_the_share_of_gold_found():
    assert recall_at_k(["a", "x", "b"], {"a", "b"}, k=2) == 0.5
    assert recall_at_k(["a", "x", "b"], {"a", "b"}, k=3) == 1.0
    assert recall_at_k(["a"], set(), k=5) == 0.0


def test_ndcg_binary():
    assert ndcg_at_k(AT_1, {"gold": 1.0}) == 1.0
    assert ndcg_at_k(AT_3, {"gold": 1.0}) == pytest.approx(1 / math.log2(4))  # = 0.5
    assert ndcg_at_k(ABSENT, {"gold": 1.0}) == 0.0
    assert ndcg_at_k(AT_3, {"gold": 1.0}, k=2) == 0.0


def test_ndcg_graded_gains_by_hand():
    # DCG = 1/log2(2) + 0/log2(3) + 2/log2(4) = 1 + 0 + 1 = 2
    # IDCG (gains sorted 2, 1) = 2/log2(2) + 1/log2(3) = 2 + 0.63093 = 2.63093
    assert ndcg_at_k(["b", "x", "a"], {"a": 2.0, "b": 1.0}) == pytest.approx(2 / 2.630930, abs=1e-6)
    assert ndcg_at_k(["a", "b"], {"a": 2.0, "b": 1.0}) == 1.0
    assert ndcg_at_k(["b", "a"], {"a": 2.0, "b": 1.0}) < 1.0
    assert ndcg_at_k(["a"], {}) == 0.0


def test_retrieval_scores_row():
    row = retrieval_scores(AT_3, GOLD, ks=(1, 3))
    assert row == {"hit@1": 0.0, "hit@3": 1.0, "mrr": pytest.approx(1 / 3), "ndcg@10": pytest.approx(0.5)}


def test_short_answer_and_numbers():
    assert short_answer("240 litres.") == "240 litres"
    assert short_answer("PETREL only; diving also needs a plan.") == "PETREL only"
    assert short_answer("MR-150 (boat handling); the coxswain holds it.") == "MR-150"
    assert short_answer("Dr. Lotte Agerbeck (Vestmark University).") == "Dr. Lotte Agerbeck"
    assert numbers("3,120 kg at 08:00, 0.6 m") == {"3120", "08:00", "0.6"}


@pytest.mark.parametrize(
    ("answer", "gold", "expected"),
    [
        ("The tank holds 240 litres [1].", "240 litres.", True),
        ("It holds 2400 litres.", "240 litres.", False),  # numbers match whole, not as substrings
        ("The limit is 3120 kg.", "3,120 kg.", True),
        ("Breakfast is 07:00 to 08:30.", "07:00-08:30, Monday to Saturday.", True),
        ("Breakfast starts at 07:00.", "07:00-08:30, Monday to Saturday.", False),
        ("That is Team Fulmar.", "Team Fulmar.", True),
        ("The SAR team.", "Team Fulmar.", False),
    ],
)
def test_contains_answer(answer, gold, expected):
    assert contains_answer(answer, gold) is expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("The documents don't say.", True),
        ("The documents don\u2019t say.", True),
        ("The handbook does not say how much it costs.", True),
        ("It costs 40 credits.", False),
        ("", False),
    ],
)
def test_is_refusal(answer, expected):
    assert is_refusal(answer) is expected


def test_options_are_keyword_only():
    """One signature style (issue 21): the data positional, every option by name."""
    for call in (
        lambda: hit_rate_at_k(AT_1, GOLD, 1),
        lambda: recall_at_k(AT_1, GOLD, 1),
        lambda: reciprocal_rank(AT_1, GOLD, 1),
        lambda: ndcg_at_k(AT_1, {"gold": 1.0}, 1),
        lambda: retrieval_scores(AT_1, GOLD, (1,)),
    ):
        with pytest.raises(TypeError):
            call()
