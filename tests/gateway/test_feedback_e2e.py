"""Experiments and feedback end to end, on the real gateway process: the embedded default (SQLite store
under the gateway's data dir) and the local stack's Redis store.

An experiment on tenant acme splits sessions between two arms; each search names its arm and a
search_id; a click for one arm moves that arm's CTR on /metrics (and not the other's); a duplicate
event_id counts once; another tenant's feedback for acme's search is refused without revealing it; and
a restarted gateway still knows the search, the event and the totals.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from imagesearch.v1 import common_pb2, gateway_pb2, search_pb2

from devstack import Stack, StackInfo
from services.evaluation.online import OnlineReport, online_report
from services.gateway.experiments import unit_fraction
from tests.gateway.suite import Suite, missing_prerequisites, open_data_sample
from tests.service_process import REPO_ROOT

ALICE = [("authorization", "Bearer acme-alice")]
GUS = [("authorization", "Bearer globex-gus")]
OUTCOME = gateway_pb2.FeedbackOutcome
EXPERIMENT = {
    "experiments": [
        {
            "name": "fb",
            "tenants": ["acme"],
            "unit": "session",
            "arms": [
                {"name": "keyword", "share": 0.4, "alpha": 0.0},
                {"name": "hybrid", "share": 0.4},
                # A fusion arm, first-stage order shown as is (ranked fusion's scores are w / (rank + 60)).
                {"name": "ranked", "share": 0.2, "fusion": "ranked", "rerank": {"disable": True}},
            ],
        }
    ]
}


def _session_for(arm: str) -> str:
    """A session id that the experiment puts in `arm` (found by the same hash the gateway uses)."""
    lower, upper = {"keyword": (0.0, 0.4), "hybrid": (0.4, 0.8), "ranked": (0.8, 1.0)}[arm]
    for i in range(1000):
        session = f"session-{i}"
        if lower + 1e-9 < unit_fraction("fb", "acme", session) < upper - 1e-9:
            return session
    raise AssertionError("no session found")


@pytest.fixture(scope="module", params=["sqlite", pytest.param("redis", marks=pytest.mark.integration)])
def suite(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    why = missing_prerequisites()
    if why:
        pytest.skip(why)
    experiments = tmp_path_factory.mktemp("experiments") / "experiments.json"
    experiments.write_text(json.dumps(EXPERIMENT))
    env = {"IMAGESEARCH_GATEWAY_EXPERIMENTS_FILE": str(experiments)}
    manager: Stack | None = None
    info: StackInfo | None = None
    if request.param == "redis":
        if os.environ.get("IMAGESEARCH_SKIP_STACK", "") not in ("", "0"):
            pytest.skip("IMAGESEARCH_SKIP_STACK is set")
        manager = Stack(REPO_ROOT)
        info = manager.up(only="redis")
        assert info.redis_url
        env |= {
            "IMAGESEARCH_GATEWAY_FEEDBACK_BACKEND": "redis",
            "IMAGESEARCH_GATEWAY_FEEDBACK_REDIS_URL": info.redis_url,
            "IMAGESEARCH_GATEWAY_FEEDBACK_KEY_PREFIX": f"test-feedback-e2e:{uuid.uuid4().hex}:",
        }
    s = Suite("embedded", gateway_env=env).start()
    try:
        items = open_data_sample(groups=2, extra=0)
        s.ingest_all_created(
            (
                gateway_pb2.IngestRequest(
                    asset_id=i.asset_id,
                    image=i.data,
                    caption=i.caption,
                    license=common_pb2.License(name="MIT"),
                )
                for i in items
            ),
            ALICE,
        )
        yield s
    finally:
        s.stop()
        if manager is not None and info is not None:
            manager.down(only=info.started)


def _search(suite: Suite, arm: str, md: Any = ALICE) -> gateway_pb2.SearchResponse:
    caption = open_data_sample(groups=2, extra=0)[0].caption
    metadata = [*md, ("x-session-id", _session_for(arm))]
    resp: gateway_pb2.SearchResponse = suite.gateway_stub().Search(
        gateway_pb2.SearchRequest(text=caption, page_size=5), metadata=metadata, timeout=30
    )
    assert resp.results or md is not ALICE, "the sample's own caption finds something in acme"
    return resp


def _click(search: gateway_pb2.SearchResponse, event_id: str, rank: int = 1) -> gateway_pb2.FeedbackEvent:
    return gateway_pb2.FeedbackEvent(
        event_id=event_id,
        kind=gateway_pb2.FEEDBACK_KIND_CLICK,
        search_id=search.search_id,
        asset_id=search.results[rank - 1].asset.asset_id,
        rank=rank,
    )


def _feedback(suite: Suite, *events: gateway_pb2.FeedbackEvent, md: Any = ALICE) -> list[Any]:
    resp = suite.gateway_stub().RecordFeedback(
        gateway_pb2.RecordFeedbackRequest(events=list(events)), metadata=md, timeout=30
    )
    return list(resp.results)


def _report(suite: Suite) -> OnlineReport:
    assert suite.gateway is not None
    return online_report(f"http://127.0.0.1:{suite.gateway.metrics_port}/metrics")


def test_each_search_names_its_arm_and_a_search_id(suite: Suite) -> None:
    keyword, hybrid = _search(suite, "keyword"), _search(suite, "hybrid")
    assert (keyword.arm, hybrid.arm) == ("fb/keyword", "fb/hybrid")
    assert keyword.search_id and hybrid.search_id and keyword.search_id != hybrid.search_id
    # The keyword arm's alpha 0 reached the first stage: no vector leg.
    assert all(r.scores.vector == 0.0 for r in keyword.results)
    # Outside the experiment (another tenant, no assets): control, and still a search_id.
    outside = _search(suite, "hybrid", md=GUS)
    assert outside.arm == "control" and outside.search_id
    assert suite.gateway is not None
    # The audit line names the arm; audit lines are written in batches off the request path.
    deadline = time.monotonic() + 10
    while not re.search(r'"arm":\s*"fb/keyword"', suite.gateway.logs()):
        assert time.monotonic() < deadline, "no audit line names the arm"
        time.sleep(0.1)


def test_a_fusion_arm_reaches_the_first_stage_and_the_callers_fusion_still_wins(suite: Suite) -> None:
    ranked = _search(suite, "ranked")
    assert ranked.arm == "fb/ranked"
    # Ranked fusion: each leg adds at most weight / 60, so no fused score exceeds 1 / 60 (weights sum to 1).
    assert all(0.0 < r.scores.fused <= 1 / 60 + 1e-6 for r in ranked.results), [
        r.scores.fused for r in ranked.results
    ]
    caption = open_data_sample(groups=2, extra=0)[0].caption
    metadata = [*ALICE, ("x-session-id", _session_for("ranked"))]
    explicit = suite.gateway_stub().Search(
        gateway_pb2.SearchRequest(text=caption, page_size=5, fusion=search_pb2.FUSION_TYPE_ADAPTIVE),
        metadata=metadata,
        timeout=30,
    )
    assert explicit.arm == "fb/ranked"
    # Adaptive fusion gives its best full keyword match a fused score far above ranked fusion's ceiling.
    assert explicit.results[0].scores.fused > 0.1, [r.scores.fused for r in explicit.results]
    assert not explicit.cached, "another fusion is another question: not the arm's cached page"


def test_a_cached_page_gets_its_own_search_id_on_every_hit(suite: Suite) -> None:
    first, again = _search(suite, "hybrid"), _search(suite, "hybrid")
    assert again.cached, "the same query again is served from the page cache"
    assert again.search_id and again.search_id != first.search_id
    assert again.arm == first.arm == "fb/hybrid"
    assert [r.asset.asset_id for r in again.results] == [r.asset.asset_id for r in first.results]


def test_a_click_moves_its_arms_ctr_and_a_duplicate_counts_once(suite: Suite) -> None:
    search = _search(suite, "hybrid")
    before = _report(suite)
    event = _click(search, f"click-{uuid.uuid4().hex}")
    assert [r.outcome for r in _feedback(suite, event)] == [OUTCOME.FEEDBACK_OUTCOME_RECORDED]
    assert [r.outcome for r in _feedback(suite, event)] == [OUTCOME.FEEDBACK_OUTCOME_DUPLICATE]
    after = _report(suite)
    hybrid0, hybrid1 = before.arm("fb/hybrid"), after.arm("fb/hybrid")
    assert hybrid1.click_through_rate > hybrid0.click_through_rate
    assert hybrid1.clicks == hybrid0.clicks + 1  # the duplicate did not count
    assert hybrid1.searches_clicked == hybrid0.searches_clicked + 1
    assert hybrid1.mrr_of_clicks > 0
    assert after.arm("fb/keyword").clicks == before.arm("fb/keyword").clicks
    assert "| fb/hybrid |" in after.markdown()


def test_another_tenants_feedback_is_refused_without_revealing_the_search(suite: Suite) -> None:
    search = _search(suite, "keyword")
    foreign = _click(search, f"gus-{uuid.uuid4().hex}")
    (result,) = _feedback(suite, foreign, md=GUS)
    assert result.outcome == OUTCOME.FEEDBACK_OUTCOME_FAILED
    assert result.error.code == grpc.StatusCode.NOT_FOUND.value[0]
    unknown = gateway_pb2.FeedbackEvent(
        event_id="x", kind=gateway_pb2.FEEDBACK_KIND_CLICK, search_id="never-issued", asset_id="a"
    )
    (unknown_result,) = _feedback(suite, unknown, md=GUS)
    assert result.error.message.replace(search.search_id, "ID") == unknown_result.error.message.replace(
        "never-issued", "ID"
    )
    assert "acme" not in result.error.message


def test_bad_calls_and_events_get_precise_invalid_argument(suite: Suite) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _feedback(suite)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events must hold 1-1000 events, got 0" in (info.value.details() or "")
    search = _search(suite, "keyword")
    rating = gateway_pb2.FeedbackEvent(
        event_id=f"r-{uuid.uuid4().hex}",
        kind=gateway_pb2.FEEDBACK_KIND_RATING,
        search_id=search.search_id,
        asset_id=search.results[0].asset.asset_id,
        rating=9,
    )
    good = _click(search, f"ok-{uuid.uuid4().hex}")
    bad, ok = _feedback(suite, rating, good)
    assert bad.outcome == OUTCOME.FEEDBACK_OUTCOME_FAILED
    assert bad.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert bad.error.message == "rating must be 1-5 for a rating event, got 9"
    assert ok.outcome == OUTCOME.FEEDBACK_OUTCOME_RECORDED


def test_feedback_survives_a_gateway_restart(suite: Suite) -> None:
    search = _search(suite, "hybrid")
    event = _click(search, f"durable-{uuid.uuid4().hex}")
    assert [r.outcome for r in _feedback(suite, event)] == [OUTCOME.FEEDBACK_OUTCOME_RECORDED]
    before = _report(suite).arm("fb/hybrid")
    suite.restart_gateway()
    after_restart = _report(suite).arm("fb/hybrid")
    # The durable all-time figures are back before any new feedback; process counters start over.
    assert after_restart.click_through_rate == pytest.approx(before.click_through_rate)
    assert after_restart.mrr_of_clicks == pytest.approx(before.mrr_of_clicks)
    assert after_restart.clicks == 0
    # The search is still known and the event still recorded.
    assert [r.outcome for r in _feedback(suite, event)] == [OUTCOME.FEEDBACK_OUTCOME_DUPLICATE]
    second = _click(search, f"durable-2-{uuid.uuid4().hex}", rank=1)
    assert [r.outcome for r in _feedback(suite, second)] == [OUTCOME.FEEDBACK_OUTCOME_RECORDED]


def test_restart_needs_no_tmp_path_outside_the_suite(suite: Suite) -> None:
    # The SQLite store lives under the suite's gateway data dir, never in the repository.
    if suite.gateway_env.get("IMAGESEARCH_GATEWAY_FEEDBACK_BACKEND") != "redis":
        assert (Path(suite.tmp) / "gateway" / "feedback.sqlite3").exists()


def test_more_like_this_is_served_by_the_arm_and_takes_feedback(suite: Suite) -> None:
    source = _search(suite, "keyword").results[0].asset.asset_id
    metadata = [*ALICE, ("x-session-id", _session_for("keyword"))]
    similar = suite.gateway_stub().SearchSimilar(
        gateway_pb2.SearchSimilarRequest(asset_id=source, page_size=3), metadata=metadata, timeout=30
    )
    assert similar.arm == "fb/keyword" and similar.search_id
    assert similar.results
    event = gateway_pb2.FeedbackEvent(
        event_id=f"similar-{uuid.uuid4().hex}",
        kind=gateway_pb2.FEEDBACK_KIND_DWELL,
        search_id=similar.search_id,
        asset_id=similar.results[0].asset.asset_id,
        dwell_ms=2500,
    )
    assert [r.outcome for r in _feedback(suite, event)] == [OUTCOME.FEEDBACK_OUTCOME_RECORDED]


def test_eval_online_reports_each_arms_ctr(suite: Suite, capsys: pytest.CaptureFixture[str]) -> None:
    from services.cli import main

    _feedback(suite, _click(_search(suite, "keyword"), f"online-{uuid.uuid4().hex}"))
    assert suite.gateway is not None
    metrics = f"http://127.0.0.1:{suite.gateway.metrics_port}/metrics"
    assert main(["eval", "--online", "--metrics", metrics]) == 0
    report = capsys.readouterr().out
    assert "fb/keyword" in report and "fb/hybrid" in report, report
