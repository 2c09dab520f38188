"""Second-stage reranking: exact re-scoring, text+image fusion, dedupe, MMR, boosts, notes."""

from __future__ import annotations

import datetime as dt

import numpy as np

from services.gateway.domain import FirstStageScores, Hit
from services.gateway.rerank import RerankConfig, rerank
from tests.gateway.fakes import asset, concept, unit

OFF = RerankConfig(text_weight=0.5, mmr_lambda=1.0, duplicate_threshold=1.0, alpha=1.0)


def hit(asset_id: str, vec: np.ndarray, fused: float = 0.5, bm25: float = 0.0, **kw: object) -> Hit:
    return Hit(asset(asset_id, **kw), FirstStageScores(fused=fused, bm25=bm25), unit(vec))  # type: ignore[arg-type]


def ids(ranked: list) -> list[str]:  # type: ignore[type-arg]
    return [r.hit.asset.asset_id for r in ranked]


def test_exact_cosine_reorders_the_window() -> None:
    q = concept("car")
    # First stage put the weak match first (e.g. it came only from the keyword leg).
    hits = [hit("weak", concept("boat"), fused=0.9), hit("strong", q + 0.1 * concept("red"), fused=0.2)]
    ranked, trace = rerank(hits, OFF, text_vector=q)
    assert ids(ranked) == ["strong", "weak"]
    strong = ranked[0].scores
    assert strong.first_stage_rank == 2 and strong.fused == 0.2
    assert abs(strong.text_cosine - float(unit(q + 0.1 * concept("red")) @ q)) < 1e-6
    assert strong.image_cosine == 0.0
    assert set(trace.timings_ms) == {"similarity", "fusion", "boosts", "dedupe", "mmr"}


def test_keyword_evidence_is_kept_as_the_first_stage_weighed_it() -> None:
    q = concept("sign")

    def first_stage(asset_id: str, vec: np.ndarray, keyword: float, weight: float) -> Hit:
        scores = FirstStageScores(fused=keyword, keyword=keyword, bm25=5.0 * keyword, vector_weight=weight)
        return Hit(asset(asset_id), scores, unit(vec))

    # Vector-only first stage (weight 1, no keyword contribution): semantics decide.
    hits = [first_stage("ocr-match", concept("tree"), 0.0, 1.0), first_stage("semantic", q, 0.0, 1.0)]
    assert ids(rerank(hits, RerankConfig(alpha=1.0), text_vector=q)[0])[0] == "semantic"
    # Keyword leg strong (weight 0.25): the OCR match keeps its first-stage keyword evidence.
    hits = [
        first_stage("ocr-match", concept("tree"), 0.75, 0.25),  # the text is inside the image: BM25 only
        first_stage("weaker-match", concept("boat"), 0.40, 0.25),
        first_stage("semantic", q + 0.8 * concept("tree"), 0.0, 0.25),
    ]
    ranked, _ = rerank(hits, RerankConfig(alpha=0.25), text_vector=q)
    # The window's weakest keyword match is not zeroed by a min-max of BM25 (it was, before).
    assert ids(ranked) == ["ocr-match", "weaker-match", "semantic"]
    assert any("keyword evidence 0.400 kept" in n for n in ranked[1].notes)


def test_text_image_fusion_standardises_each_modality() -> None:
    rng = np.random.default_rng(0)
    t, i = concept("dog"), concept("beach")
    # Image cosines spread widely, text cosines narrowly (the modality gap). Raw weighted sums
    # would follow the image whatever the weight; z-scores let text_weight mean what it says.
    hits = []
    for k in range(20):
        v = unit(0.15 * rng.normal(size=t.shape[0]) + (k / 20) * i + ((20 - k) / 20) * 0.3 * t)
        hits.append(Hit(asset(f"a{k}"), FirstStageScores(), v))
    text_heavy, _ = rerank(hits, RerankConfig(text_weight=0.9, alpha=1.0), text_vector=t, image_vector=i)
    image_heavy, _ = rerank(hits, RerankConfig(text_weight=0.1, alpha=1.0), text_vector=t, image_vector=i)
    tcos = {r.hit.asset.asset_id: r.scores.text_cosine for r in text_heavy}
    icos = {r.hit.asset.asset_id: r.scores.image_cosine for r in text_heavy}
    assert tcos[ids(text_heavy)[0]] == max(tcos.values())
    assert icos[ids(image_heavy)[0]] == max(icos.values())
    assert ids(text_heavy)[:3] != ids(image_heavy)[:3]


def test_duplicates_collapse_by_hash_and_by_embedding() -> None:
    q = concept("cat")
    hits = [
        hit("cat1", q),
        hit("cat1-copy", q, sha="same"),
        hit("cat1-bytes", concept("other"), sha="same"),
        hit("cat1-resized", q + 0.01 * concept("noise")),
        hit("dog", concept("dog")),
    ]
    hits[0].asset.content_sha256 = "same"
    ranked, trace = rerank(hits, RerankConfig(duplicate_threshold=0.98, alpha=1.0), text_vector=q)
    assert ids(ranked) == ["cat1", "dog"]
    assert trace.collapsed == 3
    note = ranked[0].notes[0]
    assert note.startswith("collapsed 3 near-duplicate(s)") and "cat1-bytes (same content)" in note
    assert "cat1-resized (cosine" in note
    kept_all, _ = rerank(hits, RerankConfig(duplicate_threshold=1.0, alpha=1.0), text_vector=q)
    assert ids(kept_all) == ["cat1", "cat1-resized", "dog"]  # hash collapse always; embedding off at 1.0


