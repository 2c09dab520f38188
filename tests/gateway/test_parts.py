"""Pure pieces of the gateway: bounded per-tenant state, first-stage hit conversion, error mapping."""

from __future__ import annotations

import datetime as dt
import re

import grpc
import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from imagesearch.v1 import common_pb2, search_pb2

from services.common.errors import DeadlineExceeded, InvalidArgument, NotFound, Unavailable
from services.gateway import convert
from services.gateway.backends.calls import backend_error
from services.gateway.backends.errors import BackendError, caller_safe
from services.gateway.domain import Asset, AssetSummary
from services.gateway.tenants import PerTenant
from tests.gateway.test_core import ALICE, World, item, run_ingest


def test_per_tenant_state_is_bounded_and_rebuilt_on_demand() -> None:
    made: list[str] = []

    def make(tenant: str) -> object:
        made.append(tenant)
        return object()

    per = PerTenant(make, max_tenants=2)
    a = per("a")
    per("b")
    assert per("a") is a  # "a" is now the most recently used
    per("c")  # evicts "b", the least recently used
    assert len(per) == 2 and per.peek("b") is None and per.peek("a") is a
    per("b")
    assert made == ["a", "b", "c", "b"]


def test_a_first_stage_hit_carries_only_what_ranking_reads_until_the_page_needs_more() -> None:
    expires = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    message = common_pb2.Asset(
        asset_id="a1",
        tenant="acme",
        caption="a red car",
        tags=["car", "red"],
        uri="s3://bucket/a1.jpg",
        owner="alice",
        license=common_pb2.License(name="CC0-1.0", expires_at=convert.dt_to_ts(expires)),
        safety_score=0.25,
        content_sha256="ab" * 32,
        popularity=3.0,
        width=640,
        height=480,
    )
    vec = np.arange(4, dtype="<f4")
    resp = search_pb2.QueryResponse(
        hits=[
            search_pb2.QueryHit(
                asset=message,
                scores=search_pb2.ScoreBreakdown(fused=0.9, bm25=2.0),
                image_embedding=common_pb2.Embedding(values=vec.tobytes()),
            )
        ],
        cached=True,
    )
    hit = convert.query_result(resp).hits[0]
    assert type(hit.asset) is AssetSummary and not hasattr(hit.asset, "tags")
    assert (hit.asset.asset_id, hit.asset.tenant, hit.asset.license_name) == ("a1", "acme", "CC0-1.0")
    assert hit.asset.license_expires_at == expires and hit.asset.safety_score == 0.25
    assert hit.scores.fused == np.float32(0.9)
    assert hit.vector is not None and hit.vector.tolist() == [0, 1, 2, 3]
    full = hit.full_asset()
    assert isinstance(full, Asset) and full.tags == ["car", "red"] and full.uri == "s3://bucket/a1.jpg"
    assert (full.width, full.height, full.owner) == (640, 480, "alice")
    assert convert.asset_pb(full) == message  # the page's message is the stored one, field for field


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (0, 0),
        (1_765_000_000, 123_456_789),
        (1_765_000_000, 999_999_999),
        (1_765_000_000, 999),  # below a microsecond: truncated, not rounded
        (-1, 999_999_999),  # before the epoch with nanos: 1969-12-31T23:59:59.999999Z
        (-86_400, 1_500),
        (-62_135_596_800, 0),  # 0001-01-01T00:00:00Z, the earliest valid
        (253_402_300_799, 999_999_999),  # 9999-12-31T23:59:59.999999999Z, the latest valid
    ],
)
def test_timestamps_read_as_protobuf_reads_them(seconds: int, nanos: int) -> None:
    ts = Timestamp(seconds=seconds, nanos=nanos)
    got = convert.ts_to_dt(ts)
    assert got == ts.ToDatetime(tzinfo=dt.UTC) and got is not None and got.tzinfo is dt.UTC
    assert convert.dt_to_ts(got) == Timestamp(seconds=seconds, nanos=nanos - nanos % 1000)
    assert convert.ts_to_dt(ts, present=False) is None


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(-62_135_596_801, 0), (253_402_300_800, 0), (0, -1), (0, 1_000_000_000)],
)
def test_an_invalid_timestamp_fails_as_protobuf_fails_it(seconds: int, nanos: int) -> None:
    with pytest.raises(ValueError, match="Timestamp is not valid"):
        convert.ts_to_dt(Timestamp(seconds=seconds, nanos=nanos))


