"""Deferred analysis end to end (analysis_mode=deferred): real encoder, search service, gateway, NudeNet
and RapidOCR, on the embedded backend and (integration) on Weaviate with Redis.

1. With the analysis worker held (analysis_paused), items are acknowledged CREATED + PENDING and, while
   searches, image searches, GetAsset and GetAssetImage run concurrently, none of them ever returns one.
2. The gateway is killed (SIGKILL) with every item still pending; restarted unpaused, it resumes them
   from the index. While they turn visible, every asset any search returns is ANALYSED, and each ends
   with the labels and OCR text the detectors give its original (checked against an in-process run of
   the same analyzer), its OCR text keyword-searchable.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from imagesearch.v1 import common_pb2, gateway_pb2, search_pb2

from services.gateway.analysis import ImageAnalyzer, decode_rgb
from tests.gateway.suite import Suite, missing_prerequisites
from tests.gateway.test_e2e import ALICE, text_image

WORDS = ["HARBOR", "QUARRY", "MEADOW", "GLACIER", "CANYON", "ORCHARD"]
STATE = common_pb2.AnalysisState
URSULA = [("authorization", "Bearer acme-ursula")]  # may see unsafe content: sees every analysed asset


@pytest.fixture(scope="module", params=["embedded", pytest.param("stack", marks=pytest.mark.integration)])
def suite(request: pytest.FixtureRequest) -> Iterator[Suite]:
    if why := missing_prerequisites():
        pytest.skip(why)
    stack = request.getfixturevalue("stack") if request.param == "stack" else None
    env = {
        "IMAGESEARCH_GATEWAY_ANALYSIS_MODE": "deferred",
        "IMAGESEARCH_GATEWAY_ANALYSIS_PAUSED": "true",
        "IMAGESEARCH_GATEWAY_ANALYSIS_SCAN_INTERVAL_S": "1",
        "IMAGESEARCH_GATEWAY_PAGE_CACHE_ENTRIES": "0",  # every search reaches the search service
    }
    s = Suite(request.param, stack, gateway_env=env).start()
    try:
        yield s
    finally:
        s.stop()


def _requests() -> list[gateway_pb2.IngestRequest]:
    return [
        gateway_pb2.IngestRequest(
            asset_id=f"sign-{w.lower()}",
            image=text_image(f"{w} {i}"),
            caption=f"a painted sign number {i}",
            license=common_pb2.License(name="MIT"),
        )
        for i, w in enumerate(WORDS)
    ]


class Prober:
    """Searches and reads, in a thread, until stopped; records every asset any of them returned."""

    def __init__(self, suite: Suite, reqs: list[gateway_pb2.IngestRequest]) -> None:
        self.stub = suite.gateway_stub()
        self.reqs = reqs
        self.returned: list[Any] = []  # (call, asset message)
        self.calls = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.is_set():
            for r in self.reqs:
                self._one("search text", lambda r=r: self._search(text=f"{r.caption} {r.asset_id[5:]}"))
                self._one("search image", lambda r=r: self._search(image=r.image))
                self._one("get asset", lambda r=r: [self._get(r.asset_id)])
                self._one("get image", lambda r=r: self._image(r.asset_id))

    def _search(self, **kw: Any) -> list[Any]:
        req = gateway_pb2.SearchRequest(page_size=20, include_unsafe=True, **kw)
        return [x.asset for x in self.stub.Search(req, metadata=URSULA, timeout=30).results]

    def _get(self, asset_id: str) -> Any:
        return self.stub.GetAsset(
            gateway_pb2.GetAssetRequest(asset_id=asset_id), metadata=URSULA, timeout=30
        ).asset

    def _image(self, asset_id: str) -> list[Any]:
        req = gateway_pb2.GetAssetImageRequest(asset_id=asset_id, variant=gateway_pb2.IMAGE_VARIANT_THUMBNAIL)
        list(self.stub.GetAssetImage(req, metadata=URSULA, timeout=30))
        return [common_pb2.Asset(asset_id=asset_id, analysis_state=STATE.ANALYSIS_STATE_ANALYSED)]

    def _one(self, call: str, fn: Any) -> None:
        if self._stop.is_set():
            return
        self.calls += 1
        try:
            for asset in fn():
                if asset.asset_id.startswith("sign-"):
                    self.returned.append((call, asset))
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                self.errors.append(f"{call}: {exc.code().name} {exc.details()}")


def _visible(suite: Suite, asset_id: str) -> Any | None:
    try:
        return (
            suite.gateway_stub()
            .GetAsset(gateway_pb2.GetAssetRequest(asset_id=asset_id), metadata=URSULA, timeout=30)
            .asset
        )
    except grpc.RpcError as exc:
        assert exc.code() is grpc.StatusCode.NOT_FOUND, exc
        return None


def test_pending_assets_are_never_returned_and_a_killed_gateway_resumes_them(suite: Suite) -> None:
    reqs = _requests()
    acks = list(suite.gateway_stub().Ingest(iter(reqs), metadata=ALICE, timeout=300))
    assert [(a.outcome, a.analysis_state) for a in acks] == [
        (gateway_pb2.INGEST_OUTCOME_CREATED, STATE.ANALYSIS_STATE_PENDING)
    ] * len(reqs), acks
    assert all(not a.ocr_text and not a.safety_labels for a in acks)

    # 1. Held: nothing returns them, however asked.
    with Prober(suite, reqs) as held:
        time.sleep(4)
        until = time.monotonic() + 60  # a busy runner: at least four rounds of every kind of call
        while held.calls < 4 * len(reqs) and time.monotonic() < until:
            time.sleep(0.5)
    assert held.calls >= 4 * len(reqs) and held.errors == [] and held.returned == []
    pending = suite.search_stub().ListPendingAnalysis(search_pb2.ListPendingAnalysisRequest(tenant="acme"))
    assert {p.asset_id for p in pending.assets} == {r.asset_id for r in reqs}

    # 2. Crash with everything pending; the restarted gateway resumes from the index.
    suite.restart_gateway(signal.SIGKILL, env={"IMAGESEARCH_GATEWAY_ANALYSIS_PAUSED": "false"})
    deadline = time.monotonic() + 180
    seen: dict[str, Any] = {}
    with Prober(suite, reqs) as racing:
        while len(seen) < len(reqs):
            assert time.monotonic() < deadline, f"only {sorted(seen)} became visible"
            for r in reqs:
                if r.asset_id not in seen and (asset := _visible(suite, r.asset_id)) is not None:
                    seen[r.asset_id] = asset
            time.sleep(0.2)
        time.sleep(1)
        until = time.monotonic() + 30  # the probes see the now-visible assets within a round
        while not racing.returned and time.monotonic() < until:
            time.sleep(0.5)
    assert racing.errors == [] and racing.calls > 0
    # Whatever any search or read returned while the analyses landed was analysed.
    assert racing.returned, "the racing searches never saw an asset"
    assert {a.analysis_state for _, a in racing.returned} == {STATE.ANALYSIS_STATE_ANALYSED}

    # Each with what the detectors find in its original (the same analyzer, in this process).
    analyzer = ImageAnalyzer(safety=True, ocr=True, threads=1, ocr_max_side=640, ocr_min_confidence=0.6)
    try:
        for r in reqs:
            want = asyncio.run(analyzer.analyze(decode_rgb(r.image)))
            got = seen[r.asset_id]
            assert got.analysis_state == STATE.ANALYSIS_STATE_ANALYSED
            assert got.ocr_text == want.ocr_text and r.asset_id[5:].upper() in got.ocr_text
            assert [(s.label, round(s.score, 3)) for s in got.safety_labels] == [
                (s.label, round(s.score, 3)) for s in want.safety_labels
            ]
    finally:
        analyzer.close()
    # The OCR text is keyword-searchable now.
    found = suite.gateway_stub().Search(
        gateway_pb2.SearchRequest(text="glacier", page_size=5), metadata=ALICE, timeout=30
    )
    assert "sign-glacier" in [x.asset.asset_id for x in found.results]
    assert (
        list(
            suite.search_stub()
            .ListPendingAnalysis(search_pb2.ListPendingAnalysisRequest(tenant="acme"))
            .assets
        )
        == []
    )


def test_the_cli_says_which_items_are_not_visible_yet(
    suite: Suite, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from services import cli

    assert suite.gateway is not None
    (tmp_path / "dock.png").write_bytes(text_image("DOCK"))
    common = ["--gateway", suite.gateway.address, "--api-key", "acme-alice"]
    assert cli.main(["ingest", str(tmp_path), "--license", "MIT", "--quiet", *common]) == 0
    out = capsys.readouterr().out
    assert "created 1" in out and "1 stored but not visible yet" in out
