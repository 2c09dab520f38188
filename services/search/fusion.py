"""Hybrid fusion with exactly Weaviate's semantics (so the embedded backend ranks like Weaviate).

Checked against Weaviate v1.39.0's explainScore output (see tests/search/test_fusion.py and the parity
test):
- relativeScoreFusion: each leg's candidate scores are min-max normalised to [0, 1] over that leg's
  candidates (a leg whose candidates all score the same gives them 1), multiplied by the leg's weight
  (keyword: 1 - alpha, vector: alpha), and summed over the legs that retrieved the hit.
- rankedFusion: each leg adds weight / (rank + 60) for a 0-based rank (the top hit of a leg adds w / 60).
- The vector leg's score is 1 - cosine distance (= cosine similarity); the keyword leg's is BM25.
- A leg with weight 0 is not run at all (alpha = 0: keyword only; alpha = 1: vector only).

Adaptive fusion (the server default; run in the service for every backend, so both rank alike):
- Min-max over a leg with few candidates is the artefact that buried exact matches: with two keyword
  matches for "shark", the weaker got keyword 0.0. The keyword evidence is instead BM25 times the
  asset's coverage (the share of the query's content words its keyword fields hold, so a partial
  match counts for less than a full one), divided by the leg's best evidence: the last match keeps
  its share, and the best full match gets 1.
- The vector leg keeps min-max: it always returns a full window of candidates, so its 0 is the
  window's worst, which a hit outside the window could not beat anyway.
- The weight is query-adaptive: strength = the best keyword candidate's coverage, and the vector leg
  gets 1 - (1 - alpha) * strength^e (e: the search setting adaptive_strength_exponent). A query
  whose words an asset holds keeps the caller's alpha (the lexical match is protected: below alpha
  0.5 the best full match outranks every hit without keyword evidence, whatever their cosines); a
  query that matches few of its words (a paraphrase) is ranked by the vector leg.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.search.domain import AssetDoc, Fusion, tokenize

RANK_CONSTANT = 60
# Words that say nothing about what an image shows; they do not count towards a query's coverage
# (they still count in BM25, which Weaviate runs without stopword removal).
STOPWORDS = frozenset(
    "a an and are as at be but by for from has have i if in into is it its me my no not of on or "
    "our over she he such that the their then there these they this to under was were what when "
    "where which while who will with without you your".split()
)


@dataclass(slots=True)
class Fused:
    key: Hashable
    fused: float = 0.0
    keyword: float = 0.0
    vector: float = 0.0
    bm25: float = 0.0
    cosine: float | None = None
    # The weight the fusion gave the vector leg (the keyword leg got 1 - it).
    vector_weight: float = 0.0


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


def content_terms(text: str) -> frozenset[str]:
    """The query words that coverage counts: its tokens less stopwords (all tokens when every one is
    a stopword, so "the who" still has terms)."""
    terms = frozenset(tokenize(text))
    return (terms - STOPWORDS) or terms


def keyword_texts(doc: AssetDoc, fields: Iterable[tuple[str, float]]) -> list[str]:
    """The texts of an asset's keyword fields that the keyword leg searched."""
    texts: list[str] = []
    for name, _boost in fields:
        value = getattr(doc, name, "")
        texts.extend(value if isinstance(value, list | tuple) else [str(value)])
    return texts


def coverage(terms: frozenset[str], texts: Iterable[str]) -> float:
    """Share of `terms` that occur among the tokens of `texts` (an asset's keyword fields)."""
    if not terms:
        return 0.0
    held: set[str] = set()
    for text in texts:
        held.update(tokenize(text))
    return len(terms & held) / len(terms)


def adaptive_vector_weight(alpha: float, strength: float, exponent: float = 2.0) -> float:
    """The vector leg's weight for a keyword leg of this strength (best candidate's coverage)."""
    return 1.0 - (1.0 - alpha) * strength**exponent


def fuse(
    keyword: Sequence[tuple[Hashable, float]],
    vector: Sequence[tuple[Hashable, float]],
    alpha: float,
    fusion: Fusion,
    coverages: Mapping[Any, float] | None = None,
    strength_exponent: float = 2.0,
) -> list[Fused]:
    """Fuse the legs' candidates (each sorted best first) into one list, best first.

    `coverages` (adaptive fusion only) gives each keyword candidate's share of the query's content
    words (missing: 1). Ties keep the order in which hits were first seen (keyword leg first), so the
    result is deterministic for a given input.
    """
    if fusion is Fusion.ADAPTIVE:
        return _fuse_adaptive(keyword, vector, alpha, coverages or {}, strength_exponent)
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
            f.vector_weight = alpha
    fused = list(out.values())
    fused.sort(key=_rank_key, reverse=True)  # stable: ties keep first-seen order
    return fused


def _fuse_adaptive(
    keyword: Sequence[tuple[Hashable, float]],
    vector: Sequence[tuple[Hashable, float]],
    alpha: float,
    coverages: Mapping[Any, float],
    exponent: float,
) -> list[Fused]:
    keyword = keyword if alpha < 1.0 else []
    vector = vector if alpha > 0.0 else []
    kw_parts = _relative_to_best(keyword, coverages)
    strength = max((coverages.get(key, 1.0) for key, s in keyword if math.isfinite(s)), default=0.0)
    if not vector:
        weight = 0.0
    elif not keyword:
        weight = 1.0
    else:
        weight = adaptive_vector_weight(alpha, strength, exponent)
    out: dict[Hashable, Fused] = {}
    for (key, raw), part in zip(keyword, kw_parts, strict=True):
        out[key] = Fused(key, keyword=part * (1.0 - weight), bm25=raw, vector_weight=weight)
    finite = [c for c in vector if math.isfinite(c[1])] + [c for c in vector if not math.isfinite(c[1])]
    for (key, raw), part in zip(finite, _normalise([s for _, s in finite]), strict=True):
        f = out.get(key)
        if f is None:
            f = out[key] = Fused(key, vector_weight=weight)
        f.vector = part * weight
        f.cosine = raw
    for f in out.values():
        f.fused = f.keyword + f.vector
    fused = list(out.values())
    fused.sort(key=_rank_key, reverse=True)  # stable: ties keep first-seen order
    return fused


def _relative_to_best(cands: Sequence[tuple[Hashable, float]], coverages: Mapping[Any, float]) -> list[float]:
    """BM25 times the candidate's coverage, over the leg's best such product (non-finite: 0)."""
    evidence = [max(0.0, s) * coverages.get(key, 1.0) if math.isfinite(s) else 0.0 for key, s in cands]
    best = max(evidence, default=0.0)
    if best <= 0.0:
        return [0.0] * len(cands)
    return [e / best for e in evidence]
