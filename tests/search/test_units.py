"""Pure logic of the search service: filter validation and canonical form, fusion rules, cache keys,
the memory cache, and the embedded backend's persistence across restarts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from services.common.errors import InvalidArgument, Unavailable
from services.search import filters as flt
from services.search.backends.embedded import EmbeddedBackend, HnswParams, tokenize
from services.search.cache import MemoryCache, generation_floor
from services.search.core import SearchCore
from services.search.domain import AssetDoc, AssetRecord, Fusion, ModelRef
from services.search.fusion import fuse
from services.search.settings import SearchSettings

S = flt.TypedValue


def test_condition_validation_names_the_problem() -> None:
    with pytest.raises(InvalidArgument, match="unknown filter field 'colour'.*asset_id, uri"):
        flt.condition("colour", flt.Op.EQUAL, S("string_value", "red"), None)
    with pytest.raises(InvalidArgument, match="'width' .*must be a int_value, got string_value"):
        flt.condition("width", flt.Op.EQUAL, S("string_value", "wide"), None)
    with pytest.raises(InvalidArgument, match="GREATER_THAN is not supported"):
        flt.condition("tags", flt.Op.GREATER_THAN, S("string_value", "a"), None)
    with pytest.raises(InvalidArgument, match="takes a non-empty `values` list"):
        flt.condition("owner", flt.Op.IN, S("string_value", "a"), None)
    with pytest.raises(InvalidArgument, match="operator is unset"):
        flt.condition("owner", None, S("string_value", "a"), None)
    with pytest.raises(InvalidArgument, match="finite"):
        flt.condition("popularity", flt.Op.LESS_THAN, S("double_value", float("inf")), None)
    # An integer operand is accepted for a number field.
    c = flt.condition("popularity", flt.Op.LESS_THAN, S("int_value", 3), None)
    assert c.values == (3.0,)


def test_canonical_form_ignores_order_and_nesting() -> None:
    a = flt.condition("owner", flt.Op.EQUAL, S("string_value", "ann"), None)
    b = flt.condition("width", flt.Op.IN, None, [S("int_value", 2), S("int_value", 1), S("int_value", 2)])
    c = flt.condition("tags", flt.Op.CONTAINS_ANY, None, [S("string_value", "x")])
    left = flt.all_of([a, flt.all_of([b, c])])
    right = flt.all_of([flt.all_of([c, a]), b])
    assert flt.canonical(left) == flt.canonical(right)
    assert b.values == (1, 2)
    assert flt.canonical(flt.any_of([a, b])) != flt.canonical(flt.all_of([a, b]))
    assert flt.negate(flt.negate(a)) == a


def test_like_patterns_match_whole_strings() -> None:
    like = flt.like_matches
    assert like("a*b?.c", "a-long-bX.c") and not like("a*b?.c", "abX-c") and not like("a*b?.c", "xa-bX.c")
    assert like("*", "") and like("**", "x") and like("a*", "a") and not like("a?", "a")
    assert like("*.jpg", "x.y.jpg") and not like("*.jpg", "x.jpg.png") and like("?*?", "ab")
    assert like("a*b*c", "a\nb\nc")  # `*` spans newlines too


def test_like_has_no_catastrophic_backtracking() -> None:
    import time

    start = time.perf_counter()
    assert not flt.like_matches("*a" * 30 + "*b", "a" * 5000)
    assert time.perf_counter() - start < 1.0  # the anchored regex it replaces ran for minutes here


def test_relative_score_fusion_matches_weaviate_rules() -> None:
    kw = [("a", 3.0), ("b", 2.0), ("c", 1.0)]
    vec = [("c", 0.9), ("d", 0.5), ("a", 0.1)]
    out = {f.key: f for f in fuse(kw, vec, 0.25, Fusion.RELATIVE_SCORE)}
    # keyword leg: a=1, b=0.5, c=0 (x0.75); vector leg: c=1, d=0.5, a=0 (x0.25)
    assert out["a"].fused == pytest.approx(0.75) and out["a"].bm25 == 3.0 and out["a"].cosine == 0.1
    assert out["b"].fused == pytest.approx(0.375) and out["b"].cosine is None
    assert out["c"].fused == pytest.approx(0.25) and out["c"].keyword == 0.0
    assert out["d"].fused == pytest.approx(0.125)
    assert [f.key for f in fuse(kw, vec, 0.25, Fusion.RELATIVE_SCORE)] == ["a", "b", "c", "d"]
    # One candidate (or all equal) normalises to 1.
    assert fuse([("x", 5.0)], [], 0.0, Fusion.RELATIVE_SCORE)[0].fused == 1.0


def test_ranked_fusion_and_zero_weight_legs() -> None:
    kw = [("a", 3.0), ("b", 2.0)]
    vec = [("b", 0.9), ("a", 0.1)]
    out = {f.key: f for f in fuse(kw, vec, 0.5, Fusion.RANKED)}
    assert out["a"].keyword == pytest.approx(0.5 / 60) and out["a"].vector == pytest.approx(0.5 / 61)
    assert fuse(kw, vec, 0.0, Fusion.RANKED)[0].vector == 0.0
    assert [f.key for f in fuse(kw, vec, 1.0, Fusion.RELATIVE_SCORE)] == ["b", "a"]


def test_tokenizer_matches_weaviate_word_tokenization() -> None:
    assert tokenize("Red-Car, 2024's best_photo!") == ["red", "car", "2024", "s", "best", "photo"]


async def test_memory_cache_generation_and_ttl() -> None:
    cache = MemoryCache(ttl_s=0.5, max_entries=2)  # long enough for a paused runner between the steps
    look = await cache.lookup("t", "k")
    g0 = look.generation  # the process's clock floor: a restarted process never repeats a number
    assert look.available and look.value is None and g0 >= generation_floor() - 10_000_000
    await cache.store("t", g0, "k", "v")
    assert (await cache.lookup("t", "k")).value == "v"
    assert await cache.bump("t") == g0 + 1
    assert (await cache.lookup("t", "k")).value is None  # new generation, new key
    await cache.store("t", g0, "k", "stale")  # computed before the write: not stored
    assert (await cache.lookup("t", "k")).value is None
    await cache.store("t", g0 + 1, "k", "v1")
    await asyncio.sleep(0.55)
    assert (await cache.lookup("t", "k")).value is None  # expired
    assert MemoryCache(ttl_s=1, max_entries=1)._floor > g0  # a later process starts above


async def test_generation_feed_pushes_bumps_and_ends_watches_it_cannot_vouch_for() -> None:
    cache = MemoryCache(ttl_s=1, max_entries=2)
    watch = cache.feed.watch()
    assert await anext(watch) is None  # registered
    gen = await cache.bump("t")
    assert await anext(watch) == ("t", gen)
    cache.feed.interrupt("test", still_live=True)
    with pytest.raises(Unavailable, match="watch ended"):
        await anext(watch)
    cache.feed.close()
    waiting = asyncio.ensure_future(anext(cache.feed.watch()))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # a closed feed registers no watcher
    waiting.cancel()


def _plan_kwargs(**kw: object) -> dict[str, object]:
    base: dict[str, object] = dict(
        text="car", vector=None, vector_model=None, alpha=None, fusion=Fusion.RELATIVE_SCORE, filter=None,
        limit=0, offset=0, window=0, keyword_fields=[], include_vectors=False,
    )  # fmt: skip
    base.update(kw)
    return base


async def test_plan_defaults_and_digest(tmp_path: Path) -> None:
    settings = SearchSettings(data_dir=str(tmp_path))
    backend = EmbeddedBackend(tmp_path, HnswParams(16, 64, 64, 100, "i8"))
    await backend.start()
    core = SearchCore(settings, backend, MemoryCache(60, 10))
    p = await core.plan(**_plan_kwargs())  # type: ignore[arg-type]
    assert (p.alpha, p.limit, p.window) == (0.0, 10, 100)
    assert p.keyword_fields == (("caption", 2.0), ("tags", 1.5), ("ocr_text", 1.0))
    p2 = await core.plan(**_plan_kwargs(offset=250, limit=20))  # type: ignore[arg-type]
    assert p2.window == 270
    f1 = [("tags", 1.0), ("caption", 2.0)]
    f2 = [("caption", 2.0), ("tags", 1.0)]
    d1 = core.digest("t", await core.plan(**_plan_kwargs(keyword_fields=f1)))  # type: ignore[arg-type]
    d2 = core.digest("t", await core.plan(**_plan_kwargs(keyword_fields=f2)))  # type: ignore[arg-type]
    assert d1 == d2
    assert core.digest("t", p) != core.digest("u", p)
    assert core.digest("t", p) != core.digest("t", p2)


async def test_embedded_backend_survives_restart(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    model = ModelRef("m", "1")
    settings = SearchSettings(data_dir=str(tmp_path))
    vecs = rng.standard_normal((300, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)

    async def open_core() -> SearchCore:
        backend = EmbeddedBackend(tmp_path, HnswParams(16, 64, 64, 10, "i8"))
        await backend.start()
        return SearchCore(settings, backend, MemoryCache(60, 10))

    core = await open_core()
    now = datetime(2024, 5, 1, tzinfo=UTC)
    recs = [
        AssetRecord(
            AssetDoc(asset_id=f"p{i}", caption=f"word{i % 7} photo", created_at=now, embedding_model=model),
            vecs[i],
        )
        for i in range(300)
    ]
    await core.upsert("t", recs)
    await core.delete("t", ["p0"])
    plan = await core.plan(**_plan_kwargs(text="word3", vector=vecs[3], vector_model=model, alpha=0.5))  # type: ignore[arg-type]
    before = [
        (h.doc.asset_id, round(h.scores.fused, 5))
        for h in (await core.query("t", plan, skip_cache=True)).hits
    ]
    await core.backend.close()  # graceful: the graph snapshot is saved

    core = await open_core()
    after = [
        (h.doc.asset_id, round(h.scores.fused, 5))
        for h in (await core.query("t", plan, skip_cache=True)).hits
    ]
    assert after == before and (await core.stats("t"))[0].asset_count == 299
    # A crash after a write (no snapshot for the last write): the graph and the keyword index are rebuilt.
    await core.upsert(
        "t", [AssetRecord(AssetDoc(asset_id="late", caption="word3 word3", embedding_model=model), vecs[3])]
    )
    (tmp_path / "tenants" / "t" / "vectors.seq").unlink(missing_ok=True)
    (tmp_path / "tenants" / "t" / "keyword.seq").unlink(missing_ok=True)
    core = await open_core()  # the previous instance is abandoned, as a crashed process would be
    hits = (await core.query("t", plan, skip_cache=True)).hits
    assert hits[0].doc.asset_id in {"late", "p3"} and (await core.stats("t"))[0].asset_count == 300
    assert (await core.get("t", ["p0"], False)) == [None]


async def test_embedded_graph_scores_are_exact_and_snapshot_follows_graph_dtype(tmp_path: Path) -> None:
    """The quantised (int8) graph only proposes candidates: the vector leg's scores are the exact float32
    cosines, its ranking matches brute force, and a graph snapshot of another dtype is rebuilt."""
    rng = np.random.default_rng(5)
    model = ModelRef("m", "1")
    settings = SearchSettings(data_dir=str(tmp_path))
    vecs = rng.standard_normal((1500, 32)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    queries = rng.standard_normal((20, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    async def open_core(dtype: str) -> SearchCore:
        # exact_cutoff 0: every unfiltered query goes through the graph.
        backend = EmbeddedBackend(tmp_path, HnswParams(16, 64, 256, 0, graph_dtype=dtype))
        await backend.start()
        return SearchCore(settings, backend, MemoryCache(60, 10))

    async def top10(core: SearchCore) -> list[list[str]]:
        out = []
        for q in queries:
            plan = await core.plan(**_plan_kwargs(text="", vector=q, vector_model=model, alpha=1.0))  # type: ignore[arg-type]
            hits = (await core.query("t", plan, skip_cache=True)).hits
            for h in hits:
                exact = float(vecs[int(h.doc.asset_id[1:])] @ q)
                assert h.scores.cosine_similarity == pytest.approx(exact, abs=1e-6)
            sims = [h.scores.cosine_similarity for h in hits]
            assert sims == sorted(sims, reverse=True)
            out.append([h.doc.asset_id for h in hits])
        return out

    core = await open_core("f32")
    for start in range(0, 1500, 500):
        await core.upsert(
            "t",
            [
                AssetRecord(AssetDoc(asset_id=f"p{i}", embedding_model=model), vecs[i])
                for i in range(start, start + 500)
            ],
        )
    before = await top10(core)
    await core.backend.close()  # saves an f32 snapshot

    core = await open_core("i8")
    after = await top10(core)
    graph = core.backend._tenants["t"].graph  # type: ignore[attr-defined]
    assert str(graph.dtype).endswith("I8")  # the f32 snapshot was not reused
    exact = [[f"p{i}" for i in np.argsort(-(vecs @ q))[:10]] for q in queries]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(after, exact, strict=True)])
    assert recall >= 0.95
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(after, before, strict=True)]) >= 0.95
    await core.backend.close()


async def test_every_asset_is_found_by_its_own_vector_after_batches_and_after_a_rebuild(
    tmp_path: Path,
) -> None:
    """No stored asset is unreachable in the graph: usearch's concurrent add() strands some nodes that no
    search finds at any ef (unum-cloud/USearch#735; ~3 of 5,000 here), so graphs are built serially,
    and a snapshot stamped by the older concurrent build is rebuilt rather than trusted."""
    rng = np.random.default_rng(7)
    model = ModelRef("m", "1")
    settings = SearchSettings(data_dir=str(tmp_path))
    vecs = rng.standard_normal((5000, 12)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    tenant_dir = tmp_path / "tenants" / "t"

    async def open_core() -> SearchCore:
        # exact_cutoff 0: every query goes through the graph.
        backend = EmbeddedBackend(tmp_path, HnswParams(16, 64, 64, 0, "i8"))
        await backend.start()
        return SearchCore(settings, backend, MemoryCache(60, 10))

    async def unreachable(core: SearchCore) -> list[int]:
        missing = []
        for i in range(len(vecs)):
            plan = await core.plan(
                **_plan_kwargs(text="", vector=vecs[i], vector_model=model, alpha=1.0, limit=1)
            )  # type: ignore[arg-type]
            hits = (await core.query("t", plan, skip_cache=True)).hits
            if not hits or hits[0].doc.asset_id != f"p{i}":
                missing.append(i)
        return missing

    core = await open_core()
    records = [AssetRecord(AssetDoc(asset_id=f"p{i}", embedding_model=model), v) for i, v in enumerate(vecs)]
    for start in range(0, len(records), settings.max_batch):
        await core.upsert("t", records[start : start + settings.max_batch])
    assert await unreachable(core) == []
    await core.backend.close()  # saves the graph under this build's stamp
    seq = (tenant_dir / "vectors.seq").read_text().split()[0]
    (tenant_dir / "vectors.seq").write_text(seq)  # as the concurrent build stamped it
    core = await open_core()
    assert await unreachable(core) == []
    assert not (tenant_dir / "vectors.seq").exists()  # the snapshot was not trusted: rebuilt from records
    await core.backend.close()


def test_graph_dtype_setting_reaches_the_embedded_backend(tmp_path: Path) -> None:
    from services.search.backends import make_backend

    for dtype in ("i8", "f32"):
        settings = SearchSettings(data_dir=str(tmp_path / dtype), hnsw_graph_dtype=dtype)
        backend = make_backend(settings)
        assert isinstance(backend, EmbeddedBackend) and backend.hnsw.graph_dtype == dtype
    with pytest.raises(ValueError, match="hnsw_graph_dtype"):
        SearchSettings(data_dir=str(tmp_path), hnsw_graph_dtype="u4")
