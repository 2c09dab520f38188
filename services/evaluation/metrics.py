"""Ranking metrics of one query (graded relevance), and their means over a family.

- recall@k: share of the relevant assets in the top k; hit@k: 1 when any is (the model card's R@k);
- precision@k: share of the top k that is relevant (k positions, even when fewer were returned);
- nDCG@10: sum of (2^grade - 1) / log2(rank + 1) over the top 10, over the ideal ordering's;
- MRR: 1 / rank of the first relevant result (0 when none is returned).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from services.evaluation.domain import QueryRun

CUTOFFS = (1, 5, 10)
NDCG_DEPTH = 10


def recall_at(ranked: Sequence[str], relevant: dict[str, int], k: int) -> float:
    return len(set(ranked[:k]) & relevant.keys()) / len(relevant)


def hit_at(ranked: Sequence[str], relevant: dict[str, int], k: int) -> float:
    return 1.0 if any(r in relevant for r in ranked[:k]) else 0.0


def precision_at(ranked: Sequence[str], relevant: dict[str, int], k: int) -> float:
    return sum(1 for r in ranked[:k] if r in relevant) / k


def ndcg_at(ranked: Sequence[str], relevant: dict[str, int], k: int = NDCG_DEPTH) -> float:
    gain = sum((2 ** relevant.get(r, 0) - 1) / math.log2(i + 2) for i, r in enumerate(ranked[:k]))
    ideal_grades = sorted(relevant.values(), reverse=True)[:k]
    ideal = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal_grades))
    return gain / ideal if ideal > 0 else 0.0


def reciprocal_rank(ranked: Sequence[str], relevant: dict[str, int]) -> float:
    return next((1.0 / (i + 1) for i, r in enumerate(ranked) if r in relevant), 0.0)


def query_metrics(ranked: Sequence[str], relevant: dict[str, int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in CUTOFFS:
        out[f"hit@{k}"] = hit_at(ranked, relevant, k)
        out[f"recall@{k}"] = recall_at(ranked, relevant, k)
        out[f"precision@{k}"] = precision_at(ranked, relevant, k)
    out[f"ndcg@{NDCG_DEPTH}"] = ndcg_at(ranked, relevant)
    out["mrr"] = reciprocal_rank(ranked, relevant)
    return out


def summarise(runs: Sequence[QueryRun], relevant: dict[str, dict[str, int]]) -> dict[str, float]:
    """Means of the per-query metrics (a failed query scores 0) and latency percentiles (ms)."""
    per_query = [query_metrics(r.ranked if not r.error else (), relevant[r.query_id]) for r in runs]
    out = {name: float(np.mean([m[name] for m in per_query])) for name in per_query[0]} if per_query else {}
    latencies = [r.latency_ms for r in runs if not r.error]
    if latencies:
        out["latency_p50_ms"] = float(np.percentile(latencies, 50))
        out["latency_p95_ms"] = float(np.percentile(latencies, 95))
    return out