def _stored_assets() -> list[common_pb2.Asset]:
    """Search-service assets covering what converting to an Asset and back changes."""
    full = common_pb2.Asset(
        asset_id="a1",
        tenant="acme",
        uri="s3://bucket/a1.jpg",
        caption="a red car",
        tags=["car", "red"],
        ocr_text="STOP",
        owner="alice",
        license=common_pb2.License(name="CC0-1.0", expires_at=Timestamp(seconds=1_900_000_000, nanos=1_500)),
        safety_labels=[common_pb2.SafetyLabel(label="ok", score=0.1), common_pb2.SafetyLabel(label="x")],
        safety_score=0.25,
        source="upload",
        created_at=Timestamp(seconds=1_765_000_000, nanos=123_456_789),
        updated_at=Timestamp(seconds=-1, nanos=999_999_999),
        width=640,
        height=480,
        content_sha256="ab" * 32,
        embedding_model=common_pb2.ModelRef(name="clip", version="1"),
        popularity=3.5,
        analysis_state=common_pb2.ANALYSIS_STATE_ANALYSED,
    )
    bare = common_pb2.Asset(asset_id="a2", tenant="acme")  # no licence, no times, no model
    empty_parts = common_pb2.Asset(asset_id="a3", tenant="acme", analysis_state=7)  # type: ignore[arg-type]
    empty_parts.created_at.SetInParent()  # the epoch, set
    empty_parts.license.SetInParent()
    empty_parts.embedding_model.SetInParent()  # neither name nor version
    newer = common_pb2.Asset.FromString(full.SerializeToString() + b"\x98\x06\x01")  # field 99 unknown
    newer.license.expires_at.nanos = 999  # below a microsecond
    return [full, bare, empty_parts, newer]


@pytest.mark.parametrize("stored", _stored_assets(), ids=lambda a: a.asset_id)
def test_a_page_result_passes_the_stored_asset_through_byte_for_byte_as_converting_it_would(
    stored: common_pb2.Asset,
) -> None:
    """The page copies the search service's message instead of converting it to an Asset and back;
    the response must be the same bytes as that round trip gives."""
    from services.gateway.domain import SearchResult, StageScores
    from services.gateway.search_flow import _first_stage_result

    resp = search_pb2.QueryResponse(hits=[search_pb2.QueryHit(asset=stored)])
    hit = convert.query_result(resp).hits[0]
    via_domain = SearchResult(asset=hit.full_asset(), scores=StageScores(fused=0.5, first_stage_rank=1))
    passed = _first_stage_result(hit, 1, [])
    passed.scores.fused = passed.scores.final = 0.5
    via_domain.scores.final = 0.5
    assert type(passed.asset) is AssetSummary and passed.asset_message is not None
    expected = convert.result_pb(via_domain).SerializeToString()
    assert convert.result_pb(passed).SerializeToString() == expected
    assert stored.asset_id in {"a2", "a3"} or convert.result_pb(passed).asset != stored  # it did change


def test_backend_statuses_become_domain_errors() -> None:
    def failed(code: grpc.StatusCode) -> BackendError:
        return backend_error("search", grpc.aio.AioRpcError(code, None, None, details="why"))

    assert isinstance(failed(grpc.StatusCode.NOT_FOUND), NotFound)
    assert isinstance(failed(grpc.StatusCode.UNAVAILABLE), Unavailable)
    assert isinstance(failed(grpc.StatusCode.DEADLINE_EXCEEDED), DeadlineExceeded)
    other = failed(grpc.StatusCode.INVALID_ARGUMENT)
    assert other.code == grpc.StatusCode.INVALID_ARGUMENT and other.message == "search: why"


async def test_a_duplicate_does_no_image_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """P3: bytes a stored asset already holds were valid when stored; the duplicate lookup comes
    before the header check, the decode, the analysis and the encoder."""
    from services.gateway import ingest_flow

    calls: list[str] = []
    for name in ("check_image", "decode_rgb"):
        real = getattr(ingest_flow, name)
        monkeypatch.setattr(ingest_flow, name, lambda *a, _n=name, _f=real: calls.append(_n) or _f(*a))
    w = World()
    await run_ingest(w, [item("orig", "cat")])
    assert calls == ["check_image", "decode_rgb"] and len(w.encoder.image_calls) == 1
    acks = await run_ingest(w, [item(f"copy{i}", "cat") for i in range(3)])
    assert {a.outcome.name for a in acks.values()} == {"DUPLICATE"}
    assert (
        calls == ["check_image", "decode_rgb"] and len(w.encoder.image_calls) == 1 and w.analyzer.calls == 1
    )


