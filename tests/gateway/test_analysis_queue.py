"""Deferred analysis (analysis_mode=deferred) in the gateway, over the fakes of tests/gateway/fakes.py
(whose search honours analysis states as the search service does; tests/search/test_analysis_state.py
proves that on both real backends) and the real local object store: acknowledged before analysis,
invisible until analysed, resumed from the index, retried and then failed closed."""

from __future__ import annotations

import asyncio
import hashlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from services.common.errors import NotFound
from services.gateway.analysis import Analysis
from services.gateway.analysis_queue import ANALYSIS_ITEMS
from services.gateway.backends.blobs import BlobKey
from services.gateway.domain import AnalysisState, ImageVariant, IngestOutcome, SearchQuery
from tests.gateway.fakes import TEXT_GREEN, UNSAFE_RED, FakeAnalyzer, png
from tests.gateway.test_core import ALICE, URSULA, World, ids, item, run_ingest


def deferred(**settings: object) -> World:
    return World(analysis_mode="deferred", analysis_retry_backoff_s=0.0, **settings)


async def settled(w: World, timeout_s: float = 10.0) -> None:
    """Until the worker holds nothing and nothing in the store is pending."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while w.gw.analysis.held or any(
        s.asset.analysis_state is AnalysisState.PENDING for s in w.search.store.values()
    ):
        assert loop.time() < end, "analysis did not finish"
        await asyncio.sleep(0.01)


def state(w: World, asset_id: str) -> AnalysisState:
    return w.search.store[("acme", asset_id)].asset.analysis_state


async def test_acknowledged_pending_invisible_everywhere_until_analysed() -> None:
    w = deferred()
    acks = await run_ingest(
        w, [item("unsafe", "beach", color=UNSAFE_RED), item("sign", "road", color=TEXT_GREEN)]
    )
    # Stored, encoded, acknowledged: no detector ran yet.
    assert {a.outcome for a in acks.values()} == {IngestOutcome.CREATED}
    assert {a.analysis_state for a in acks.values()} == {AnalysisState.PENDING}
    assert acks["sign"].ocr_text == "" and acks["unsafe"].safety_labels == [] and w.analyzer.calls == 0
    assert state(w, "sign") is AnalysisState.PENDING
    for who in (ALICE, URSULA):
        for text in ("beach", "road", "exit"):
            page = await w.gw.search(who, SearchQuery(text=text, include_unsafe=who is URSULA))
            assert ids(page) == []
        for asset_id in ("unsafe", "sign"):
            with pytest.raises(NotFound):
                await w.gw.get_asset(who, asset_id)
            with pytest.raises(NotFound):
                await w.gw.get_asset_image(who, asset_id, ImageVariant.THUMBNAIL)
    # The same bytes under another id: the pending holder is not named (the caller cannot see it).
    again = await run_ingest(w, [item("sign-copy", "road", color=TEXT_GREEN)])
    assert again["sign-copy"].outcome is IngestOutcome.CREATED and again["sign-copy"].duplicate_of == ""

    w.gw.analysis.start()
    try:
        await settled(w)
    finally:
        await w.gw.analysis.close()
    assert w.analyzer.calls == 3
    assert state(w, "sign") is AnalysisState.ANALYSED
    assert w.search.store[("acme", "unsafe")].asset.safety_score == 0.9
    # (the two copies are one result: the rerank folds duplicates)
    assert ids(await w.gw.search(ALICE, SearchQuery(text="exit"))) in (["sign"], ["sign-copy"])
    # Analysed unsafe content follows the policy, as inline analysis does.
    assert "unsafe" not in ids(await w.gw.search(ALICE, SearchQuery(text="beach")))
    assert "unsafe" in ids(await w.gw.search(URSULA, SearchQuery(text="beach", include_unsafe=True)))
    asset, _ = await w.gw.get_asset(ALICE, "sign")
    assert asset.ocr_text == "exit 42" and asset.analysis_state is AnalysisState.ANALYSED


async def test_a_restarted_worker_resumes_every_pending_asset_from_the_index() -> None:
    w = deferred()
    colors = [TEXT_GREEN if i % 2 else (9, 9, 9) for i in range(6)]
    await run_ingest(w, [item(f"p{i}", f"thing{i}", color=c) for i, c in enumerate(colors)])
    # A fresh gateway over the same index and object store: nothing in memory, all pending.
    # It lists them in pages of 2 (its upsert batch): a full page is followed by the next at once.
    fresh = deferred(search=w.search, blob_dir=w.blob_dir, ingest_upsert_batch=2)
    assert fresh.gw.analysis.held == 0
    fresh.gw.analysis.start()
    try:
        await settled(fresh)
    finally:
        await fresh.gw.analysis.close()
    assert fresh.analyzer.calls == 6
    assert {state(w, f"p{i}") for i in range(6)} == {AnalysisState.ANALYSED}
    texts = [w.search.store[("acme", f"p{i}")].asset.ocr_text for i in range(6)]
    assert texts == ["", "exit 42"] * 3
    asset, _ = await fresh.gw.get_asset(ALICE, "p3")
    assert asset.ocr_text == "exit 42"


class FlakyAnalyzer(FakeAnalyzer):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def analyze(self, rgb: np.ndarray) -> Analysis:
        if self.failures:
            self.failures -= 1
            self.calls += 1
            raise RuntimeError("detector crashed")
        return await super().analyze(rgb)


async def test_a_failing_analysis_is_retried_then_fails_closed_and_a_resend_retries_it() -> None:
    w = deferred(analysis_retry_attempts=3)
    w.analyzer = FlakyAnalyzer(failures=2)  # two failed tries, then fine
    w.gw.analysis._analyzer = w.analyzer
    failed_before = ANALYSIS_ITEMS.labels("failed")._value.get()
    await run_ingest(w, [item("sign", "road", color=TEXT_GREEN)])
    w.gw.analysis.start()
    try:
        await settled(w)
        assert state(w, "sign") is AnalysisState.ANALYSED and w.analyzer.calls == 3

        w.analyzer.failures = 10  # never succeeds within 3 tries
        await run_ingest(w, [item("broken", "gate", color=TEXT_GREEN, uri="x")])
        await settled(w)
        assert state(w, "broken") is AnalysisState.FAILED
        assert ANALYSIS_ITEMS.labels("failed")._value.get() == failed_before + 1
        assert "broken" not in ids(await w.gw.search(ALICE, SearchQuery(text="gate")))
        with pytest.raises(NotFound):
            await w.gw.get_asset(ALICE, "broken")

        w.analyzer.failures = 0  # fixed: re-sending the same bytes queues the analysis again
        acks = await run_ingest(w, [item("broken", "gate", color=TEXT_GREEN, uri="x")])
        assert acks["broken"].outcome is IngestOutcome.UPDATED
        assert acks["broken"].analysis_state is AnalysisState.PENDING
        await settled(w)
        assert state(w, "broken") is AnalysisState.ANALYSED
        assert ids(await w.gw.search(ALICE, SearchQuery(text="gate")))[0] == "broken"
    finally:
        await w.gw.analysis.close()


async def test_an_unreadable_original_fails_closed() -> None:
    w = deferred()
    await run_ingest(w, [item("gone", "lake")])
    sha = w.search.store[("acme", "gone")].asset.content_sha256
    await w.gw.images.forget("acme", sha)  # the original is lost
    w.gw.analysis.start()
    try:
        await settled(w)
    finally:
        await w.gw.analysis.close()
    assert state(w, "gone") is AnalysisState.FAILED and w.analyzer.calls == 0


async def test_an_item_re_ingested_with_new_bytes_is_not_given_the_old_analysis() -> None:
    w = deferred()
    await run_ingest(w, [item("x", "road", color=TEXT_GREEN)])
    old_sha = w.search.store[("acme", "x")].asset.content_sha256
    await run_ingest(w, [item("x", "road", color=(9, 9, 9))])  # new bytes, still pending
    new_sha = w.search.store[("acme", "x")].asset.content_sha256
    assert new_sha != old_sha and new_sha == hashlib.sha256(png("road", (9, 9, 9))).hexdigest()
    w.gw.analysis.start()
    try:
        await settled(w)
    finally:
        await w.gw.analysis.close()
    stored = w.search.store[("acme", "x")].asset
    assert stored.analysis_state is AnalysisState.ANALYSED and stored.ocr_text == ""  # not the green sign's


async def test_inline_mode_analyses_before_the_acknowledgement() -> None:
    w = World(analysis_mode="inline")
    acks = await run_ingest(w, [item("sign", "road", color=TEXT_GREEN)])
    assert acks["sign"].analysis_state is AnalysisState.ANALYSED and acks["sign"].ocr_text == "exit 42"
    assert ids(await w.gw.search(ALICE, SearchQuery(text="exit"))) == ["sign"]


def test_deferred_analysis_threads_run_at_a_lower_priority() -> None:
    """analysis_nice: the detectors' threads are niced (Linux, per thread), the rest of the process is not."""
    import os
    import threading

    from services.gateway.analysis import ImageAnalyzer

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    base = os.getpriority(os.PRIO_PROCESS, 0)
    for nice in (0, 7):
        a = ImageAnalyzer(
            safety=False, ocr=False, threads=1, ocr_max_side=640, ocr_min_confidence=0.6, nice=nice
        )
        try:
            assert a._pool.submit(niceness).result() == min(19, base + nice)
        finally:
            a.close()
    assert niceness() == base


