"""Second stage: re-score a first-stage candidate window exactly, then shape the list.

Steps, in order, one function each (each is optional and explained on the results it touched):

1. Exact similarity (`exact_similarity`). Every candidate's stored embedding is compared with the
   query embedding(s) by cosine (a dot product: all vectors are L2-normalised). The first stage only
   knows the cosine of hits its vector leg retrieved; keyword-only hits had a vector contribution of 0.
2. Text + image fusion (`fuse_modalities`, when both are given). Raw cosines of the two modalities
   live on different scales (text-to-image cosines of CLIP models sit far below image-to-image ones:
   the "modality gap"), so a weighted sum of raw cosines lets the image dominate whatever the weight.
   Each modality's cosines are standardised over the candidate window (z-scores) and then combined
   convexly with `text_weight` (CombSUM over z-normalised scores, as in Montague & Aslam's score
   normalisation).
3. Relevance (`relevance`) = the first stage's keyword contribution + w * scaled(semantic), w being
   the weight the first stage gave its vector leg (ScoreBreakdown.vector_weight). The keyword
   evidence is kept exactly as the first stage weighed it (OCR and caption matches matter; under
   adaptive fusion a full match of the query's words keeps its protection and a query no asset's
   words match leaves the semantic part ~all the weight), and only the semantic part is re-scored,
   exactly, for every candidate, and min-max scaled over the vector leg's candidates. Re-normalising
   BM25 here (min-max over the window, as before) zeroed the window's weakest keyword match and
   re-buried what the first stage had protected.
4. Boosts (`boosts`): freshness 0.5 ** (age / half_life) and popularity log1p(p) / log1p(max p in
   the window), each in [0, 1] and weighted, and the optional per-caller preference boost (a flat
   `preference_weight` for each asset the same caller clicked recently: preferences.py; off unless
   configured); final = relevance + boost.
5. Near-duplicate collapse (`collapse_duplicates`): walking the list best first, a candidate with the
   same content hash as a kept one, or an embedding cosine above `duplicate_threshold` with one, is
   folded into it.
6. Diversity (`diversify`, MMR): greedy selection maximising lambda * final - (1 - lambda) * max
   cosine to the already selected (negative cosines count as 0); `final` becomes that objective for
   the reordered results, so with MMR on, results are in greedy selection order.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass, field

import numpy as np

from services.gateway.domain import Hit, StageScores, Vector
from services.gateway.settings import SearchFlowSettings

# The operator's defaults are written once, in settings.py; the search flow fills every field.
_CONFIGURED = SearchFlowSettings()


@dataclass(frozen=True)
class RerankConfig:
    """The knobs of one rerank. Left out, each optional step is off (no keyword blend, no collapse by
    embedding, no MMR, no boosts)."""

    text_weight: float = _CONFIGURED.rerank_text_weight
    mmr_lambda: float = 1.0
    duplicate_threshold: float = 1.0
    freshness_weight: float = 0.0
    popularity_weight: float = 0.0
    freshness_half_life_days: float = _CONFIGURED.rerank_freshness_half_life_days
    # The first stage's alpha (the caller's or the default); the relevance step reads the weight the
    # first stage actually used from the hits (ScoreBreakdown.vector_weight).
    alpha: float = 1.0
    # Per-caller preference boost: added to the assets in `preferred` (the caller's recent clicks).
    preference_weight: float = 0.0
    preferred: frozenset[str] = frozenset()


@dataclass
class Ranked:
    hit: Hit
    scores: StageScores
    notes: list[str] = field(default_factory=list)


@dataclass
class RerankTrace:
    """What each step did, for the response notes, metrics and the benchmark."""

    timings_ms: dict[str, float] = field(default_factory=dict)
    collapsed: int = 0
    mmr_moved: int = 0


@dataclass
class Similarity:
    """Step 1's output: the window's stored vectors (None when any is missing) and their cosines."""

    matrix: np.ndarray | None
    text_cos: np.ndarray
    image_cos: np.ndarray


@dataclass
class Boosts:
    """Step 4's output: each hit's total boost and its parts (before weighting)."""

    total: np.ndarray
    freshness: np.ndarray
    popularity: np.ndarray
    preference: np.ndarray  # 1 for an asset the caller clicked recently, else 0


class _Stopwatch:
    def __init__(self, trace: RerankTrace) -> None:
        self._trace = trace
        self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self._trace.timings_ms[step] = (now - self._last) * 1000
        self._last = now


def _z(x: np.ndarray) -> np.ndarray:
    std = float(x.std())
    if std < 1e-6:
        return np.zeros_like(x)
    return (x - float(x.mean())) / std


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    if hi - lo < 1e-9:
        return np.ones_like(x) if hi > 0 else np.zeros_like(x)
    return (x - lo) / (hi - lo)


def _stamp(hit: Hit) -> float:
    """The hit's age reference as POSIX seconds (created, else updated); NaN when it has neither."""
    when = hit.asset.created_at or hit.asset.updated_at
    return math.nan if when is None else when.timestamp()