async def test_ingest_finds_duplicates_by_content_hash_and_releases_its_per_item_state() -> None:
    w = World()
    await run_ingest(w, [item("orig", "cat")])
    acks = await run_ingest(w, [item(f"copy{i}", "cat") for i in range(5)], who=ALICE)
    assert {a.duplicate_of for a in acks.values()} == {"orig"}
    assert w.search.queries == []  # no vector query: FindByContentHash answered
    # One lookup per stream: the copies in flight together wait for the first one's answer.
    assert len(w.search.hash_lookups) == 2
    flow = w.gw.ingest_flow
    assert flow._id_locks == {} and flow._sha_claims == {}  # bounded by the items in flight


def _cond(
    field: str = "tags", operator: int = common_pb2.FILTER_OPERATOR_EQUAL, **operand: object
) -> common_pb2.Filter:
    if not operand:
        operand = {"value": common_pb2.Value(string_value="x")}
    return common_pb2.Filter(condition=common_pb2.Condition(field=field, operator=operator, **operand))  # type: ignore[arg-type]


def _nested(depth: int) -> common_pb2.Filter:
    f = _cond()
    for _ in range(depth):
        f = common_pb2.Filter(negate=f)
    return f


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # W6: an empty node is what the search service rejects, not "no filter"
        (common_pb2.Filter(), "a filter node has none of condition, all_of, any_of, negate set"),
        (
            common_pb2.Filter(all_of=common_pb2.FilterList(filters=[_cond(), common_pb2.Filter()])),
            "a filter node has none of",
        ),
        (common_pb2.Filter(negate=common_pb2.Filter()), "a filter node has none of"),
        (common_pb2.Filter(any_of=common_pb2.FilterList()), "any_of needs at least one member"),
        (_cond(operator=99), "operator 99 is unknown; use one of EQUAL"),
        (_cond(operator=common_pb2.FILTER_OPERATOR_UNSPECIFIED), "has no operator"),
        (_cond(field=""), "no field name"),
        (_nested(17), "deeper than 16"),
        (
            _cond(
                "created_at",
                common_pb2.FILTER_OPERATOR_LESS_THAN,
                value=common_pb2.Value(timestamp_value=Timestamp(seconds=10**13)),
            ),
            "filter on 'created_at': the value is not a valid timestamp",
        ),
    ],
)
def test_a_filter_is_validated_at_the_gateways_boundary(message: common_pb2.Filter, expected: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        convert.filter_from_pb(message)
    assert expected in err.value.message


def test_a_valid_filter_converts() -> None:
    f = convert.filter_from_pb(
        common_pb2.Filter(all_of=common_pb2.FilterList(filters=[_cond(), _nested(15)]))
    )
    assert convert.filter_pb(f) is not None and convert.filter_from_pb(convert.filter_pb(f)) == f  # type: ignore[arg-type]


# What no caller-facing message may contain (S4): an exception class name, a library's internals,
# a backend prefix.
CLASS_NAME = re.compile(r"[A-Z][a-z]+(Error|Exception)")
INTERNALS = re.compile(
    r"\w+(Error|Exception|Warning)\b|ipv4:|ipv6:|grpc|PIL|Pillow|Traceback|^(search|encoder): "
)


@pytest.mark.parametrize(
    ("code", "details", "keeps"),
    [
        (
            grpc.StatusCode.UNAVAILABLE,
            "failed to connect to all addresses; last error: UNKNOWN: "
            "ipv4:127.0.0.1:50072: Failed to connect to remote host: ConnectionRefusedError",
            "unavailable",
        ),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", "did not answer in time"),
        (grpc.StatusCode.INTERNAL, "Exception calling application: KeyError: 'vector'", "retry later"),
        (grpc.StatusCode.UNKNOWN, "Unexpected <class 'ValueError'>: bad", "retry later"),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            "image header is corrupt: UnidentifiedImageError: cannot identify image file",
            "image header is corrupt",
        ),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            "PNG data is corrupt or truncated (91 bytes): OSError: image file is truncated",
            "truncated (91 bytes)",
        ),
        (
            grpc.StatusCode.FAILED_PRECONDITION,
            "vector comes from model m; the collection holds n",
            "collection holds n",
        ),
    ],
)
def test_backend_failures_reach_callers_without_internals(
    code: grpc.StatusCode, details: str, keeps: str
) -> None:
    err = backend_error("search", grpc.aio.AioRpcError(code, None, None, details=details))
    public = err.for_caller()
    assert public.code == code and keeps in public.message
    assert not CLASS_NAME.search(public.message) and not INTERNALS.search(public.message), public.message
    assert details in err.message  # the details stay in what is logged


def test_caller_safe_cuts_at_the_first_exception_name() -> None:
    assert caller_safe("cannot be converted to RGB: ValueError: x") == "cannot be converted to RGB"
    assert caller_safe("UnidentifiedImageError: x", "unreadable") == "unreadable"
    assert caller_safe("a plain message (3 bytes)") == "a plain message (3 bytes)"
