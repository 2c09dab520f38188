"""Property-based fuzzing (issue 17 item 6), bounded and derandomized so CI runs the same examples every
time: random Search requests against the embedded suite, and the two filter converters as pure logic."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from imagesearch.v1 import common_pb2, gateway_pb2

from services.common.errors import InvalidArgument
from services.common.limits import MAX_FILTER_NODES
from services.gateway.convert import filter_from_pb, filter_pb
from services.search.convert import TIMESTAMP_MAX_SECONDS, TIMESTAMP_MIN_SECONDS, filter_from_proto
from tests.gateway.suite import Suite
from tests.hostile import corpus
from tests.hostile.corpus import assert_no_leak

BOUNDED = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples on every run (CI reproducibility)
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
S = grpc.StatusCode
ALLOWED = {S.OK, S.INVALID_ARGUMENT, S.NOT_FOUND, S.RESOURCE_EXHAUSTED, S.PERMISSION_DENIED}

# ---- strategies over the proto's Filter tree -------------------------------------------------------------

FIELDS = [
    "asset_id", "uri", "caption", "tags", "owner", "source", "license_name", "license_expires_at",
    "safety_score", "safety_labels", "created_at", "updated_at", "width", "height", "content_sha256",
    "popularity",
    # not filterable, or not a field at all
    "tenant", "vector", "", "Caption", "no_such_field", "caption.raw", "\x00",
]  # fmt: skip

# LIKE operands with wildcards anywhere (the embedded index matches them in linear time; the corpus's
# `filter-like-*` cases hold the pathological ones).
_plain = st.text(alphabet=st.characters(blacklist_characters="*?", codec="utf-8"), max_size=16)
strings = st.one_of(
    _plain,
    st.builds(lambda a, b, c: f"{a}*{b}*{c}", _plain, _plain, _plain),
    st.sampled_from(["*", "?", "a?c", "*a*a*a*b"]),
)
seconds = st.one_of(
    st.integers(TIMESTAMP_MIN_SECONDS, TIMESTAMP_MAX_SECONDS), st.integers(-(2**63), 2**63 - 1)
)
nanos = st.one_of(st.integers(0, 999_999_999), st.integers(-(2**31), 2**31 - 1))
values = st.one_of(
    st.builds(lambda s: common_pb2.Value(string_value=s), strings),
    st.builds(lambda i: common_pb2.Value(int_value=i), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda d: common_pb2.Value(double_value=d), st.floats(allow_nan=True, allow_infinity=True)),
    st.builds(lambda b: common_pb2.Value(bool_value=b), st.booleans()),
    st.builds(lambda s, n: common_pb2.Value(timestamp_value=Timestamp(seconds=s, nanos=n)), seconds, nanos),
    st.just(common_pb2.Value()),  # no kind set
)
operators = st.one_of(st.sampled_from(list(common_pb2.FilterOperator.values())), st.integers(-3, 15))


@st.composite
def conditions(draw: Any) -> common_pb2.Filter:
    c = common_pb2.Condition(field=draw(st.sampled_from(FIELDS)), operator=draw(operators))
    operand = draw(st.sampled_from(["value", "values", "none"]))
    if operand == "value":
        c.value.CopyFrom(draw(values))
    elif operand == "values":
        c.values.CopyFrom(common_pb2.ValueList(values=draw(st.lists(values, max_size=5))))
    return common_pb2.Filter(condition=c)


_STR = ["asset_id", "uri", "caption", "owner", "source", "license_name", "content_sha256"]
_CMP = [1, 2, 3, 4, 5, 6]  # EQUAL .. LESS_THAN_OR_EQUAL
_valid_ts = st.builds(
    lambda s, n: common_pb2.Value(timestamp_value=Timestamp(seconds=s, nanos=n)),
    st.integers(TIMESTAMP_MIN_SECONDS, TIMESTAMP_MAX_SECONDS),
    st.integers(0, 999_999_999),
)
_typed: dict[str, tuple[Any, Any, Any]] = {  # field kind: (fields, single-value ops, value strategy)
    "string": (_STR, [1, 2, 10], st.builds(lambda s: common_pb2.Value(string_value=s), strings)),
    "int": (
        ["width", "height"],
        _CMP,
        st.builds(lambda i: common_pb2.Value(int_value=i), st.integers(-5, 5000)),
    ),
    "double": (
        ["safety_score", "popularity"],
        _CMP,
        st.builds(lambda d: common_pb2.Value(double_value=d), st.floats(-1, 1e6)),
    ),
    "timestamp": (["created_at", "updated_at", "license_expires_at"], _CMP, _valid_ts),
}


@st.composite
def typed_conditions(draw: Any) -> common_pb2.Filter:
    """A condition whose field, operator and operand agree (most of these are served)."""
    kind = draw(st.sampled_from(sorted(_typed)))
    fields, ops, value = _typed[kind]
    c = common_pb2.Condition(field=draw(st.sampled_from(fields)))
    shape = draw(st.sampled_from(["single", "list", "null"]))
    if shape == "single":
        c.operator = draw(st.sampled_from(ops))  # type: ignore[assignment]
        c.value.CopyFrom(draw(value))
    elif shape == "list":
        c.operator = common_pb2.FILTER_OPERATOR_IN
        c.values.CopyFrom(common_pb2.ValueList(values=draw(st.lists(value, min_size=1, max_size=5))))
    else:
        c.operator = common_pb2.FILTER_OPERATOR_IS_NULL
        c.value.bool_value = draw(st.booleans())
    if kind == "string" and shape == "list" and draw(st.booleans()):
        c.field = "tags"
        c.operator = draw(st.sampled_from([8, 9]))  # type: ignore[assignment]  # CONTAINS_ANY / _ALL
    return common_pb2.Filter(condition=c)


def _branches(children: Any) -> Any:
    members = st.lists(children, max_size=4)
    return st.one_of(
        st.builds(lambda fs: common_pb2.Filter(all_of=common_pb2.FilterList(filters=fs)), members),
        st.builds(lambda fs: common_pb2.Filter(any_of=common_pb2.FilterList(filters=fs)), members),
        st.builds(lambda f: common_pb2.Filter(negate=f), children),
    )


# Mostly well-typed trees (they reach the index), some arbitrary ones (they test the refusals).
_leaves = st.one_of(typed_conditions(), typed_conditions(), conditions(), st.just(common_pb2.Filter()))
filters = st.recursive(_leaves, _branches, max_leaves=24)
_members = lambda c: st.lists(c, min_size=1, max_size=4)  # noqa: E731
typed_filters = st.recursive(
    typed_conditions(),
    lambda c: st.one_of(
        st.builds(lambda fs: common_pb2.Filter(all_of=common_pb2.FilterList(filters=fs)), _members(c)),
        st.builds(lambda fs: common_pb2.Filter(any_of=common_pb2.FilterList(filters=fs)), _members(c)),
        st.builds(lambda f: common_pb2.Filter(negate=f), c),
    ),
    max_leaves=12,
)

texts = st.one_of(
    st.text(min_size=1, max_size=60),
    st.sampled_from(["seed", "seed picture number 2", "hostile corpus item", "red car"]),
    st.sampled_from([" ", "", "\x00"]),
    st.text(min_size=990, max_size=1010, alphabet="ab "),
)
floats = st.one_of(st.none(), st.floats(0, 1), st.floats(allow_nan=True, allow_infinity=True))
unit_or_none = st.one_of(
    st.none(), st.none(), st.floats(0, 1), st.floats(allow_nan=True, allow_infinity=True)
)


def mostly(valid: Any, hostile: Any, one_in: int = 6) -> Any:
    """`valid`, except about one draw in `one_in` from `hostile` (so most requests reach the index)."""
    return st.integers(1, one_in).flatmap(lambda n: hostile if n == 1 else valid)


@st.composite
def search_requests(draw: Any) -> gateway_pb2.SearchRequest:
    any_float = st.floats(allow_nan=True, allow_infinity=True)
    req = gateway_pb2.SearchRequest(
        text=draw(
            mostly(
                st.one_of(
                    st.text(min_size=1, max_size=60).filter(str.strip),
                    st.sampled_from(["seed", "seed picture number 2", "hostile corpus item", "red car"]),
                ),
                st.one_of(st.sampled_from([" ", "", "\x00"]), st.text(min_size=990, max_size=1010)),
            )
        ),
        page_size=draw(mostly(st.integers(0, 100), st.sampled_from([-1, 101, 2**31 - 1, -(2**31)]))),
        include_unsafe=draw(mostly(st.just(False), st.just(True))),
        licenses=draw(
            mostly(st.just([]), st.lists(st.sampled_from(["MIT", "CC0-1.0", "GPL-3.0-only", ""]), max_size=3))
        ),
    )
    alpha = draw(mostly(st.one_of(st.none(), st.floats(0, 1)), any_float))
    if alpha is not None:
        req.alpha = alpha
    which = draw(st.sampled_from(["none", "typed", "typed", "any"]))
    if which != "none":
        req.filter.CopyFrom(draw(typed_filters if which == "typed" else filters))
    if draw(st.booleans()):
        r = req.rerank
        r.disable = draw(st.booleans())
        window = draw(mostly(st.one_of(st.none(), st.integers(1, 1000)), st.integers(-2, 1100)))
        if window is not None:
            r.candidate_window = window
        for name in (
            "text_weight",
            "mmr_lambda",
            "duplicate_threshold",
            "freshness_weight",
            "popularity_weight",
        ):
            v = draw(mostly(st.one_of(st.none(), st.floats(0, 1)), any_float, one_in=12))
            if v is not None:
                setattr(r, name, v)
    return req


# ---- (a) Search requests against the running gateway -----------------------------------------------------


@pytest.fixture(scope="module")
def gateway(hostile_suite: Suite) -> Any:
    return hostile_suite.gateway_stub()


@BOUNDED
@given(req=search_requests())
def test_random_searches_get_a_precise_status(gateway: Any, req: gateway_pb2.SearchRequest) -> None:
    try:
        resp = gateway.Search(req, metadata=corpus.ALICE, timeout=30)
    except grpc.RpcError as err:
        event(err.code().name)
        assert err.code() in ALLOWED, (err.code(), err.details())
        assert_no_leak(err.details() or "", "status details")
        return
    event("OK with a filter" if req.HasField("filter") else "OK")
    for reason in resp.degraded_reasons:
        assert_no_leak(reason, "degraded reason")
    assert len(resp.results) <= (req.page_size or 20)
    assert all(r.asset.tenant == "acme" for r in resp.results)


@settings(BOUNDED, max_examples=100)
@given(raw=st.binary(max_size=256))
def test_random_bytes_as_a_search_request_get_a_precise_status(hostile_suite: Suite, raw: bytes) -> None:
    assert hostile_suite.gateway is not None
    call = hostile_suite.channel(hostile_suite.gateway.address).unary_unary(
        "/imagesearch.v1.GatewayService/Search",
        request_serializer=None,
        response_deserializer=gateway_pb2.SearchResponse.FromString,
    )
    try:
        call(raw, metadata=corpus.ALICE, timeout=30)
    except grpc.RpcError as err:
        assert err.code() in ALLOWED, (err.code(), err.details())
        assert_no_leak(err.details() or "", "status details")


# ---- (b) the filter converters as pure logic -------------------------------------------------------------


@BOUNDED
@given(f=st.one_of(filters, typed_filters))
def test_the_gateway_filter_converter_raises_only_invalid_argument(f: common_pb2.Filter) -> None:
    try:
        domain = filter_from_pb(f)
        event("accepted")
    except InvalidArgument as exc:
        assert exc.message
        assert_no_leak(exc.message, "gateway filter")
        return
    # What it accepted converts back to a filter it accepts again, unchanged.
    again = filter_pb(domain)
    assert again is not None
    assert repr(filter_from_pb(again)) == repr(domain)


@BOUNDED
@given(f=st.one_of(filters, typed_filters))
def test_the_search_filter_converter_raises_only_invalid_argument(f: common_pb2.Filter) -> None:
    try:
        filter_from_proto(f, max_nodes=MAX_FILTER_NODES)
        event("accepted")
    except InvalidArgument as exc:
        assert exc.message
        assert_no_leak(exc.message, "search filter")