def rerank(
    hits: list[Hit],
    cfg: RerankConfig,
    *,
    text_vector: Vector | None = None,
    image_vector: Vector | None = None,
    now: dt.datetime | None = None,
    top_k: int | None = None,
) -> tuple[list[Ranked], RerankTrace]:
    """Rerank first-stage hits (in first-stage order). Returns the new order and a trace.

    `top_k` bounds the MMR selection to the results that will be shown (None = all)."""
    trace = RerankTrace()
    if not hits:
        return [], trace
    now = now or dt.datetime.now(dt.UTC)
    watch = _Stopwatch(trace)
    sim = exact_similarity(hits, text_vector, image_vector)
    watch.lap("similarity")
    rel = relevance(hits, fuse_modalities(sim, cfg, text_vector, image_vector), cfg.alpha)
    watch.lap("fusion")
    boost = boosts(hits, cfg, now)
    final = rel + boost.total
    ranked = _ranked(hits, sim, rel, boost, final, cfg)
    order = [int(i) for i in np.argsort(-final, kind="stable")]  # stable: ties keep first-stage order
    watch.lap("boosts")
    gram = sim.matrix @ sim.matrix.T if sim.matrix is not None else None
    kept = collapse_duplicates(hits, ranked, order, gram, cfg.duplicate_threshold, trace)
    watch.lap("dedupe")
    kept = diversify(hits, ranked, kept, gram, final, cfg.mmr_lambda, top_k, trace)
    watch.lap("mmr")
    return [ranked[i] for i in kept], trace


def exact_similarity(hits: list[Hit], text_vector: Vector | None, image_vector: Vector | None) -> Similarity:
    """1. Cosine of every stored embedding with the query embedding(s) (all vectors are unit length)."""
    n = len(hits)
    matrix: np.ndarray | None = None
    if all(h.vector is not None for h in hits):
        matrix = np.stack([np.asarray(h.vector, dtype=np.float32) for h in hits])
    text_cos = np.zeros(n, dtype=np.float32)
    image_cos = np.zeros(n, dtype=np.float32)
    if matrix is not None and text_vector is not None:
        text_cos = matrix @ text_vector
    if matrix is not None and image_vector is not None:
        image_cos = matrix @ image_vector
    return Similarity(matrix, text_cos, image_cos)


def fuse_modalities(
    sim: Similarity, cfg: RerankConfig, text_vector: Vector | None, image_vector: Vector | None
) -> np.ndarray | None:
    """2. One semantic score per hit; None when there is none (keyword-only, or vectors missing)."""
    if sim.matrix is None or (text_vector is None and image_vector is None):
        return None  # first-stage order stands
    if text_vector is not None and image_vector is not None:
        return cfg.text_weight * _z(sim.text_cos) + (1 - cfg.text_weight) * _z(sim.image_cos)
    return sim.text_cos if text_vector is not None else sim.image_cos


def vector_weight(hits: list[Hit], alpha: float) -> float:
    """The weight the first stage gave its vector leg (one value per query); `alpha`, the weight it
    was asked for, when it reported none (a first stage without a vector leg reports 0)."""
    reported = max((h.scores.vector_weight for h in hits), default=0.0)
    return reported if reported > 0.0 else alpha


def relevance(hits: list[Hit], semantic: np.ndarray | None, alpha: float) -> np.ndarray:
    """3. first-stage keyword contribution + w * minmax(semantic); the first stage's fused score when
    there is no semantic score."""
    if semantic is None:
        return np.array([h.scores.fused for h in hits], dtype=np.float32)
    keyword = np.array([h.scores.keyword for h in hits], dtype=np.float32)
    return (keyword + vector_weight(hits, alpha) * _semantic_scale(hits, semantic)).astype(np.float32)


