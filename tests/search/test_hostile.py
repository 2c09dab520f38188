"""Hostile and out-of-range input against the real search service, on both backends (issue 17): every
client mistake gets INVALID_ARGUMENT naming the field path (never INTERNAL or UNKNOWN), one bad item of
a batch fails that item only, and no message names an exception class."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from imagesearch.v1 import common_pb2, search_pb2

from services.search.convert import TIMESTAMP_MAX_SECONDS, TIMESTAMP_MIN_SECONDS
from services.search.settings import SearchSettings
from tests.search.conftest import REPO_ROOT, Service
from tests.search.helpers import MODEL, all_of, cond, embedding, negate, record, unit

RNG = np.random.default_rng(17)
INVALID = grpc.StatusCode.INVALID_ARGUMENT
# An exception class name in a message (DecodeError, ValueError, OSError, WeaviateQueryError...).
CLASS_NAME = re.compile(r"[A-Z]\w*(Error|Exception)\b|<class |Traceback")


def _error_codes(resp: search_pb2.UpsertAssetsResponse) -> list[int]:
    return [r.error.code if r.HasField("error") else 0 for r in resp.results]


def _stored(svc: Service, tenant: str, ids: list[str]) -> list[str]:
    got = svc.stub.GetAssets(search_pb2.GetAssetsRequest(tenant=tenant, asset_ids=ids))
    return [a.asset.asset_id for a in got.assets]


def _ts(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


@pytest.fixture(scope="module")
def tenant(search_service: Service) -> str:
    name = f"t{uuid.uuid4().hex[:10]}"
    resp = search_service.stub.UpsertAssets(
        search_pb2.UpsertAssetsRequest(tenant=name, assets=[record("seed", unit(RNG), caption="seed")])
    )
    assert _error_codes(resp) == [0]
    return name


# ---- W4: out-of-range timestamps of an asset fail that item only -----------------------------------------


def _timestamp_items() -> list[tuple[str, search_pb2.AssetRecord, str]]:
    """(asset id, record, the field path its error must name; "" = valid)."""
    out = []

    def rec(asset_id: str, where: str, ts: Timestamp) -> search_pb2.AssetRecord:
        r = record(asset_id, unit(RNG), license_name="CC0")
        target = r.asset.license.expires_at if where == "expires" else r.asset.created_at
        target.CopyFrom(ts)
        return r

    out.append(("ok-1", record("ok-1", unit(RNG)), ""))
    out.append(
        (
            "late-expiry",
            rec("late-expiry", "expires", _ts(TIMESTAMP_MAX_SECONDS + 1)),
            "asset.license.expires_at.seconds",
        )
    )
    out.append(
        (
            "early-created",
            rec("early-created", "created", _ts(TIMESTAMP_MIN_SECONDS - 1)),
            "asset.created_at.seconds",
        )
    )
    out.append(
        ("big-nanos", rec("big-nanos", "expires", _ts(0, 1_000_000_000)), "asset.license.expires_at.nanos")
    )
    out.append(("negative-nanos", rec("negative-nanos", "created", _ts(0, -1)), "asset.created_at.nanos"))
    out.append(("ok-2", record("ok-2", unit(RNG)), ""))
    # The ends of Timestamp's range are valid and survive a round trip on both backends.
    out.append(("last-instant", rec("last-instant", "expires", _ts(TIMESTAMP_MAX_SECONDS, 999_999_999)), ""))
    out.append(("first-instant", rec("first-instant", "created", _ts(TIMESTAMP_MIN_SECONDS)), ""))
    return out


def test_an_out_of_range_timestamp_fails_only_its_item(search_service: Service) -> None:
    t = f"t{uuid.uuid4().hex[:10]}"
    items = _timestamp_items()
    resp = search_service.stub.UpsertAssets(
        search_pb2.UpsertAssetsRequest(tenant=t, assets=[r for _, r, _ in items])
    )
    assert [r.asset_id for r in resp.results] == [i for i, _, _ in items]
    for (asset_id, _, path), result in zip(items, resp.results, strict=True):
        if path:
            assert result.error.code == INVALID.value[0], (asset_id, result.error.message)
            assert result.error.message.startswith(path), result.error.message
        else:
            assert not result.HasField("error"), (asset_id, result.error.message)
    good = [i for i, _, p in items if not p]
    assert _stored(search_service, t, [i for i, _, _ in items]) == good
    got = search_service.stub.GetAssets(
        search_pb2.GetAssetsRequest(tenant=t, asset_ids=["last-instant", "first-instant"])
    )
    last, first = (a.asset for a in got.assets)
    assert last.license.expires_at.ToDatetime(tzinfo=UTC) == datetime(9999, 12, 31, 23, 59, 59, 999999, UTC)
    assert first.created_at.ToDatetime(tzinfo=UTC) == datetime(1, 1, 1, tzinfo=UTC)


def test_an_out_of_range_timestamp_fails_only_its_item_in_a_stream(search_service: Service) -> None:
    t = f"t{uuid.uuid4().hex[:10]}"
    bad = record("bad", unit(RNG), license_name="CC0")
    bad.asset.license.expires_at.CopyFrom(_ts(TIMESTAMP_MAX_SECONDS + 1))
    reqs = [
        search_pb2.StreamUpsertAssetsRequest(tenant=t, asset=r)
        for r in (record("ok-1", unit(RNG)), bad, record("ok-2", unit(RNG)))
    ]
    out = list(search_service.stub.StreamUpsertAssets(iter(reqs)))
    assert [(o.result.asset_id, o.result.error.code) for o in out] == [("ok-1", 0), ("bad", 3), ("ok-2", 0)]
    assert "asset.license.expires_at.seconds" in out[1].result.error.message
    assert _stored(search_service, t, ["ok-1", "bad", "ok-2"]) == ["ok-1", "ok-2"]


# ---- W5: numbers outside their documented ranges fail that item only -------------------------------------


def test_out_of_range_scores_fail_only_their_item(search_service: Service) -> None:
    t = f"t{uuid.uuid4().hex[:10]}"
    nan, inf = float("nan"), float("inf")
    items = [
        ("ok-1", dict(popularity=1e300, safety_score=1.0, safety_labels=[("FACE", 0.0)]), ""),
        ("popularity-nan", dict(popularity=nan), "asset.popularity"),
        ("popularity-inf", dict(popularity=inf), "asset.popularity"),
        ("popularity-negative", dict(popularity=-1.0), "asset.popularity"),
        ("safety-2", dict(safety_score=2.0), "asset.safety_score"),
        ("safety-negative", dict(safety_score=-0.1), "asset.safety_score"),
        ("safety-nan", dict(safety_score=nan), "asset.safety_score"),
        ("label-score", dict(safety_labels=[("FACE", 0.5), ("X", 1.5)]), "asset.safety_labels[1].score"),
        ("ok-2", dict(popularity=0.0, safety_score=0.0), ""),
    ]
    resp = search_service.stub.UpsertAssets(
        search_pb2.UpsertAssetsRequest(
            tenant=t, assets=[record(i, unit(RNG), **fields) for i, fields, _ in items]
        )
    )
    for (asset_id, _, path), result in zip(items, resp.results, strict=True):
        if path:
            assert result.error.code == INVALID.value[0], (asset_id, result.error.message)
            assert result.error.message.startswith(path), result.error.message
        else:
            assert not result.HasField("error"), (asset_id, result.error.message)
    assert _stored(search_service, t, [i for i, _, _ in items]) == ["ok-1", "ok-2"]


# ---- W2/W3: filter timestamps, nanos and operators -------------------------------------------------------


def _ts_cond(field: str, ts: Timestamp) -> common_pb2.Filter:
    c = common_pb2.Condition(field=field, operator=common_pb2.FILTER_OPERATOR_GREATER_THAN)
    c.value.timestamp_value.CopyFrom(ts)
    return common_pb2.Filter(condition=c)


def _op_cond(operator: int) -> common_pb2.Filter:
    c = common_pb2.Condition(field="owner", operator=operator)  # type: ignore[arg-type]
    c.value.string_value = "ann"
    return common_pb2.Filter(condition=c)


BAD_FILTERS = [
    (
        "seconds beyond year 9999",
        _ts_cond("created_at", _ts(TIMESTAMP_MAX_SECONDS + 1)),
        "filter.condition.value.timestamp_value.seconds",
    ),
    (
        "seconds before year 1",
        _ts_cond("license_expires_at", _ts(-(2**62))),
        "filter.condition.value.timestamp_value.seconds",
    ),
    (
        "nanos too large",
        _ts_cond("updated_at", _ts(0, 10**9)),
        "filter.condition.value.timestamp_value.nanos",
    ),
    ("negative nanos", _ts_cond("created_at", _ts(5, -1)), "filter.condition.value.timestamp_value.nanos"),
    (
        "nested bad timestamp",
        all_of(cond("owner", "eq", "ann"), negate(_ts_cond("created_at", _ts(2**62)))),
        "filter.all_of.filters[1].negate.condition.value.timestamp_value.seconds",
    ),
    ("unknown operator", _op_cond(99), "filter.condition.operator is 99"),
    ("negative operator", _op_cond(-3), "filter.condition.operator is -3"),
    (
        "nested unknown operator",
        all_of(cond("owner", "eq", "ann"), _op_cond(12)),
        "filter.all_of.filters[1].condition.operator is 12",
    ),
    ("unset operator", _op_cond(0), "filter.condition: filter on 'owner': operator is unset"),
]


@pytest.mark.parametrize(("name", "f", "path"), BAD_FILTERS, ids=[c[0] for c in BAD_FILTERS])
def test_bad_filter_values_are_invalid_argument_naming_the_path(
    search_service: Service, tenant: str, name: str, f: common_pb2.Filter, path: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        search_service.stub.Query(search_pb2.QueryRequest(tenant=tenant, text="seed", filter=f), timeout=30)
    assert err.value.code() == INVALID, err.value.details()
    assert err.value.details().startswith(path), err.value.details()


def test_valid_extreme_filter_timestamps_are_served(search_service: Service, tenant: str) -> None:
    f = all_of(
        _ts_cond("created_at", _ts(TIMESTAMP_MIN_SECONDS)),
        negate(_ts_cond("created_at", _ts(TIMESTAMP_MAX_SECONDS, 999_999_999))),
    )
    resp = search_service.stub.Query(search_pb2.QueryRequest(tenant=tenant, text="seed", filter=f))
    if search_service.kind == "embedded":
        assert [h.asset.asset_id for h in resp.hits] == ["seed"]
    # On Weaviate the call is served too, but this filter matches nothing: its date filters do not
    # compare dates this far from 1970 correctly (left open in issue 17's notes).


# ---- P1: size caps apply before anything is built per value or node --------------------------------------


def test_oversized_lists_and_filters_are_refused(search_service: Service, tenant: str) -> None:
    huge_in = cond("owner", "in", [f"user-{i}" for i in range(100_000)])
    many_nodes = common_pb2.Filter(
        all_of=common_pb2.FilterList(filters=[cond("owner", "eq", f"u{i}") for i in range(100_000)])
    )
    many_lists = all_of(*(cond("owner", "in", [f"u{k}-{i}" for i in range(1024)]) for k in range(9)))
    cases = [
        (huge_in, "filter.condition.values: filter on 'owner' has 100000 values; a list takes at most 1024"),
        (many_nodes, f"the filter has more than {SearchSettings().max_filter_nodes} nodes"),
        (many_lists, "filter.all_of.filters[8].condition.values: the filter's lists hold more than 8192"),
    ]
    for f, message in cases:
        with pytest.raises(grpc.RpcError) as err:
            search_service.stub.Query(
                search_pb2.QueryRequest(tenant=tenant, text="seed", filter=f), timeout=30
            )
        assert err.value.code() == INVALID and err.value.details().startswith(message), err.value.details()
    # The caps themselves are allowed.
    at_cap = cond("owner", "in", [f"user-{i}" for i in range(1024)])
    assert (
        search_service.stub.Query(search_pb2.QueryRequest(tenant=tenant, text="seed", filter=at_cap)).hits
        == []
    )


# ---- W7: the deepest page the contract documents ---------------------------------------------------------


def test_offset_plus_limit_is_capped_as_documented(search_service: Service, tenant: str) -> None:
    cap = SearchSettings().max_candidate_window
    deepest = search_service.stub.Query(
        search_pb2.QueryRequest(
            tenant=tenant, text="seed", vector=embedding(unit(RNG)), offset=cap - 1000, limit=1000
        )
    )
    assert deepest.hits == []  # served (the tenant has one asset), on Weaviate too
    with pytest.raises(grpc.RpcError) as err:
        search_service.stub.Query(
            search_pb2.QueryRequest(tenant=tenant, text="seed", offset=10_000, limit=1000)
        )
    assert err.value.code() == INVALID
    assert err.value.details().startswith(f"offset + limit must be at most {cap}"), err.value.details()
    assert "10000 + 1000 = 11000" in err.value.details()


def test_the_contract_documents_the_offset_plus_limit_cap() -> None:
    proto = (REPO_ROOT / "protos" / "imagesearch" / "v1" / "search.proto").read_text()
    offset_doc = proto[: proto.index("int32 offset = 8;")].rsplit(";", 1)[1]
    cap = SearchSettings().max_candidate_window
    assert f"offset + limit at most {cap}" in " ".join(offset_doc.split()), offset_doc


# ---- W1: undecodable requests ----------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (strings, bytes, messages)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _nested_filter_query(tenant: str, depth: int) -> bytes:
    """QueryRequest bytes with a filter of `depth` nested negations (built by hand: the encoder has its
    own depth limit)."""
    f = common_pb2.Filter(condition=common_pb2.Condition(field="owner", operator=1)).SerializeToString()
    for _ in range(depth):
        f = _field(4, f)  # Filter.negate
    return _field(1, tenant.encode()) + _field(2, b"seed") + _field(6, f)


def undecodable_queries(tenant: str) -> list[tuple[str, bytes]]:
    valid = search_pb2.QueryRequest(tenant=tenant, text="seed").SerializeToString()
    return [
        ("invalid UTF-8 in text", _field(1, tenant.encode()) + _field(2, b"\xff\xfe car")),
        ("truncated", valid[:-2]),
        ("length beyond the end", valid + _field(2, b"x")[:1] + _varint(1000)),
        ("filter nested 150 deep", _nested_filter_query(tenant, 150)),
    ]


@pytest.fixture
def raw_query(search_service: Service) -> Iterator[grpc.UnaryUnaryMultiCallable]:
    yield search_service.channel.unary_unary(
        "/imagesearch.v1.SearchService/Query",
        request_serializer=None,  # bytes go out as they are
        response_deserializer=search_pb2.QueryResponse.FromString,
    )


def test_undecodable_requests_are_invalid_argument(
    search_service: Service, tenant: str, raw_query: grpc.UnaryUnaryMultiCallable
) -> None:
    for name, raw in undecodable_queries(tenant):
        with pytest.raises(grpc.RpcError) as err:
            raw_query(raw, timeout=30)
        assert err.value.code() == INVALID, (name, err.value.code(), err.value.details())
        details = err.value.details()
        assert details.startswith(
            "the request could not be decoded as imagesearch.v1.QueryRequest: "
        ), details
        assert not CLASS_NAME.search(details), details
    # Nested deep, but within protobuf's limit: decoded, then refused by the service's own depth cap.
    with pytest.raises(grpc.RpcError) as err:
        raw_query(_nested_filter_query(tenant, 60), timeout=30)
    assert err.value.code() == INVALID and "nests deeper than 32 levels" in err.value.details()
    # The service is fine afterwards.
    assert raw_query(search_pb2.QueryRequest(tenant=tenant, text="seed").SerializeToString()).hits


def test_an_undecodable_stream_item_ends_the_stream_with_invalid_argument(search_service: Service) -> None:
    t = f"t{uuid.uuid4().hex[:10]}"
    call = search_service.channel.stream_stream(
        "/imagesearch.v1.SearchService/StreamUpsertAssets",
        request_serializer=None,
        response_deserializer=search_pb2.StreamUpsertAssetsResponse.FromString,
    )
    good = search_pb2.StreamUpsertAssetsRequest(tenant=t, asset=record("ok", unit(RNG))).SerializeToString()
    responses = call(iter([good, good[:-3]]), timeout=30)
    with pytest.raises(grpc.RpcError) as err:
        list(responses)
    assert err.value.code() == INVALID, err.value.details()
    assert err.value.details().startswith(
        "the request could not be decoded as imagesearch.v1.StreamUpsertAssetsRequest: "
    )


# ---- S4: no message names an exception class -------------------------------------------------------------


def test_no_error_message_names_an_exception_class(
    search_service: Service, tenant: str, raw_query: grpc.UnaryUnaryMultiCallable
) -> None:
    stub = search_service.stub
    messages: list[str] = []

    def expect_failure(fn, *args) -> None:  # type: ignore[no-untyped-def]
        with pytest.raises(grpc.RpcError) as err:
            fn(*args, timeout=30)
        assert err.value.code() not in (
            grpc.StatusCode.INTERNAL,
            grpc.StatusCode.UNKNOWN,
        ), err.value.details()
        messages.append(err.value.details() or "")

    for _, raw in undecodable_queries(tenant):
        expect_failure(raw_query, raw)
    for _, f, _ in BAD_FILTERS:
        expect_failure(stub.Query, search_pb2.QueryRequest(tenant=tenant, text="seed", filter=f))
    v = embedding(unit(RNG))
    for q in (
        search_pb2.QueryRequest(tenant=tenant),
        search_pb2.QueryRequest(tenant=tenant, text="x", alpha=float("nan")),
        search_pb2.QueryRequest(
            tenant=tenant, vector=common_pb2.Embedding(values=b"\x00" * 7, model=v.model)
        ),
        search_pb2.QueryRequest(tenant=tenant, vector=embedding(unit(RNG), (MODEL[0], "other"))),
        search_pb2.QueryRequest(tenant=tenant, text="x", fusion=42),  # type: ignore[arg-type]
        search_pb2.QueryRequest(tenant=tenant, text="x", offset=10_000, limit=1000),
        search_pb2.QueryRequest(tenant="bad tenant", text="x"),
        search_pb2.QueryRequest(tenant=f"nobody{uuid.uuid4().hex[:6]}", text="x"),
    ):
        expect_failure(stub.Query, q)
    expect_failure(
        stub.FindByContentHash, search_pb2.FindByContentHashRequest(tenant=tenant, content_sha256=["x"])
    )
    expect_failure(stub.GetAssets, search_pb2.GetAssetsRequest(tenant=tenant, asset_ids=[""]))
    items = [r for _, r, _ in _timestamp_items()] + [
        record("nan-popularity", unit(RNG), popularity=float("nan")),
        search_pb2.AssetRecord(asset=common_pb2.Asset(asset_id="no-vector")),
    ]
    resp = stub.UpsertAssets(search_pb2.UpsertAssetsRequest(tenant=tenant, assets=items))
    messages += [r.error.message for r in resp.results if r.HasField("error")]
    assert len(messages) > 25
    for message in messages:
        assert message and not CLASS_NAME.search(message), message
