"""Builders for search protos in tests."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from imagesearch.v1 import common_pb2, search_pb2

MODEL = ("test-model", "1")
DIM = 16


def unit(rng: np.random.Generator, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def embedding(v: np.ndarray, model: tuple[str, str] = MODEL) -> common_pb2.Embedding:
    return common_pb2.Embedding(
        values=np.asarray(v, dtype="<f4").tobytes(),
        model=common_pb2.ModelRef(name=model[0], version=model[1]),
    )


def ts(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


def record(
    asset_id: str, v: np.ndarray, model: tuple[str, str] = MODEL, **fields: object
) -> search_pb2.AssetRecord:
    asset = common_pb2.Asset(asset_id=asset_id)
    for k, val in fields.items():
        if k == "license_name":
            asset.license.name = str(val)
        elif k == "license_expires_at":
            asset.license.expires_at.CopyFrom(ts(val))  # type: ignore[arg-type]
        elif k == "safety_labels":
            asset.safety_labels.extend(common_pb2.SafetyLabel(label=lb, score=s) for lb, s in val)  # type: ignore[attr-defined]
        elif k == "tags":
            asset.tags.extend(val)  # type: ignore[arg-type]
        elif k == "created_at":
            asset.created_at.CopyFrom(ts(val))  # type: ignore[arg-type]
        else:
            setattr(asset, k, val)
    return search_pb2.AssetRecord(asset=asset, image_embedding=embedding(v, model))


def value(v: object) -> common_pb2.Value:
    if isinstance(v, bool):
        return common_pb2.Value(bool_value=v)
    if isinstance(v, int):
        return common_pb2.Value(int_value=v)
    if isinstance(v, float):
        return common_pb2.Value(double_value=v)
    if isinstance(v, datetime):
        return common_pb2.Value(timestamp_value=ts(v))
    return common_pb2.Value(string_value=str(v))


OPS = {
    "eq": common_pb2.FILTER_OPERATOR_EQUAL,
    "ne": common_pb2.FILTER_OPERATOR_NOT_EQUAL,
    "gt": common_pb2.FILTER_OPERATOR_GREATER_THAN,
    "gte": common_pb2.FILTER_OPERATOR_GREATER_THAN_OR_EQUAL,
    "lt": common_pb2.FILTER_OPERATOR_LESS_THAN,
    "lte": common_pb2.FILTER_OPERATOR_LESS_THAN_OR_EQUAL,
    "in": common_pb2.FILTER_OPERATOR_IN,
    "any": common_pb2.FILTER_OPERATOR_CONTAINS_ANY,
    "all": common_pb2.FILTER_OPERATOR_CONTAINS_ALL,
    "like": common_pb2.FILTER_OPERATOR_LIKE,
    "null": common_pb2.FILTER_OPERATOR_IS_NULL,
}


def cond(field: str, op: str, v: object) -> common_pb2.Filter:
    c = common_pb2.Condition(field=field, operator=OPS[op])
    if isinstance(v, list):
        c.values.values.extend(value(x) for x in v)
    else:
        c.value.CopyFrom(value(v))
    return common_pb2.Filter(condition=c)


def all_of(*fs: common_pb2.Filter) -> common_pb2.Filter:
    return common_pb2.Filter(all_of=common_pb2.FilterList(filters=list(fs)))


def any_of(*fs: common_pb2.Filter) -> common_pb2.Filter:
    return common_pb2.Filter(any_of=common_pb2.FilterList(filters=list(fs)))


def negate(f: common_pb2.Filter) -> common_pb2.Filter:
    return common_pb2.Filter(negate=f)


T0 = datetime(2024, 1, 1, tzinfo=UTC)