async def test_deleting_a_pending_asset_removes_it_and_its_images() -> None:
    w = deferred()
    await run_ingest(w, [item("fresh", "kite", color=TEXT_GREEN)])
    sha = w.search.store[("acme", "fresh")].asset.content_sha256
    assert await w.gw.images.kept("acme", sha)
    await w.gw.delete_asset(ALICE, "fresh")
    assert ("acme", "fresh") not in w.search.store
    assert not await w.gw.images.kept("acme", sha)
    w.gw.analysis.start()  # the queued job finds nothing to analyse
    try:
        await settled(w)
    finally:
        await w.gw.analysis.close()
    assert ("acme", "fresh") not in w.search.store and w.analyzer.calls == 0


async def test_after_a_switch_to_inline_mode_leftover_pending_and_failed_assets_are_analysed() -> None:
    w = deferred(analysis_retry_attempts=1)
    w.analyzer = FlakyAnalyzer(failures=1)
    w.gw.analysis._analyzer = w.analyzer
    await run_ingest(w, [item("failed", "gate", color=TEXT_GREEN)])
    w.gw.analysis.start()
    try:
        await settled(w)
    finally:
        await w.gw.analysis.close()
    assert state(w, "failed") is AnalysisState.FAILED
    await run_ingest(w, [item("left", "road", color=TEXT_GREEN)])  # pending when the mode changes
    inline = World(analysis_mode="inline", search=w.search, blob_dir=w.blob_dir)
    inline.gw.analysis.start()
    try:
        acks = await run_ingest(inline, [item("failed", "gate", color=TEXT_GREEN)])  # re-sent
        assert acks["failed"].analysis_state is AnalysisState.PENDING
        await settled(inline)
    finally:
        await inline.gw.analysis.close()
    assert state(w, "left") is AnalysisState.ANALYSED and state(w, "failed") is AnalysisState.ANALYSED


