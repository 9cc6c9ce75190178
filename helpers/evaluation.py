"""Retrieval metrics over ranked document ids. Taught in 09_evaluation.ipynb."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def dedupe(ranked: Sequence[str]) -> list[str]:
    """Ranked ids with repeats removed (several chunks of one document count once, at its best rank)."""
    seen: set[str] = set()
    return [x for x in ranked if not (x in seen or seen.add(x))]


def hit_rate_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """1.0 if any relevant id is in the top k, else 0.0."""
    return float(any(x in relevant for x in dedupe(ranked)[:k]))


def reciprocal_rank(ranked: Sequence[str], relevant: set[str], k: int | None = None) -> float:
    """1 / rank of the first relevant id (0.0 if none in the top k)."""
    for rank, x in enumerate(dedupe(ranked)[:k], 1):
        if x in relevant:
            return 1.0 / rank
    return 0.0


def recall_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Share of the relevant ids found in the top k."""
    return len(set(dedupe(ranked)[:k]) & relevant) / len(relevant) if relevant else 0.0


def ndcg_at_k(ranked: Sequence[str], gains: Mapping[str, float], k: int = 10) -> float:
    """Normalised discounted cumulative gain at k; gains maps relevant ids to their grade (1 for binary)."""
    dcg = sum(gains.get(x, 0.0) / math.log2(rank + 1) for rank, x in enumerate(dedupe(ranked)[:k], 1))
    ideal = sorted(gains.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, 1))
    return dcg / idcg if idcg > 0 else 0.0