def test_mmr_promotes_a_different_result() -> None:
    q = concept("car")
    red, blue = concept("red"), concept("blue")
    hits = [
        hit("red1", q + 0.5 * red),
        hit("red2", q + 0.52 * red),
        hit("red3", q + 0.55 * red),
        hit("blue", q + 0.7 * blue),
        hit("far", concept("unrelated")),  # relevance is min-max scaled over the window
    ]
    plain, _ = rerank(hits, RerankConfig(mmr_lambda=1.0, alpha=1.0), text_vector=q)
    assert ids(plain)[-2:] == ["blue", "far"]
    diverse, trace = rerank(hits, RerankConfig(mmr_lambda=0.5, alpha=1.0), text_vector=q)
    assert ids(diverse)[1] == "blue"
    assert trace.mmr_moved > 0
    assert any(n.startswith("mmr penalty") for n in diverse[2].notes)


def test_freshness_and_popularity_boosts() -> None:
    q = concept("tree")
    now = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    old = hit("old", q, created=now - dt.timedelta(days=365), popularity=0)
    new = hit("new", q + 0.3 * concept("x"), created=now - dt.timedelta(days=1), popularity=0)
    hot = hit("hot", q + 0.3 * concept("y"), created=now - dt.timedelta(days=365), popularity=1000)
    far = hit("far", concept("unrelated"), created=now - dt.timedelta(days=365))
    window = [old, new, hot, far]
    base, _ = rerank(window, RerankConfig(alpha=1.0), text_vector=q, now=now)
    assert ids(base)[0] == "old"
    fresh, _ = rerank(window, RerankConfig(alpha=1.0, freshness_weight=1.0), text_vector=q, now=now)
    assert ids(fresh)[0] == "new"
    assert fresh[0].scores.boost > 0.9 and any("freshness boost" in n for n in fresh[0].notes)
    pop, _ = rerank(window, RerankConfig(alpha=1.0, popularity_weight=1.0), text_vector=q, now=now)
    assert ids(pop)[0] == "hot" and pop[0].scores.boost == 1.0


def test_keyword_only_keeps_first_stage_order() -> None:
    hits = [Hit(asset("a"), FirstStageScores(fused=0.9)), Hit(asset("b"), FirstStageScores(fused=0.4))]
    ranked, _ = rerank(hits, RerankConfig(mmr_lambda=0.5, duplicate_threshold=0.9))
    assert ids(ranked) == ["a", "b"]
    assert abs(ranked[0].scores.final - 0.9) < 1e-6
    assert rerank([], RerankConfig())[0] == []


def test_preference_boost_lifts_only_the_callers_clicked_assets() -> None:
    q = concept("dog")
    window = [
        hit("best", q),
        hit("near", q + 0.4 * concept("cat")),
        hit("far", q + 1.5 * concept("cat")),
    ]
    base, _ = rerank(window, OFF, text_vector=q)
    assert ids(base) == ["best", "near", "far"]
    # The weight alone decides how far a clicked asset may climb: 0.2 lifts "far" past "near" only
    # when their relevance differs by less than that.
    near_gap = base[1].scores.rerank - base[2].scores.rerank
    liked = RerankConfig(
        text_weight=0.5, alpha=1.0, preference_weight=near_gap + 0.05, preferred=frozenset({"far", "x"})
    )
    boosted, _ = rerank(window, liked, text_vector=q)
    assert ids(boosted) == ["best", "far", "near"]
    far = boosted[1]
    assert abs(far.scores.boost - (near_gap + 0.05)) < 1e-6
    assert far.scores.final == far.scores.rerank + far.scores.boost
    assert any("preference boost" in n and "clicked" in n for n in far.notes)
    assert all(r.scores.boost == 0.0 and not any("preference" in n for n in r.notes) for r in boosted[::2])
    # A weight of 0 (the default: the boost is off) or an empty set changes nothing.
    for cfg in (
        RerankConfig(text_weight=0.5, alpha=1.0, preferred=frozenset({"far"})),
        RerankConfig(text_weight=0.5, alpha=1.0, preference_weight=1.0),
    ):
        assert ids(rerank(window, cfg, text_vector=q)[0]) == ids(base)


def test_freshness_is_half_per_half_life_zero_without_a_time_and_one_in_the_future() -> None:
    from services.gateway.rerank import boosts

    now = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    cfg = RerankConfig(freshness_weight=2.0, freshness_half_life_days=30.0)
    window = [
        hit("month", concept("a"), created=now - dt.timedelta(days=30)),
        hit("two-months", concept("b"), created=now - dt.timedelta(days=60)),
        hit("timeless", concept("c")),
        hit("future", concept("d"), created=now + dt.timedelta(days=3)),
    ]
    window[2].asset.created_at = window[2].asset.updated_at = None
    b = boosts(window, cfg, now)
    np.testing.assert_allclose(b.freshness, [0.5, 0.25, 0.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(b.total, 2.0 * b.freshness, rtol=1e-6)
