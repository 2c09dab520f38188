"""Adaptive fusion (services.search.fusion): pure-logic checks of the rules both backends share."""

from __future__ import annotations

import pytest

from services.search.domain import AssetDoc, Fusion
from services.search.fusion import adaptive_vector_weight, content_terms, coverage, fuse, keyword_texts


def test_the_last_keyword_match_keeps_its_share() -> None:
    # Two matches for "shark": min-max gave the second 0.0; relative-to-best keeps 2/3 of the first's.
    kw = [("tiger", 3.0), ("white", 2.0)]
    out = {f.key: f for f in fuse(kw, [], 0.0, Fusion.ADAPTIVE, {"tiger": 1.0, "white": 1.0})}
    assert out["tiger"].keyword == pytest.approx(1.0)
    assert out["white"].keyword == pytest.approx(2.0 / 3.0)
    relative = {f.key: f for f in fuse(kw, [], 0.0, Fusion.RELATIVE_SCORE)}
    assert relative["white"].keyword == 0.0


def test_a_full_keyword_match_is_not_buried_by_weak_vector_evidence() -> None:
    # "great white shark": the exact caption is last on the vector leg, others are semantically close.
    kw = [("exact", 4.0), ("partial", 4.5)]
    vec = [("near1", 0.62), ("near2", 0.61), ("partial", 0.60), ("exact", 0.40)]
    cov = {"exact": 1.0, "partial": 1 / 3}
    fused = fuse(kw, vec, 0.4, Fusion.ADAPTIVE, cov)
    assert fused[0].key == "exact"
    assert fused[0].keyword == pytest.approx(0.6)  # the best full match: evidence 1, weight 1 - 0.4
    assert fused[0].vector_weight == pytest.approx(0.4)
    # The old default (relative score, alpha 0.75) buries it.
    old = fuse(kw, vec, 0.75, Fusion.RELATIVE_SCORE)
    assert old[0].key != "exact"


def test_a_query_no_asset_holds_is_ranked_by_the_vector_leg() -> None:
    # A paraphrase: one stray word matches an unrelated caption; the vector leg decides.
    kw = [("stray", 7.0)]
    vec = [("target", 0.55), ("other", 0.50), ("stray", 0.10)]
    fused = fuse(kw, vec, 0.5, Fusion.ADAPTIVE, {"stray": 0.2})
    assert [f.key for f in fused][:2] == ["target", "other"]
    weight = adaptive_vector_weight(0.5, 0.2)
    assert fused[0].vector_weight == pytest.approx(weight) and weight > 0.97


def test_one_leg_and_empty_legs() -> None:
    assert fuse([], [("a", 0.3), ("b", 0.2)], 0.5, Fusion.ADAPTIVE)[0].vector_weight == 1.0
    only_kw = fuse([("a", 2.0)], [], 0.5, Fusion.ADAPTIVE)  # no vector candidates: keyword decides
    assert only_kw[0].vector_weight == 0.0 and only_kw[0].fused == pytest.approx(1.0)
    assert fuse([], [], 0.5, Fusion.ADAPTIVE) == []
    # alpha 1 ignores the keyword leg, alpha 0 the vector leg.
    assert [f.key for f in fuse([("k", 1.0)], [("v", 0.9)], 1.0, Fusion.ADAPTIVE)] == ["v"]
    assert [f.key for f in fuse([("k", 1.0)], [("v", 0.9)], 0.0, Fusion.ADAPTIVE)] == ["k"]


def test_non_finite_scores_rank_last() -> None:
    fused = fuse([("nan", float("nan")), ("ok", 1.0)], [], 0.0, Fusion.ADAPTIVE)
    assert [f.key for f in fused] == ["ok", "nan"]


def test_coverage_counts_content_words_of_the_searched_fields() -> None:
    terms = content_terms("a photo of the great white shark")
    assert terms == {"photo", "great", "white", "shark"}
    assert content_terms("the who") == {"the", "who"}  # all stopwords: all count
    doc = AssetDoc(asset_id="x", caption="Great white shark", tags=("photo",), ocr_text="")
    assert coverage(terms, keyword_texts(doc, (("caption", 2.0), ("tags", 1.0)))) == 1.0
    assert coverage(terms, keyword_texts(doc, (("caption", 2.0),))) == 0.75
    assert coverage(frozenset(), ["anything"]) == 0.0
