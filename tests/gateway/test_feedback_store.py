"""The feedback flow over both real stores: SQLite (a file in tmp_path) and Redis (the local stack's).

Validation per event, idempotence per event_id, tenant scope, the rank that counts, per-arm totals, and
durability: a store reopened on the same file (or a new client on the same Redis) keeps everything.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from devstack import Stack, StackInfo
from services.gateway.auth import Principal
from services.gateway.backends.feedback import FeedbackStore
from services.gateway.backends.feedback.redis import RedisFeedbackStore
from services.gateway.backends.feedback.sqlite import SqliteFeedbackStore
from services.gateway.domain import (
    Asset,
    FeedbackAck,
    FeedbackEvent,
    FeedbackKind,
    FeedbackOutcome,
    SearchPage,
    SearchResult,
    StageScores,
)
from services.gateway.experiments import Arm, Assignment
from services.gateway.feedback_flow import FeedbackFlow
from services.gateway.policy import AuditLog, Policy
from tests.service_process import REPO_ROOT

T = TypeVar("T")
ALICE = Principal("alice", "acme", frozenset({"search"}), 0.5, None, "api-key")
GUS = Principal("gus", "globex", frozenset({"search"}), 0.5, None, "api-key")
INGEST_ONLY = Principal("bot", "acme", frozenset({"ingest"}), 0.5, None, "api-key")


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    if os.environ.get("IMAGESEARCH_SKIP_STACK", "") not in ("", "0"):
        pytest.skip("IMAGESEARCH_SKIP_STACK is set")
    manager = Stack(REPO_ROOT)
    info: StackInfo = manager.up(only="redis")
    try:
        assert info.redis_url
        yield info.redis_url
    finally:
        manager.down(only=info.started)


StoreFactory = Callable[[], FeedbackStore]


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.integration)])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Opens the store anew on the same data each call (what a gateway restart does)."""
    if request.param == "sqlite":
        path = tmp_path / "feedback.sqlite3"
        return lambda: SqliteFeedbackStore(path, recent_clicks_kept=3)
    url = request.getfixturevalue("redis_url")
    prefix = f"test-feedback:{uuid.uuid4().hex}:"
    return lambda: RedisFeedbackStore(url, prefix, 1.0, recent_clicks_kept=3)


def run(coro: Awaitable[T]) -> T:
    async def go() -> T:
        return await coro

    return asyncio.run(go())


def _page(*asset_ids: str) -> SearchPage:
    return SearchPage([SearchResult(Asset(a, tenant="acme"), StageScores()) for a in asset_ids])


def _event(event_id: str, search_id: str, asset_id: str = "a2", **kw: Any) -> FeedbackEvent:
    fields: dict[str, Any] = {
        "kind": FeedbackKind.CLICK,
        "rank": 0,
        "dwell_ms": 0,
        "rating": 0,
        "occurred_at": None,
    }
    fields.update(kw)
    return FeedbackEvent(event_id=event_id, search_id=search_id, asset_id=asset_id, **fields)


async def _with_flow(store: FeedbackStore, body: Callable[[FeedbackFlow], Awaitable[T]]) -> T:
    flow = FeedbackFlow(store, Policy(AuditLog(sink=lambda _entry: None)), 3600.0, 1.0)
    try:
        return await body(flow)
    finally:
        await flow.close()
        await store.close()


def _outcomes(acks: list[FeedbackAck]) -> list[FeedbackOutcome]:
    return [a.outcome for a in acks]