async def test_the_acknowledgement_does_not_wait_for_the_thumbnail_the_worker_stores_it() -> None:
    w = deferred()
    acks = await run_ingest(w, [item("sign", "road", color=TEXT_GREEN)])
    sha = acks["sign"].content_sha256
    assert await w.blobs.stat(BlobKey("acme", sha, ImageVariant.ORIGINAL)) is not None
    assert await w.blobs.stat(BlobKey("acme", sha, ImageVariant.THUMBNAIL)) is None  # not made yet
    w.gw.analysis.start()
    try:
        await settled(w)
    finally:
        await w.gw.analysis.close()
    # Stored before the asset became visible, then served as it is.
    stored = await w.blobs.get(BlobKey("acme", sha, ImageVariant.THUMBNAIL))
    assert stored is not None and stored.content_type == "image/jpeg"
    thumb = await w.gw.get_asset_image(ALICE, "sign", ImageVariant.THUMBNAIL)
    assert thumb.data == stored.data


async def test_a_visible_asset_without_a_thumbnail_gets_one_made_from_its_original() -> None:
    w = World(analysis_mode="inline")
    acks = await run_ingest(w, [item("sign", "road", color=TEXT_GREEN)])
    key = BlobKey("acme", acks["sign"].content_sha256, ImageVariant.THUMBNAIL)
    await w.blobs.delete(key)  # e.g. lost by the object store
    thumb = await w.gw.get_asset_image(ALICE, "sign", ImageVariant.THUMBNAIL)
    assert (
        thumb.content_type == "image/jpeg" and thumb.content_sha256 == hashlib.sha256(thumb.data).hexdigest()
    )
    stored = await w.blobs.get(key)
    assert stored is not None and stored.data == thumb.data  # kept for the next read


class _CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="analysis-test")
        self.jobs: list[str] = []

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        self.jobs.append(getattr(fn, "__name__", repr(fn)))
        return super().submit(fn, *args, **kwargs)


class _AnalyzerWithThreads(FakeAnalyzer):
    def __init__(self) -> None:
        super().__init__()
        self.executor = _CountingExecutor()  # type: ignore[assignment]


async def test_the_worker_decodes_and_makes_thumbnails_on_the_analysis_threads() -> None:
    """With deferred analysis the acknowledgements come first: every CPU step of the worker (decode,
    detectors, thumbnail) runs on the analyzer's threads, which analysis_nice lowers."""
    w = deferred()
    analyzer = _AnalyzerWithThreads()
    w.analyzer = analyzer
    w.gw.analysis._analyzer = analyzer
    await run_ingest(w, [item("sign", "road", color=TEXT_GREEN), item("plain", "sea", color=(9, 9, 9))])
    assert analyzer.executor.jobs == []  # nothing of the worker's before it runs
    w.gw.analysis.start()
    try:
        await settled(w)
    finally:
        await w.gw.analysis.close()
        analyzer.executor.shutdown()
    assert sorted(analyzer.executor.jobs) == ["decode_rgb"] * 2 + ["make_thumbnail"] * 2
    thumb = await w.gw.get_asset_image(ALICE, "sign", ImageVariant.THUMBNAIL)
    assert thumb.data
