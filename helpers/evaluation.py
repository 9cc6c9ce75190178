"""Retrieval metrics over ranked document ids, and answer checks that need no judge model. Taught in 09_evaluation.ipynb."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from helpers.language import says_not_in_docs


def dedupe(ranked: Sequence[str]) -> list[str]:
    """Ranked ids with repeats removed (several chunks of one document count once, at its best rank)."""
    return list(dict.fromkeys(ranked))  # dicts keep insertion order: each id at its first (best) rank


def hit_rate_at_k(ranked: Sequence[str], relevant: set[str], *, k: int) -> float:
    """1.0 if any relevant id is in the top k, else 0.0."""
    return float(any(x in relevant for x in dedupe(ranked)[:k]))


def reciprocal_rank(ranked: Sequence[str], relevant: set[str], *, k: int | None = None) -> float:
    """1 / rank of the first relevant id (0.0 if none in the top k)."""
    for rank, x in enumerate(dedupe(ranked)[:k], 1):
        if x in relevant:
            return 1.0 / rank
    return 0.0


def recall_at_k(ranked: Sequence[str], relevant: set[str], *, k: int) -> float:
    """Share of the relevant ids found in the top k."""
    return len(set(dedupe(ranked)[:k]) & relevant) / len(relevant) if relevant else 0.0


def ndcg_at_k(ranked: Sequence[str], gains: Mapping[str, float], *, k: int = 10) -> float:
    """Normalised discounted cumulative gain at k; gains maps relevant ids to their grade (1 for binary)."""
    dcg = sum(gains.get(x, 0.0) / math.log2(rank + 1) for rank, x in enumerate(dedupe(ranked)[:k], 1))
    ideal = sorted(gains.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, 1))
    return dcg / idcg if idcg > 0 else 0.0


def retrieval_scores(
    ranked: Sequence[str], relevant: set[str], *, ks: Sequence[int] = (1, 3, 5, 10)
) -> dict[str, float]:
    """hit@k for each k, MRR (reciprocal rank at 10) and binary nDCG@10 of one ranking, as one table row."""
    row = {f"hit@{k}": hit_rate_at_k(ranked, relevant, k=k) for k in ks}
    row["mrr"] = reciprocal_rank(ranked, relevant, k=10)
    row["ndcg@10"] = ndcg_at_k(ranked, dict.fromkeys(relevant, 1.0), k=10)
    return row


THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")  # the comma of 3,120


def normalise(text: str) -> str:
    """Lowercase words and numbers only: '3,120 kg.' -> '3120 kg', 'MR-150' -> 'mr 150'."""
    text = THOUSANDS.sub("", text.lower().replace("\u2019", "'"))
    return " ".join(re.findall(r"\d+(?:[.:]\d+)?|[a-z]+(?:'[a-z]+)?", text))


def numbers(text: str) -> set[str]:
    """The numbers in a text, thousands separators removed: '3,120 kg at 08:00' -> {'3120', '08:00'}."""
    return set(re.findall(r"\d+(?:[.:]\d+)?", THOUSANDS.sub("", text)))


def short_answer(gold: str) -> str:
    """The head of a gold answer, before any '(...)', ';', ' - ' or second sentence."""
    return re.split(r"\s\(|;|\s-\s|(?<=\w{3})\.\s", gold, maxsplit=1)[0].strip(" .")


STOPWORDS = frozenset("a an and at by for from in is it of on or the to with".split())


def contains_answer(answer: str, gold: str) -> bool:
    """Does answer carry the gold short answer? All its numbers if it has any, else all its content words."""
    head = short_answer(gold)
    if numbers(head):
        return numbers(head) <= numbers(answer)
    return set(normalise(head).split()) - STOPWORDS <= set(normalise(answer).split())


def is_refusal(answer: str) -> bool:
    """Does the answer say the documents don't hold it ("don't say", "does not say"; Russian: "в документах нет")?"""
    return says_not_in_docs(answer)  # the patterns of every language: helpers/language.py