def test_click_counts_once_and_moves_its_arms_ctr_and_mrr(open_store: StoreFactory) -> None:
    arm = Assignment(Arm("exp/b"), "exp", "caller")

    async def body(flow: FeedbackFlow) -> None:
        s1 = await flow.served(ALICE, "search", arm, _page("a1", "a2", "a3"))
        s2 = await flow.served(ALICE, "search", arm, _page("a1", "a2"))
        before = (await flow.store.arm_totals())["exp/b"]
        assert (before.searches, before.clicks, before.click_through_rate) == (2, 0, 0.0)
        acks = await flow.record(
            ALICE,
            [
                _event("e1", s1),  # rank 2 (filled in from the record)
                _event("e1", s1),  # the same event again, in the same batch
                _event("e2", s1, "a1", rank=1),  # a second click on the same search
                _event("e3", s1, "a3", kind=FeedbackKind.DWELL, dwell_ms=1500),
                _event("e4", s2, "a1", kind=FeedbackKind.RATING, rating=5),
            ],
        )
        assert _outcomes(acks) == [
            FeedbackOutcome.RECORDED,
            FeedbackOutcome.DUPLICATE,
            FeedbackOutcome.RECORDED,
            FeedbackOutcome.RECORDED,
            FeedbackOutcome.RECORDED,
        ]
        again = await flow.record(ALICE, [_event("e1", s1)])  # a retried call
        assert _outcomes(again) == [FeedbackOutcome.DUPLICATE]
        after = (await flow.store.arm_totals())["exp/b"]
        assert after.searches == 2
        assert after.clicks == 2 and after.clicked_searches == 1
        assert after.click_through_rate == pytest.approx(0.5)
        assert after.mrr_of_clicks == pytest.approx((1 / 2 + 1 / 1) / 2)
        assert after.events == {"click": 2, "dwell": 1, "rating": 1}

    run(_with_flow(open_store(), body))


def test_each_callers_recent_clicks_are_kept_bounded_newest_first(open_store: StoreFactory) -> None:
    arm = Assignment(Arm("control"))
    bob = Principal("bob", "acme", frozenset({"search"}), 0.5, None, "api-key")

    async def body(flow: FeedbackFlow) -> None:
        s1 = await flow.served(ALICE, "search", arm, _page("a1", "a2", "a3", "a4", "a5"))
        await flow.record(ALICE, [_event("c1", s1, "a1"), _event("c2", s1, "a2"), _event("c3", s1, "a3")])
        await flow.record(ALICE, [_event("c1", s1, "a1")])  # a retried event is not a new click
        await flow.record(ALICE, [_event("d1", s1, "a5", kind=FeedbackKind.DWELL, dwell_ms=900)])
        assert await flow.store.recent_clicks("acme", "alice") == ["a3", "a2", "a1"]
        await flow.record(ALICE, [_event("c4", s1, "a4")])  # the bound (3) drops the oldest
        assert await flow.store.recent_clicks("acme", "alice") == ["a4", "a3", "a2"]
        await flow.record(bob, [_event("b1", s1, "a5")])
        assert await flow.store.recent_clicks("acme", "bob") == ["a5"]
        assert await flow.store.recent_clicks("acme", "alice") == ["a4", "a3", "a2"]
        assert await flow.store.recent_clicks("globex", "alice") == []

    run(_with_flow(open_store(), body))


def test_feedback_is_durable_across_a_reopen(open_store: StoreFactory) -> None:
    arm = Assignment(Arm("control"))

    async def first(flow: FeedbackFlow) -> str:
        search_id = await flow.served(ALICE, "search", arm, _page("a1", "a2"))
        assert _outcomes(await flow.record(ALICE, [_event("d1", search_id)])) == [FeedbackOutcome.RECORDED]
        return search_id

    search_id = run(_with_flow(open_store(), first))

    async def second(flow: FeedbackFlow) -> None:
        # The search's record, the event and the totals all survived.
        assert _outcomes(await flow.record(ALICE, [_event("d1", search_id)])) == [FeedbackOutcome.DUPLICATE]
        assert _outcomes(await flow.record(ALICE, [_event("d2", search_id, "a1")])) == [
            FeedbackOutcome.RECORDED
        ]
        totals = (await flow.store.arm_totals())["control"]
        assert (totals.searches, totals.clicks, totals.clicked_searches) == (1, 2, 1)

    run(_with_flow(open_store(), second))