def _semantic_scale(hits: list[Hit], semantic: np.ndarray) -> np.ndarray:
    """Min-max of the semantic scores over the candidates the vector leg retrieved (as the first stage
    normalised them), others clipped at 0: a keyword-only candidate with a poor cosine widens no range,
    so it cannot change how the vector leg's candidates compare (or how MMR weighs them)."""
    from_vector_leg = np.array([h.scores.vector > 0 or h.scores.keyword == 0 for h in hits])
    if from_vector_leg.sum() < 2:
        return _minmax(semantic)
    lo, hi = float(semantic[from_vector_leg].min()), float(semantic[from_vector_leg].max())
    if hi - lo < 1e-9:
        return _minmax(semantic)
    return np.maximum((semantic - lo) / (hi - lo), 0.0)


def boosts(hits: list[Hit], cfg: RerankConfig, now: dt.datetime) -> Boosts:
    """4. Weighted freshness (0.5 ** (age / half-life)), popularity (log1p(p) / log1p(max p)) and the
    caller's preference (1 for an asset the caller clicked recently)."""
    n = len(hits)
    total = np.zeros(n, dtype=np.float32)
    fresh = np.zeros(n, dtype=np.float32)
    pop = np.zeros(n, dtype=np.float32)
    liked = np.zeros(n, dtype=np.float32)
    if cfg.freshness_weight > 0:
        # One array operation for the window (a per-hit loop was the costliest rerank step).
        stamps = np.array([_stamp(h) for h in hits], dtype=np.float64)  # NaN: no time
        age = np.maximum(0.0, (now.timestamp() - stamps) / 86400.0)
        with np.errstate(invalid="ignore"):
            decay = np.power(0.5, age / cfg.freshness_half_life_days)
        fresh = np.where(np.isnan(stamps), 0.0, decay).astype(np.float32)
        total += cfg.freshness_weight * fresh
    if cfg.popularity_weight > 0:
        raw = np.array([max(0.0, h.asset.popularity) for h in hits], dtype=np.float64)
        top = math.log1p(float(raw.max()))
        if top > 0:
            pop = (np.log1p(raw) / top).astype(np.float32)
        total += cfg.popularity_weight * pop
    if cfg.preference_weight > 0 and cfg.preferred:
        liked = np.array([h.asset.asset_id in cfg.preferred for h in hits], dtype=np.float32)
        total += cfg.preference_weight * liked
    return Boosts(total, fresh, pop, liked)


def _ranked(
    hits: list[Hit], sim: Similarity, rel: np.ndarray, boost: Boosts, final: np.ndarray, cfg: RerankConfig
) -> list[Ranked]:
    """Every hit with its stage scores, and a note for each boost it got (in first-stage order)."""
    # Each array read once as Python floats (tolist converts exactly as float() does), not one numpy
    # scalar per hit and score.
    text_cos, image_cos = sim.text_cos.tolist(), sim.image_cos.tolist()
    rel_l, boost_l, final_l = rel.tolist(), boost.total.tolist(), final.tolist()
    ranked = [
        Ranked(
            hit=h,
            scores=StageScores(
                keyword=h.scores.keyword,
                vector=h.scores.vector,
                fused=h.scores.fused,
                text_cosine=text_cos[i],
                image_cosine=image_cos[i],
                rerank=rel_l[i],
                boost=boost_l[i],
                final=final_l[i],
                first_stage_rank=i + 1,
            ),
        )
        for i, h in enumerate(hits)
    ]
    weight = vector_weight(hits, cfg.alpha)
    fresh, pop, liked = boost.freshness.tolist(), boost.popularity.tolist(), boost.preference.tolist()
    for i, r in enumerate(ranked):
        if hits[i].scores.keyword > 0:
            r.notes.append(
                f"keyword evidence {hits[i].scores.keyword:.3f} kept from the first stage "
                f"(semantic re-scored with weight {weight:.2f})"
            )
        # The notes' figures stay numpy products: the same float32 arithmetic as before.
        if cfg.freshness_weight > 0 and fresh[i] > 0:
            r.notes.append(f"freshness boost +{cfg.freshness_weight * boost.freshness[i]:.3f}")
        if cfg.popularity_weight > 0 and pop[i] > 0:
            r.notes.append(f"popularity boost +{cfg.popularity_weight * boost.popularity[i]:.3f}")
        if liked[i] > 0:
            r.notes.append(f"preference boost +{cfg.preference_weight:.3f} (you clicked this recently)")
    return ranked


