"""The search service's proto -> domain conversion: field paths in every message, timestamps checked
against google.protobuf.Timestamp's range, and size caps applied before anything is built per value."""

from __future__ import annotations

import math

import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from imagesearch.v1 import common_pb2

from services.common.errors import InvalidArgument
from services.search import convert
from services.search import filters as flt
from services.search.domain import Fusion
from services.search.fusion import fuse
from tests.search.helpers import all_of, cond, record, unit

MAX, MIN = convert.TIMESTAMP_MAX_SECONDS, convert.TIMESTAMP_MIN_SECONDS


@pytest.mark.parametrize(
    ("seconds", "nanos", "fragment"),
    [
        (MAX + 1, 0, "x.seconds is 253402300800: a timestamp must lie between 0001-01-01T00:00:00Z and"),
        (MIN - 1, 0, "x.seconds is -62135596801"),
        (-(2**63), 0, "x.seconds is -9223372036854775808"),
        (0, 10**9, "x.nanos is 1000000000: nanos must be in 0..999999999"),
        (0, -1, "x.nanos is -1"),
    ],
)
def test_invalid_timestamps_name_the_field(seconds: int, nanos: int, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        convert.timestamp(Timestamp(seconds=seconds, nanos=nanos), "x")
    assert info.value.message.startswith(fragment), info.value.message


def test_the_ends_of_the_timestamp_range_convert() -> None:
    assert convert.timestamp(Timestamp(seconds=MIN), "x").year == 1
    last = convert.timestamp(Timestamp(seconds=MAX, nanos=999_999_999), "x")
    assert (last.year, last.microsecond) == (9999, 999_999)


def test_a_bad_asset_timestamp_is_the_item_problem_not_an_exception() -> None:
    r = record("a", unit(np.random.default_rng(1)), caption="kept")
    r.asset.license.expires_at.seconds = MAX + 1
    rec, problem = convert.record_from_proto(r)
    assert problem is not None and problem.code == 3
    assert problem.message.startswith("asset.license.expires_at.seconds is 253402300800")
    assert rec.doc.asset_id == "a" and rec.doc.caption == "kept"
    assert rec.vector is None  # nothing of a failed item is prepared for writing


def test_list_cap_applies_before_any_value_is_converted(monkeypatch: pytest.MonkeyPatch) -> None:
    converted = 0
    real = convert._typed

    def counting(v: common_pb2.Value, path: str) -> flt.TypedValue:
        nonlocal converted
        converted += 1
        return real(v, path)

    monkeypatch.setattr(convert, "_typed", counting)
    f = cond("owner", "in", [f"u{i}" for i in range(100_000)])
    with pytest.raises(InvalidArgument, match="has 100000 values; a list takes at most 1024"):
        convert.filter_from_proto(f, max_nodes=256)
    assert converted == 0
    # At the cap, every value is converted once.
    convert.filter_from_proto(cond("owner", "in", [f"u{i}" for i in range(1024)]), max_nodes=256)
    assert converted == 1024


def test_node_cap_applies_before_any_member_is_converted(monkeypatch: pytest.MonkeyPatch) -> None:
    built = 0
    real = flt.condition

    def counting(*args: object) -> flt.FilterNode:
        nonlocal built
        built += 1
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(flt, "condition", counting)
    f = common_pb2.Filter(
        all_of=common_pb2.FilterList(filters=[cond("owner", "eq", f"u{i}") for i in range(100_000)])
    )
    with pytest.raises(InvalidArgument, match="the filter has more than 256 nodes"):
        convert.filter_from_proto(f, max_nodes=256)
    assert built == 0
    # 1 root + 255 members is exactly the cap.
    ok = common_pb2.Filter(
        all_of=common_pb2.FilterList(filters=[cond("owner", "eq", f"u{i}") for i in range(255)])
    )
    convert.filter_from_proto(ok, max_nodes=256)
    with pytest.raises(InvalidArgument, match="more than 255 nodes"):
        convert.filter_from_proto(ok, max_nodes=255)


def test_total_list_values_are_capped() -> None:
    lists = [cond("owner", "in", [f"{k}-{i}" for i in range(1024)]) for k in range(9)]
    convert.filter_from_proto(all_of(*lists[:8]), max_nodes=256)
    with pytest.raises(
        InvalidArgument, match=r"filter.all_of.filters\[8\].condition.values: .* more than 8192"
    ):
        convert.filter_from_proto(all_of(*lists), max_nodes=256)


def test_unknown_operator_numbers_are_named() -> None:
    c = common_pb2.Condition(field="width", operator=77)  # type: ignore[arg-type]
    c.value.int_value = 3
    with pytest.raises(InvalidArgument) as info:
        convert.filter_from_proto(
            all_of(cond("owner", "eq", "x"), common_pb2.Filter(condition=c)), max_nodes=256
        )
    message = info.value.message
    assert message.startswith(
        "filter.all_of.filters[1].condition.operator is 77, which is not a FilterOperator"
    )
    assert "EQUAL" in message and "IS_NULL" in message


def test_fusion_never_ranks_a_non_finite_score_first() -> None:
    nan, inf = math.nan, math.inf
    for fusion in Fusion:
        kw = [("nan", nan), ("a", 3.0), ("inf", inf), ("b", 1.0)]
        out = fuse(kw, [("nan", nan), ("a", 0.9)], 0.5, fusion)
        assert out[0].key == "a", [(f.key, f.fused) for f in out]
        assert all(not math.isnan(f.fused) for f in out)
    # Relative scores: the finite ones keep their min-max normalisation.
    rel = {
        f.key: f.keyword for f in fuse([("a", 3.0), ("x", nan), ("b", 1.0)], [], 0.0, Fusion.RELATIVE_SCORE)
    }
    assert rel == {"a": 1.0, "x": 0.0, "b": 0.0}