def test_concurrent_searches_are_stored_together_and_each_is_findable(open_store: StoreFactory) -> None:
    """Searches served while a record write is in flight are written by the next one (group commit);
    each search_id is returned only once stored: every one is findable, after a reopen too, and every
    search counts once for its arm."""
    arms = [Assignment(Arm("exp/a")), Assignment(Arm("exp/b"))]
    n = 40

    async def first(flow: FeedbackFlow) -> list[str]:
        ids = await asyncio.gather(
            *(flow.served(ALICE, "search", arms[i % 2], _page(f"a{i}", "z")) for i in range(n))
        )
        assert all(ids) and len(set(ids)) == n
        stats = flow._records.stats
        assert stats.items == n and stats.batches < n  # fewer writes than searches
        return list(ids)

    ids = run(_with_flow(open_store(), first))

    async def second(flow: FeedbackFlow) -> None:
        for i, search_id in enumerate(ids):  # each record kept the page it was served with
            record = await flow.store.get_search("acme", search_id.split(".")[0])
            assert record is not None and record.arm == arms[i % 2].arm.name
            assert record.ranks == {f"a{i}": 1, "z": 2}
        totals = await flow.store.arm_totals()
        assert (totals["exp/a"].searches, totals["exp/b"].searches) == (n // 2, n // 2)

    run(_with_flow(open_store(), second))


def test_another_tenants_search_is_not_found_like_an_unknown_one(open_store: StoreFactory) -> None:
    async def body(flow: FeedbackFlow) -> None:
        search_id = await flow.served(ALICE, "search", Assignment(Arm("control")), _page("a1"))
        foreign, unknown = await flow.record(
            GUS, [_event("g1", search_id, "a1"), _event("g2", "no-such-search", "a1")]
        )
        assert foreign.outcome is unknown.outcome is FeedbackOutcome.FAILED
        assert foreign.error_code == unknown.error_code == 5  # NOT_FOUND
        # Nothing tells the other tenant the id exists: the same words as for an unknown id.
        assert foreign.error_message.replace(search_id, "X") == unknown.error_message.replace(
            "no-such-search", "X"
        )
        assert "tenant 'globex'" in foreign.error_message
        # Globex's event ids are its own: acme may use the same id.
        assert _outcomes(await flow.record(ALICE, [_event("g1", search_id, "a1")])) == [
            FeedbackOutcome.RECORDED
        ]

    run(_with_flow(open_store(), body))


def test_invalid_events_fail_alone_with_what_to_fix(tmp_path: Path) -> None:
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    cases = [
        (_event("", "S"), "event_id must be 1-128 characters"),
        (_event("x" * 129, "S"), "event_id must be 1-128 characters"),
        (_event("k", "S", kind=None), "kind must be FEEDBACK_KIND_CLICK, FEEDBACK_KIND_DWELL or"),
        (_event("s", ""), "search_id is required"),
        (_event("a", "S", ""), "asset_id must be 1-"),
        (_event("r", "S", rank=-1), "rank must be the 1-based rank on the page"),
        (_event("r2", "S", rank=3), "rank 3 does not match asset 'a2''s rank 2 on that page"),
        (_event("d", "S", kind=FeedbackKind.DWELL), "dwell_ms must be 1-86400000 for a dwell event, got 0"),
        (_event("d2", "S", dwell_ms=10), "dwell_ms is only for FEEDBACK_KIND_DWELL events"),
        (
            _event("g", "S", kind=FeedbackKind.RATING, rating=6),
            "rating must be 1-5 for a rating event, got 6",
        ),
        (_event("g2", "S", rating=3), "rating is only for FEEDBACK_KIND_RATING events"),
        (_event("f", "S", occurred_at=future), "is in the future"),
        (_event("n", "S", "a9"), "asset 'a9' was not a result of search"),
        (_event("i", "S", invalid="occurred_at is not a valid timestamp"), "occurred_at is not a valid"),
    ]

    async def body(flow: FeedbackFlow) -> None:
        search_id = await flow.served(ALICE, "search", Assignment(Arm("control")), _page("a1", "a2"))
        events = [
            FeedbackEvent(**{**e.__dict__, "search_id": search_id if e.search_id == "S" else e.search_id})
            for e, _ in cases
        ]
        acks = await flow.record(ALICE, [*events, _event("ok", search_id)])
        for ack, (_, message) in zip(acks, cases, strict=False):
            assert ack.outcome is FeedbackOutcome.FAILED, message
            assert ack.error_code == 3, ack.error_message  # INVALID_ARGUMENT
            assert message in ack.error_message
        assert acks[-1].outcome is FeedbackOutcome.RECORDED  # the good one in the same batch
        totals = (await flow.store.arm_totals())["control"]
        assert totals.clicks == 1

    run(_with_flow(SqliteFeedbackStore(tmp_path / "f.sqlite3"), body))


def test_batch_size_and_role_are_checked_for_the_whole_call(tmp_path: Path) -> None:
    from services.common.errors import InvalidArgument, PermissionDenied

    async def body(flow: FeedbackFlow) -> None:
        with pytest.raises(InvalidArgument, match="events must hold 1-1000 events, got 0"):
            await flow.record(ALICE, [])
        with pytest.raises(InvalidArgument, match="got 1001"):
            await flow.record(ALICE, [_event(f"e{i}", "S") for i in range(1001)])
        with pytest.raises(PermissionDenied, match="record_feedback needs the 'search' role"):
            await flow.record(INGEST_ONLY, [_event("e", "S")])

    run(_with_flow(SqliteFeedbackStore(tmp_path / "f.sqlite3"), body))


def test_a_dead_store_costs_searches_their_search_id_only() -> None:
    from services.common.errors import Unavailable
    from tests.service_process import free_port

    dead = RedisFeedbackStore(f"redis://127.0.0.1:{free_port()}/0", "p:", 0.2)

    async def body(flow: FeedbackFlow) -> None:
        arm = Assignment(Arm("control"))
        assert await flow.served(ALICE, "search", arm, _page("a1")) == ""
        assert await flow.served(ALICE, "search", arm, _page("a1")) == ""  # skipped for a while
        with pytest.raises(Unavailable, match="the feedback store is unavailable; retry the events later"):
            await flow.record(ALICE, [_event("e", "S")])

    run(_with_flow(dead, body))


def test_a_page_shown_again_names_its_one_record_and_each_search_counts(open_store: StoreFactory) -> None:
    """A page-cache hit writes nothing: every search showing the same page gets its own search_id,
    all naming the page's one record; each takes feedback, a first click counts per search, and every
    search is counted for its arm (within count_flush_s)."""
    arm = Assignment(Arm("exp/a"))
    page = _page("a1", "a2")

    async def body(flow: FeedbackFlow) -> None:
        ids = [await flow.served(ALICE, "search", arm, page) for _ in range(5)]
        assert len(set(ids)) == 5 and len({i.split(".")[0] for i in ids}) == 1
        assert flow._records.stats.items == 1  # one record written, for the first search
        deadline = asyncio.get_running_loop().time() + 5
        while (await flow.store.arm_totals()).get("exp/a", None) is None or (
            (await flow.store.arm_totals())["exp/a"].searches < 5
        ):  # the four remembered ones are counted by the timer, without another search
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        acks = await flow.record(
            ALICE, [_event("c1", ids[0]), _event("c2", ids[3], "a1"), _event("c3", ids[3])]
        )
        assert _outcomes(acks) == [FeedbackOutcome.RECORDED] * 3
        totals = (await flow.store.arm_totals())["exp/a"]
        assert (totals.searches, totals.clicks, totals.clicked_searches) == (5, 3, 2)

    store = open_store()
    flow = FeedbackFlow(store, Policy(AuditLog(sink=lambda _entry: None)), 3600.0, 1.0, count_flush_s=0.1)

    async def go() -> None:
        try:
            await body(flow)
        finally:
            await flow.close()
            await store.close()

    run(go())


def test_a_forged_or_altered_search_id_is_not_found(open_store: StoreFactory) -> None:
    """The nonce is signed with the record's secret (never sent): an id made up from a real one's
    record key is refused with the words of an unknown id, so no caller can mint searches."""
    arm = Assignment(Arm("control"))

    async def body(flow: FeedbackFlow) -> None:
        real = await flow.served(ALICE, "search", arm, _page("a1", "a2"))
        key, nonce, signature = real.split(".")
        forged = [f"{key}.{nonce}x.{signature}", f"{key}.other.{signature}", f"{key}.{nonce}.AAAA", key]
        acks = await flow.record(ALICE, [_event(f"f{i}", sid) for i, sid in enumerate(forged)])
        assert [a.error_code for a in acks] == [5, 5, 5, 5]  # NOT_FOUND
        assert all("is not a search of tenant 'acme'" in a.error_message for a in acks)
        assert _outcomes(await flow.record(ALICE, [_event("ok", real)])) == [FeedbackOutcome.RECORDED]
        totals = (await flow.store.arm_totals())["control"]
        assert (totals.clicks, totals.clicked_searches) == (1, 1)

    run(_with_flow(open_store(), body))


def test_a_record_is_written_again_after_a_ttl_and_older_ids_stay_valid(open_store: StoreFactory) -> None:
    """A record is reused for one TTL after its write and kept for two: an id handed out at the end of
    the reuse window is still valid a whole TTL later."""
    arm = Assignment(Arm("control"))
    page = _page("a1")

    async def go() -> None:
        store = open_store()
        # TTL 1.5 s: the reuse check has 0.75 s of slack for the first write (fsync, a busy runner).
        flow = FeedbackFlow(store, Policy(AuditLog(sink=lambda _entry: None)), 1.5, 1.0)
        try:
            first = await flow.served(ALICE, "search", arm, page)
            await asyncio.sleep(0.75)
            late = await flow.served(ALICE, "search", arm, page)  # the first record, reused
            assert flow._records.stats.items == 1
            await asyncio.sleep(0.9)  # a TTL after the record's write: written anew
            renewed = await flow.served(ALICE, "search", arm, page)
            assert flow._records.stats.items >= 2 and renewed.split(".")[0] == first.split(".")[0]
            acks = await flow.record(ALICE, [_event("l", late, "a1"), _event("r", renewed, "a1")])
            assert _outcomes(acks) == [FeedbackOutcome.RECORDED] * 2, acks
        finally:
            await flow.close()
            await store.close()

    run(go())


def test_a_record_of_the_earlier_format_still_takes_feedback(tmp_path: Path) -> None:
    """A file written before records were shared by pages (no secret column, ids are the keys) opens,
    and its searches' ids still take feedback."""
    import sqlite3

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE searches (tenant TEXT NOT NULL, search_id TEXT NOT NULL, arm TEXT NOT NULL, "
        "ranks TEXT NOT NULL, expires_at REAL NOT NULL, clicked INTEGER NOT NULL DEFAULT 0, "
        "PRIMARY KEY (tenant, search_id)) WITHOUT ROWID;"
        "INSERT INTO searches VALUES ('acme', 'oldid', 'control', '{\"a1\": 1}', 9e12, 0);"
    )
    db.commit()
    db.close()

    async def body(flow: FeedbackFlow) -> None:
        acks = await flow.record(ALICE, [_event("o1", "oldid", "a1"), _event("o2", "oldid.x.y", "a1")])
        assert _outcomes(acks) == [FeedbackOutcome.RECORDED, FeedbackOutcome.FAILED]
        assert (await flow.store.arm_totals())["control"].clicked_searches == 1

    run(_with_flow(SqliteFeedbackStore(path), body))
