"""The per-caller preference boost end to end, on the real gateway process (embedded, SQLite feedback
store) with the boost switched on: an asset alice clicks moves up in her next search for the same
words, with a rerank note saying why, while another caller of the same tenant keeps the ranking
everyone had (and the boost stays off unless configured: tests/gateway/test_preferences.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from imagesearch.v1 import common_pb2, gateway_pb2

from tests.gateway.suite import Suite, missing_prerequisites, open_data_sample

ALICE = [("authorization", "Bearer acme-alice")]
READER = [("authorization", "Bearer acme-reader")]  # another caller of tenant acme
QUERY = "a smiling face"  # no caption holds these words: the vector leg ranks all twelve assets


@pytest.fixture(scope="module")
def suite() -> Iterator[Suite]:
    why = missing_prerequisites()
    if why:
        pytest.skip(why)
    s = Suite("embedded", gateway_env={"IMAGESEARCH_GATEWAY_PREFERENCE_BOOST_WEIGHT": "0.5"}).start()
    try:
        items = open_data_sample(groups=4, extra=0)
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


def _ranking(suite: Suite, md: list[tuple[str, str]]) -> gateway_pb2.SearchResponse:
    resp: gateway_pb2.SearchResponse = suite.gateway_stub().Search(
        gateway_pb2.SearchRequest(text=QUERY, page_size=12), metadata=md, timeout=30
    )
    return resp


def _ids(resp: gateway_pb2.SearchResponse) -> list[str]:
    return [r.asset.asset_id for r in resp.results]


def test_a_clicked_asset_moves_up_for_that_caller_only(suite: Suite) -> None:
    before = _ranking(suite, ALICE)
    others_before = _ids(_ranking(suite, READER))
    assert _ids(before) == others_before, "without clicks both callers get the same ranking"
    assert len(before.results) >= 4, _ids(before)
    low = len(before.results) - 1  # alice clicks her last result
    clicked = before.results[low].asset.asset_id
    ack = suite.gateway_stub().RecordFeedback(
        gateway_pb2.RecordFeedbackRequest(
            events=[
                gateway_pb2.FeedbackEvent(
                    event_id=f"pref-{uuid.uuid4().hex}",
                    kind=gateway_pb2.FEEDBACK_KIND_CLICK,
                    search_id=before.search_id,
                    asset_id=clicked,
                    rank=low + 1,
                )
            ]
        ),
        metadata=ALICE,
        timeout=30,
    )
    assert [r.outcome for r in ack.results] == [gateway_pb2.FeedbackOutcome.FEEDBACK_OUTCOME_RECORDED]

    after = _ranking(suite, ALICE)
    assert clicked in _ids(after) and _ids(after).index(clicked) < low, (_ids(before), _ids(after))
    mine = after.results[_ids(after).index(clicked)]
    assert mine.scores.boost == pytest.approx(0.5)
    assert any("preference boost" in n for n in mine.rerank_notes), list(mine.rerank_notes)
    assert all(r.scores.boost == 0.0 for r in after.results if r.asset.asset_id != clicked)
    # The other caller of the same tenant: the ranking everyone had, unboosted.
    others = _ranking(suite, READER)
    assert _ids(others) == others_before
    assert all(r.scores.boost == 0.0 for r in others.results)
