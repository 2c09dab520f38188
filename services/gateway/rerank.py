"""Second stage: re-score a first-stage candidate window exactly, then shape the list.

Steps, in order (each is optional and explained on the results it touched):

1. Exact similarity. Every candidate's stored embedding is compared with the query embedding(s) by
   cosine (a dot product: all vectors are L2-normalised). The first stage only knows the cosine of
   hits its vector leg retrieved; keyword-only hits had a vector contribution of 0 there.
2. Text + image fusion (both given). Raw cosines of the two modalities live on different scales
   (text-to-image cosines of CLIP models sit far below image-to-image ones: the "modality gap"), so
   a weighted sum of raw cosines lets the image dominate whatever the weight. Each modality's cosines
   are standardised over the candidate window (z-scores) and then combined convexly with
   `text_weight` (CombSUM over z-normalised scores, as in Montague & Aslam's score normalisation).
3. Relevance = alpha * minmax(semantic) + (1 - alpha) * minmax(BM25): the keyword evidence of the
   first stage is kept (OCR and caption matches matter) with the same alpha the caller chose, but
   the semantic part is now exact for every candidate.
4. Boosts: freshness 0.5 ** (age / half_life) and popularity log1p(p) / log1p(max p in the window),
   each in [0, 1] and weighted; final = relevance + boost.
5. Near-duplicate collapse: walking the list best first, a candidate with the same content hash as
   a kept one, or an embedding cosine above `duplicate_threshold` with one, is folded into it.
6. Diversity (MMR): greedy selection maximising lambda * final - (1 - lambda) * max cosine to the
   already selected (negative cosines count as 0); `final` becomes that objective for the reordered
   results, so with MMR on, results are in greedy selection order.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass, field

import numpy as np

from services.gateway.domain import Hit, StageScores, Vector


@dataclass(frozen=True)
class RerankConfig:
    text_weight: float = 0.5
    mmr_lambda: float = 1.0
    duplicate_threshold: float = 1.0
    freshness_weight: float = 0.0
    popularity_weight: float = 0.0
    freshness_half_life_days: float = 30.0
    # Weight of the semantic part against the first stage's keyword (BM25) evidence.
    alpha: float = 0.75


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


def _age_days(hit: Hit, now: dt.datetime) -> float | None:
    when = hit.asset.created_at or hit.asset.updated_at
    if when is None:
        return None
    return max(0.0, (now - when).total_seconds() / 86400.0)


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
    n = len(hits)
    if n == 0:
        return [], trace
    now = now or dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()

    # 1. exact similarity ----------------------------------------------------------------------
    have_vectors = all(h.vector is not None for h in hits)
    matrix: np.ndarray | None = None
    if have_vectors:
        matrix = np.stack([np.asarray(h.vector, dtype=np.float32) for h in hits])
    text_cos = np.zeros(n, dtype=np.float32)
    image_cos = np.zeros(n, dtype=np.float32)
    if matrix is not None and text_vector is not None:
        text_cos = matrix @ text_vector
    if matrix is not None and image_vector is not None:
        image_cos = matrix @ image_vector
    t1 = time.perf_counter()
    trace.timings_ms["similarity"] = (t1 - t0) * 1000

    # 2. fusion -------------------------------------------------------------------------------
    semantic: np.ndarray | None
    if matrix is None or (text_vector is None and image_vector is None):
        semantic = None  # keyword-only (degraded) or vectors missing: first-stage order stands
    elif text_vector is not None and image_vector is not None:
        semantic = cfg.text_weight * _z(text_cos) + (1 - cfg.text_weight) * _z(image_cos)
    elif text_vector is not None:
        semantic = text_cos
    else:
        semantic = image_cos

    # 3. relevance ----------------------------------------------------------------------------
    bm25 = np.array([h.scores.bm25 for h in hits], dtype=np.float32)
    if semantic is None:
        relevance = np.array([h.scores.fused for h in hits], dtype=np.float32)
    else:
        relevance = (cfg.alpha * _minmax(semantic) + (1 - cfg.alpha) * _minmax(bm25)).astype(np.float32)
    t2 = time.perf_counter()
    trace.timings_ms["fusion"] = (t2 - t1) * 1000

    # 4. boosts -------------------------------------------------------------------------------
    boost = np.zeros(n, dtype=np.float32)
    fresh = np.zeros(n, dtype=np.float32)
    pop = np.zeros(n, dtype=np.float32)
    if cfg.freshness_weight > 0:
        for i, h in enumerate(hits):
            age = _age_days(h, now)
            fresh[i] = 0.0 if age is None else 0.5 ** (age / cfg.freshness_half_life_days)
        boost += cfg.freshness_weight * fresh
    if cfg.popularity_weight > 0:
        raw = np.array([max(0.0, h.asset.popularity) for h in hits], dtype=np.float64)
        top = math.log1p(float(raw.max()))
        if top > 0:
            pop = (np.log1p(raw) / top).astype(np.float32)
        boost += cfg.popularity_weight * pop
    final = relevance + boost
    t3 = time.perf_counter()
    trace.timings_ms["boosts"] = (t3 - t2) * 1000

    ranked = [
        Ranked(
            hit=h,
            scores=StageScores(
                keyword=h.scores.keyword,
                vector=h.scores.vector,
                fused=h.scores.fused,
                text_cosine=float(text_cos[i]),
                image_cosine=float(image_cos[i]),
                rerank=float(relevance[i]),
                boost=float(boost[i]),
                final=float(final[i]),
                first_stage_rank=i + 1,
            ),
        )
        for i, h in enumerate(hits)
    ]
    for i, r in enumerate(ranked):
        if cfg.freshness_weight > 0 and fresh[i] > 0:
            r.notes.append(f"freshness boost +{cfg.freshness_weight * fresh[i]:.3f}")
        if cfg.popularity_weight > 0 and pop[i] > 0:
            r.notes.append(f"popularity boost +{cfg.popularity_weight * pop[i]:.3f}")
    # Stable sort: ties keep first-stage order.
    order = [int(i) for i in np.argsort(-final, kind="stable")]

    # 5. near-duplicate collapse --------------------------------------------------------------
    gram = matrix @ matrix.T if matrix is not None else None
    kept: list[int] = []
    kept_mask = np.zeros(n, dtype=bool)
    by_sha: dict[str, int] = {}
    collapsed_into: dict[int, list[str]] = {}
    check_vectors = gram is not None and cfg.duplicate_threshold < 1.0
    if check_vectors:
        assert gram is not None
        above = gram > cfg.duplicate_threshold
        np.fill_diagonal(above, False)
        check_vectors = bool(above.any())  # the common case: no near-duplicate pair at all
    shas = [h.asset.content_sha256 for h in hits if h.asset.content_sha256]
    if not check_vectors and len(set(shas)) == len(shas):
        order_iter: list[int] = []  # nothing to collapse: keep everything in order
        kept = list(order)
        kept_mask[:] = True
    else:
        order_iter = order
    for i in order_iter:
        sha = hits[i].asset.content_sha256
        rep: int | None = by_sha.get(sha) if sha else None
        why = "same content"
        if rep is None and check_vectors and kept:
            assert gram is not None
            sims = np.where(kept_mask, gram[i], -np.inf)
            j = int(np.argmax(sims))
            if float(sims[j]) > cfg.duplicate_threshold:
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
    t4 = time.perf_counter()
    trace.timings_ms["dedupe"] = (t4 - t3) * 1000

    # 6. MMR ----------------------------------------------------------------------------------
    # Greedy selection is a prefix property: the first k picks do not depend on later ones, so only
    # `top_k` picks are made (the page being served and one more); the rest keep relevance order.
    if gram is not None and cfg.mmr_lambda < 1.0 and len(kept) > 1:
        lam = cfg.mmr_lambda
        steps = len(kept) if top_k is None else min(len(kept), top_k)
        available = kept_mask.copy()
        max_sim = np.full(n, -np.inf, dtype=np.float32)
        selected: list[int] = []
        for _ in range(steps):
            penalty = np.maximum(max_sim, 0.0)  # nothing selected yet: -inf -> 0
            objective = np.where(available, lam * final - (1 - lam) * penalty, -np.inf)
            i = int(np.argmax(objective))
            if selected:
                pen = float((1 - lam) * penalty[i])
                if pen > 0:
                    j_near = selected[int(np.argmax(gram[i, selected]))]
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
        kept = selected + rest
    trace.timings_ms["mmr"] = (time.perf_counter() - t4) * 1000
    return [ranked[i] for i in kept], trace
