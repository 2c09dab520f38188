"""Hybrid fusion with exactly Weaviate's semantics (so the embedded backend ranks like Weaviate).

Checked against Weaviate v1.39.0's explainScore output (see tests/search/test_fusion.py and the parity
test):
- relativeScoreFusion: each leg's candidate scores are min-max normalised to [0, 1] over that leg's
  candidates (a leg whose candidates all score the same gives them 1), multiplied by the leg's weight
  (keyword: 1 - alpha, vector: alpha), and summed over the legs that retrieved the hit.
- rankedFusion: each leg adds weight / (rank + 60) for a 0-based rank (the top hit of a leg adds w / 60).
- The vector leg's score is 1 - cosine distance (= cosine similarity); the keyword leg's is BM25.
- A leg with weight 0 is not run at all (alpha = 0: keyword only; alpha = 1: vector only).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from services.search.domain import Fusion

RANK_CONSTANT = 60


@dataclass(slots=True)
class Fused:
    key: Hashable
    fused: float = 0.0
    keyword: float = 0.0
    vector: float = 0.0
    bm25: float = 0.0
    cosine: float | None = None


def _normalise(scores: Sequence[float]) -> list[float]:
    # A non-finite score (never produced from validated input, but a ranking must not depend on that)
    # normalises to 0, the leg's worst, and is left out of the leg's min and max.
    finite = [s for s in scores if math.isfinite(s)]
    if not finite:
        return [0.0] * len(scores)
    hi, lo = max(finite), min(finite)
    if hi == lo:
        return [1.0 if math.isfinite(s) else 0.0 for s in scores]
    span = hi - lo
    return [(s - lo) / span if math.isfinite(s) else 0.0 for s in scores]


def _rank_key(f: Fused) -> float:
    # NaN compares false with everything, so sorting on it puts it anywhere (first, for reverse=True
    # with the NaN leading): it ranks last instead.
    return f.fused if not math.isnan(f.fused) else -math.inf


def fuse(
    keyword: Sequence[tuple[Hashable, float]],
    vector: Sequence[tuple[Hashable, float]],
    alpha: float,
    fusion: Fusion,
) -> list[Fused]:
    """Fuse the legs' candidates (each sorted best first) into one list, best first.

    Ties keep the order in which hits were first seen (keyword leg first), so the result is
    deterministic for a given input.
    """
    out: dict[Hashable, Fused] = {}
    legs = ((keyword, 1.0 - alpha, "keyword"), (vector, alpha, "vector"))
    for cands, weight, leg in legs:
        if not cands or weight <= 0.0:
            continue
        if not all(math.isfinite(s) for _, s in cands):
            # A candidate without a finite score goes behind the others (ranked fusion trusts the
            # leg's order; relative fusion normalises it to 0 in _normalise).
            cands = [c for c in cands if math.isfinite(c[1])] + [c for c in cands if not math.isfinite(c[1])]
        if fusion is Fusion.RELATIVE_SCORE:
            parts = [n * weight for n in _normalise([s for _, s in cands])]
        else:
            parts = [weight / (rank + RANK_CONSTANT) for rank in range(len(cands))]
        for (key, raw), part in zip(cands, parts, strict=True):
            f = out.get(key)
            if f is None:
                f = out[key] = Fused(key)
            if leg == "keyword":
                f.keyword = part
                f.bm25 = raw
            else:
                f.vector = part
                f.cosine = raw
            f.fused = f.keyword + f.vector
    fused = list(out.values())
    fused.sort(key=_rank_key, reverse=True)  # stable: ties keep first-seen order
    return fused