def collapse_duplicates(
    hits: list[Hit],
    ranked: list[Ranked],
    order: list[int],
    gram: np.ndarray | None,
    threshold: float,
    trace: RerankTrace,
) -> list[int]:
    """5. Walking `order` best first, fold a hit with the same content hash as a kept one, or an
    embedding cosine above `threshold` with one, into it. Returns the kept indices, in order."""
    n = len(hits)
    kept: list[int] = []
    kept_mask = np.zeros(n, dtype=bool)
    by_sha: dict[str, int] = {}
    collapsed_into: dict[int, list[str]] = {}
    check_vectors = gram is not None and threshold < 1.0
    if check_vectors:
        assert gram is not None
        above = gram > threshold
        np.fill_diagonal(above, False)
        check_vectors = bool(above.any())  # the common case: no near-duplicate pair at all
    shas = [h.asset.content_sha256 for h in hits if h.asset.content_sha256]
    if not check_vectors and len(set(shas)) == len(shas):
        return list(order)  # nothing to collapse: keep everything in order
    for i in order:
        sha = hits[i].asset.content_sha256
        rep: int | None = by_sha.get(sha) if sha else None
        why = "same content"
        if rep is None and check_vectors and kept:
            assert gram is not None
            sims = np.where(kept_mask, gram[i], -np.inf)
            j = int(np.argmax(sims))
            if float(sims[j]) > threshold:
                rep = j
                why = f"cosine {float(sims[j]):.3f}"
        if rep is not None:
            collapsed_into.setdefault(rep, []).append(f"{hits[i].asset.asset_id} ({why})")
            trace.collapsed += 1
            continue
        kept.append(i)
        kept_mask[i] = True
        if sha:
            by_sha[sha] = i
    for rep, members in collapsed_into.items():
        ranked[rep].notes.append(f"collapsed {len(members)} near-duplicate(s): {', '.join(members)}")
    return kept


def diversify(
    hits: list[Hit],
    ranked: list[Ranked],
    kept: list[int],
    gram: np.ndarray | None,
    final: np.ndarray,
    lam: float,
    top_k: int | None,
    trace: RerankTrace,
) -> list[int]:
    """6. MMR: greedily pick the kept hit maximising lam * final - (1 - lam) * its largest cosine to
    those already picked (negative cosines count as 0); its `final` becomes that objective.

    Greedy selection is a prefix property: the first k picks do not depend on later ones, so only
    `top_k` picks are made (the page being served and one more); the rest keep relevance order."""
    if gram is None or lam >= 1.0 or len(kept) <= 1:
        return kept
    n = len(hits)
    steps = len(kept) if top_k is None else min(len(kept), top_k)
    available = np.zeros(n, dtype=bool)
    available[kept] = True
    max_sim = np.full(n, -np.inf, dtype=np.float32)
    selected: list[int] = []
    relevance_part = lam * final  # the same every step
    diversity = 1 - lam
    for _ in range(steps):
        penalty = np.maximum(max_sim, 0.0)  # nothing selected yet: -inf -> 0
        objective = np.where(available, relevance_part - diversity * penalty, -np.inf)
        i = int(objective.argmax())
        if selected:
            pen = float(diversity * penalty[i])
            if pen > 0:
                j_near = selected[int(gram[i, selected].argmax())]
                ranked[i].notes.append(
                    f"mmr penalty {pen:.3f} vs asset {hits[j_near].asset.asset_id} "
                    f"(cosine {float(gram[i, j_near]):.3f})"
                )
        ranked[i].scores.final = float(objective[i])
        selected.append(i)
        available[i] = False
        max_sim = np.maximum(max_sim, gram[i])
    rest = [i for i in kept if available[i]]
    trace.mmr_moved = sum(1 for a, b in zip(kept, selected, strict=False) if a != b)
    return selected + rest
