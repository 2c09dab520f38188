"""Proto <-> domain mapping for the search service, both directions; nothing else converts messages.

Wire-level problems of one batch item (an embedding whose bytes are not float32, a timestamp outside
google.protobuf.Timestamp's range) are returned as that item's `ItemFailure`, so the core can fail the
item alone; a malformed request raises InvalidArgument naming the field path.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from imagesearch.v1 import common_pb2, search_pb2

from services.common.errors import InvalidArgument, status_number
from services.common.limits import MAX_FILTER_VALUES, MAX_LIST_VALUES
from services.search import filters as flt
from services.search.domain import (
    ANALYSIS_ANALYSED,
    ANALYSIS_FAILED,
    ANALYSIS_PENDING,
    PRIMARY_VECTOR,
    VECTOR_NAME_RE,
    AssetDoc,
    AssetRecord,
    ContentHashMatch,
    Fusion,
    Hit,
    ItemFailure,
    ModelRef,
    ModelVectors,
    ModelVersionsView,
    PendingAsset,
    SafetyLabel,
    Stats,
    StreamedUpsert,
    UpsertOutcome,
    VectorSpec,
)

_OPS = {
    common_pb2.FILTER_OPERATOR_EQUAL: flt.Op.EQUAL,
    common_pb2.FILTER_OPERATOR_NOT_EQUAL: flt.Op.NOT_EQUAL,
    common_pb2.FILTER_OPERATOR_GREATER_THAN: flt.Op.GREATER_THAN,
    common_pb2.FILTER_OPERATOR_GREATER_THAN_OR_EQUAL: flt.Op.GREATER_THAN_OR_EQUAL,
    common_pb2.FILTER_OPERATOR_LESS_THAN: flt.Op.LESS_THAN,
    common_pb2.FILTER_OPERATOR_LESS_THAN_OR_EQUAL: flt.Op.LESS_THAN_OR_EQUAL,
    common_pb2.FILTER_OPERATOR_IN: flt.Op.IN,
    common_pb2.FILTER_OPERATOR_CONTAINS_ANY: flt.Op.CONTAINS_ANY,
    common_pb2.FILTER_OPERATOR_CONTAINS_ALL: flt.Op.CONTAINS_ALL,
    common_pb2.FILTER_OPERATOR_LIKE: flt.Op.LIKE,
    common_pb2.FILTER_OPERATOR_IS_NULL: flt.Op.IS_NULL,
}
_FUSIONS = {
    search_pb2.FUSION_TYPE_UNSPECIFIED: None,  # the server's default (settings)
    search_pb2.FUSION_TYPE_RELATIVE_SCORE: Fusion.RELATIVE_SCORE,
    search_pb2.FUSION_TYPE_RANKED: Fusion.RANKED,
    search_pb2.FUSION_TYPE_ADAPTIVE: Fusion.ADAPTIVE,
}
# Asset.analysis_state on the wire <-> AssetDoc.analysis_state ("" = stored before states existed).
_ANALYSIS_FROM_PB = {
    common_pb2.ANALYSIS_STATE_UNSPECIFIED: "",
    common_pb2.ANALYSIS_STATE_PENDING: ANALYSIS_PENDING,
    common_pb2.ANALYSIS_STATE_ANALYSED: ANALYSIS_ANALYSED,
    common_pb2.ANALYSIS_STATE_FAILED: ANALYSIS_FAILED,
}
_ANALYSIS_TO_PB = {v: k for k, v in _ANALYSIS_FROM_PB.items()}
_MAX_FILTER_DEPTH = 32
# google.protobuf.Timestamp's documented range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
# Outside it a Timestamp has no datetime (protobuf raises ValueError), so it is refused up front.
TIMESTAMP_MIN_SECONDS = -62_135_596_800
TIMESTAMP_MAX_SECONDS = 253_402_300_799
_MAX_NANOS = 999_999_999


# ---- proto -> domain ---------------------------------------------------------------------------------


def timestamp(t: Timestamp, path: str) -> datetime:
    """A Timestamp as an aware UTC datetime; InvalidArgument naming `path` when it is not a valid one."""
    if not TIMESTAMP_MIN_SECONDS <= t.seconds <= TIMESTAMP_MAX_SECONDS:
        raise InvalidArgument(
            f"{path}.seconds is {t.seconds}: a timestamp must lie between 0001-01-01T00:00:00Z and "
            f"9999-12-31T23:59:59Z (seconds {TIMESTAMP_MIN_SECONDS} to {TIMESTAMP_MAX_SECONDS})"
        )
    if not 0 <= t.nanos <= _MAX_NANOS:
        raise InvalidArgument(
            f"{path}.nanos is {t.nanos}: nanos must be in 0..{_MAX_NANOS} "
            "(a time before 1970 has negative seconds and non-negative nanos)"
        )
    return t.ToDatetime(tzinfo=UTC)


def _optional_ts(msg: common_pb2.Asset | common_pb2.License, field: str, path: str) -> datetime | None:
    return timestamp(getattr(msg, field), path) if msg.HasField(field) else None


def _model(m: common_pb2.ModelRef) -> ModelRef | None:
    return ModelRef(m.name, m.version) if (m.name or m.version) else None


def decode_vector(e: common_pb2.Embedding, what: str) -> np.ndarray:
    if len(e.values) % 4:
        raise InvalidArgument(f"{what}.values has {len(e.values)} bytes, not a multiple of 4 (float32)")
    return np.frombuffer(e.values, dtype="<f4").astype(np.float32)


def _failure(exc: InvalidArgument) -> ItemFailure:
    return ItemFailure(status_number(exc.code), exc.message)


def record_from_proto(r: search_pb2.AssetRecord) -> tuple[AssetRecord, ItemFailure | None]:
    """The domain record, and the wire-level problem of this item if any (reported as its item error).

    Paths in the problem's message are relative to the AssetRecord (the item), e.g. `asset.created_at`.
    """
    a = r.asset
    problem = None
    try:
        license_expires_at = _optional_ts(a.license, "expires_at", "asset.license.expires_at")
        created_at = _optional_ts(a, "created_at", "asset.created_at")
    except InvalidArgument as exc:  # one bad field fails this item only (the core never writes it)
        license_expires_at = created_at = None
        problem = _failure(exc)
    analysis_state = _ANALYSIS_FROM_PB.get(a.analysis_state)
    if analysis_state is None:
        analysis_state = ANALYSIS_PENDING  # never stored: the item fails below
        problem = problem or ItemFailure(
            status_number(InvalidArgument.code),
            f"asset.analysis_state is {a.analysis_state}, not an AnalysisState "
            "(0 unspecified, 1 pending, 2 analysed, 3 failed)",
        )
    doc = AssetDoc(
        asset_id=a.asset_id,
        uri=a.uri,
        caption=a.caption,
        tags=tuple(a.tags),
        ocr_text=a.ocr_text,
        owner=a.owner,
        license_name=a.license.name,
        license_expires_at=license_expires_at,
        safety_labels=tuple(SafetyLabel(s.label, float(s.score)) for s in a.safety_labels),
        safety_score=float(a.safety_score),
        source=a.source,
        created_at=created_at,
        updated_at=None,  # always set by the service (the time of this write)
        width=int(a.width),
        height=int(a.height),
        content_sha256=a.content_sha256,
        embedding_model=_model(r.image_embedding.model),
        popularity=float(a.popularity),
        analysis_state=analysis_state,
    )
    vector = None
    named: dict[str, np.ndarray] = {}
    others: dict[ModelRef, ModelVectors] = {}
    try:
        if problem is None and r.HasField("image_embedding") and r.image_embedding.values:
            primary_name = r.image_embedding.vector_name
            if primary_name not in ("", PRIMARY_VECTOR):
                raise InvalidArgument(
                    f"image_embedding.vector_name is {primary_name[:40]!r}: image_embedding holds the "
                    f"primary vector (name empty or {PRIMARY_VECTOR!r}); send other vectors in `vectors`"
                )
            vector = decode_vector(r.image_embedding, "image_embedding")
        if problem is None:
            named, others = _vectors_of(r)
    except InvalidArgument as exc:  # fails this item only
        problem = _failure(exc)
    return AssetRecord(doc, vector, named, others), problem


def _named_vectors(r: search_pb2.AssetRecord) -> dict[str, np.ndarray]:
    """The record's non-primary vectors of image_embedding's model by name; InvalidArgument naming
    the first bad one."""
    return _vectors_of(r)[0]


def _vectors_of(r: search_pb2.AssetRecord) -> tuple[dict[str, np.ndarray], dict[ModelRef, ModelVectors]]:
    """image_embedding's model's other named vectors, and the vectors of other model versions."""
    out: dict[str, np.ndarray] = {}
    others: dict[ModelRef, ModelVectors] = {}
    primary_model = _model(r.image_embedding.model)
    for i, e in enumerate(r.vectors):
        path = f"vectors[{i}]"
        name = e.vector_name
        model = _model(e.model)
        if model != primary_model:
            if model is None or not model.name or not model.version:
                raise InvalidArgument(f"{path}.model needs a name and a version")
            if name not in ("", PRIMARY_VECTOR) and not VECTOR_NAME_RE.match(name):
                raise InvalidArgument(f"{path}.vector_name is {name[:40]!r}: not a vector name")
            vecs = others.setdefault(model, ModelVectors(None))
            if name in ("", PRIMARY_VECTOR):
                if vecs.vector is not None:
                    raise InvalidArgument(f"{path}: the primary vector of {model} repeats")
                vecs.vector = decode_vector(e, path)
            elif name in vecs.named:
                raise InvalidArgument(f"{path}.vector_name {name!r} of {model} repeats")
            else:
                vecs.named[name] = decode_vector(e, path)
            continue
        if not VECTOR_NAME_RE.match(name):
            raise InvalidArgument(
                f"{path}.vector_name is {name[:40]!r}: a vector name is 1-32 characters, lowercase letters, "
                "digits and '_', starting with a letter (e.g. 'visual')"
            )
        if name == PRIMARY_VECTOR:
            raise InvalidArgument(
                f"{path}.vector_name is {name!r}, the primary vector: send it as image_embedding"
            )
        if name in out:
            raise InvalidArgument(f"{path}.vector_name {name!r} repeats: each vector name at most once")
        out[name] = decode_vector(e, path)
    for model, vecs in others.items():
        if vecs.vector is None:
            raise InvalidArgument(f"vectors of {model} need its primary vector (vector_name empty)")
    return out, others


def _typed(v: common_pb2.Value, path: str) -> flt.TypedValue:
    kind = v.WhichOneof("kind") or ""
    if kind == "timestamp_value":
        return flt.TypedValue(kind, timestamp(v.timestamp_value, f"{path}.timestamp_value"))
    return flt.TypedValue(kind, getattr(v, kind) if kind else "")


_OPERATOR_NAMES = ", ".join(op.name for op in flt.Op)


class _FilterReader:
    """One filter's proto -> domain conversion, with its budgets.

    Each limit is checked when the node (or list) is first reached, before anything is built for it:
    a filter of 100,000 conditions or an IN list of 100,000 values is refused after reading one count,
    not after converting and validating every member. Every message names the field path, e.g.
    `filter.all_of.filters[2].condition.value.timestamp_value.seconds`.
    """

    def __init__(self, max_nodes: int) -> None:
        self.max_nodes = max_nodes
        self.nodes = 0
        self.values = 0

    def _count_nodes(self, n: int) -> None:
        self.nodes += n
        if self.nodes > self.max_nodes:
            raise InvalidArgument(
                f"the filter has more than {self.max_nodes} nodes (conditions, all_of, any_of and negate "
                "count one each); combine conditions, e.g. one IN list instead of many EQUAL conditions"
            )

    def node(self, f: common_pb2.Filter, path: str, depth: int) -> flt.FilterNode:
        if depth > _MAX_FILTER_DEPTH:
            raise InvalidArgument(f"{path}: the filter nests deeper than {_MAX_FILTER_DEPTH} levels")
        which = f.WhichOneof("expr")
        if which == "condition":
            return self.condition(f.condition, f"{path}.condition")
        if which == "all_of" or which == "any_of":
            members = getattr(f, which).filters
            self._count_nodes(len(members))  # the members, before any of them is converted
            children = [
                self.node(x, f"{path}.{which}.filters[{i}]", depth + 1) for i, x in enumerate(members)
            ]
            try:
                return flt.all_of(children) if which == "all_of" else flt.any_of(children)
            except InvalidArgument as exc:
                raise InvalidArgument(f"{path}.{which}: {exc.message}") from None
        if which == "negate":
            self._count_nodes(1)
            return flt.negate(self.node(f.negate, f"{path}.negate", depth + 1))
        raise InvalidArgument(f"{path}: a filter node has none of condition, all_of, any_of, negate set")

    def condition(self, c: common_pb2.Condition, path: str) -> flt.FilterNode:
        op = _OPS.get(c.operator)
        if op is None and c.operator != common_pb2.FILTER_OPERATOR_UNSPECIFIED:
            # An enum number this server does not know (proto3 enums are open): not an operator.
            raise InvalidArgument(
                f"{path}.operator is {c.operator}, which is not a FilterOperator; "
                f"use one of {_OPERATOR_NAMES}"
            )
        operand = c.WhichOneof("operand")
        value = values = None
        if operand == "value":
            value = _typed(c.value, f"{path}.value")
        elif operand == "values":
            items = c.values.values
            if len(items) > MAX_LIST_VALUES:
                raise InvalidArgument(
                    f"{path}.values: filter on '{c.field}' has {len(items)} values; a list takes at most "
                    f"{MAX_LIST_VALUES}"
                )
            self.values += len(items)
            if self.values > MAX_FILTER_VALUES:
                raise InvalidArgument(
                    f"{path}.values: the filter's lists hold more than {MAX_FILTER_VALUES} values in all"
                )
            values = [_typed(v, f"{path}.values.values[{i}]") for i, v in enumerate(items)]
        try:
            return flt.condition(c.field, op, value, values)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{path}: {exc.message}") from None


def filter_from_proto(f: common_pb2.Filter, *, max_nodes: int, path: str = "filter") -> flt.FilterNode:
    """The domain filter of a proto Filter; InvalidArgument naming the field path of the first problem,
    or when the filter has more than `max_nodes` nodes."""
    reader = _FilterReader(max_nodes)
    reader._count_nodes(1)  # the root
    return reader.node(f, path, 0)


# ---- domain -> proto ---------------------------------------------------------------------------------


def _pb_ts(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


def asset_to_proto(doc: AssetDoc, tenant: str) -> common_pb2.Asset:
    a = common_pb2.Asset(
        asset_id=doc.asset_id,
        tenant=tenant,
        uri=doc.uri,
        caption=doc.caption,
        tags=list(doc.tags),
        ocr_text=doc.ocr_text,
        owner=doc.owner,
        safety_labels=[common_pb2.SafetyLabel(label=s.label, score=s.score) for s in doc.safety_labels],
        safety_score=doc.safety_score,
        source=doc.source,
        width=doc.width,
        height=doc.height,
        content_sha256=doc.content_sha256,
        popularity=doc.popularity,
        analysis_state=_ANALYSIS_TO_PB[doc.analysis_state],  # type: ignore[arg-type]
    )
    if doc.license_name or doc.license_expires_at:
        a.license.name = doc.license_name
        if doc.license_expires_at:
            a.license.expires_at.CopyFrom(_pb_ts(doc.license_expires_at))
    if doc.created_at:
        a.created_at.CopyFrom(_pb_ts(doc.created_at))
    if doc.updated_at:
        a.updated_at.CopyFrom(_pb_ts(doc.updated_at))
    if doc.embedding_model:
        a.embedding_model.name = doc.embedding_model.name
        a.embedding_model.version = doc.embedding_model.version
    return a


def _embedding(vec: np.ndarray, model: ModelRef | None, name: str = "") -> common_pb2.Embedding:
    e = common_pb2.Embedding(values=vec.astype("<f4").tobytes(), vector_name=name)
    if model:
        e.model.name, e.model.version = model.name, model.version
    return e


# Packed candidate vectors (QueryRequest.packed_vector_encoding): numpy dtype per encoding.
_PACKED_DTYPES = {search_pb2.VECTOR_ENCODING_FLOAT32: "<f4", search_pb2.VECTOR_ENCODING_FLOAT16: "<f2"}


def packed_encoding(request: search_pb2.QueryRequest) -> int:
    """The request's packed_vector_encoding (UNSPECIFIED: not packed); InvalidArgument when unknown."""
    value = request.packed_vector_encoding
    if value != search_pb2.VECTOR_ENCODING_UNSPECIFIED and value not in _PACKED_DTYPES:
        raise InvalidArgument(
            f"packed_vector_encoding {value} is not a VectorEncoding; use VECTOR_ENCODING_FLOAT16, "
            "VECTOR_ENCODING_FLOAT32 or leave it unset (one float32 image_embedding per hit)"
        )
    return value


def query_response(hits: list[Hit], tenant: str, packed: int) -> search_pb2.QueryResponse:
    """The hits; with `packed` (a VectorEncoding), their vectors as one matrix (one conversion for the
    whole window instead of one message per hit)."""
    dtype = _PACKED_DTYPES.get(packed)
    if dtype is None:
        return search_pb2.QueryResponse(hits=[hit_to_proto(h, tenant) for h in hits])
    out = search_pb2.QueryResponse(hits=[hit_to_proto(h, tenant, with_vector=False) for h in hits])
    vectors = [h.vector for h in hits]
    dim = next((len(v) for v in vectors if v is not None), 0)
    if dim:
        matrix = np.zeros((len(hits), dim), dtype=dtype)
        missing = []
        for i, v in enumerate(vectors):
            if v is None:
                missing.append(i)
            else:
                matrix[i] = v
        out.packed_vectors.CopyFrom(
            search_pb2.PackedVectors(
                encoding=packed,  # type: ignore[arg-type]
                dimension=dim,
                values=matrix.tobytes(),
                missing_rows=missing,
            )
        )
    return out


def hit_to_proto(h: Hit, tenant: str, with_vector: bool = True) -> search_pb2.QueryHit:
    s = h.scores
    out = search_pb2.QueryHit(
        asset=asset_to_proto(h.doc, tenant),
        scores=search_pb2.ScoreBreakdown(
            fused=s.fused,
            keyword_contribution=s.keyword_contribution,
            vector_contribution=s.vector_contribution,
            bm25=s.bm25,
            cosine_similarity=s.cosine_similarity,
            vector_name=s.vector_name,
            vector_weight=s.vector_weight,
        ),
    )
    if with_vector and h.vector is not None:
        model = h.vector_model or h.doc.embedding_model
        out.image_embedding.CopyFrom(_embedding(h.vector, model, s.vector_name))
    return out


def _item_error(code: int, message: str) -> common_pb2.ItemError:
    return common_pb2.ItemError(code=code, message=message)


def query_from_proto(request: search_pb2.QueryRequest, *, max_filter_nodes: int) -> dict[str, Any]:
    """The keyword arguments of `SearchCore.plan` (which validates them and fills in the defaults).

    The filter is checked against `max_filter_nodes` while it is read (see _FilterReader)."""
    vector = None
    vector_model = None
    if request.HasField("vector") and (request.vector.values or request.vector.model.name):
        vector = decode_vector(request.vector, "vector")
        vector_model = _model(request.vector.model)
    vector_name = request.vector.vector_name if request.HasField("vector") else ""
    if request.fusion not in _FUSIONS:
        raise InvalidArgument(f"unknown fusion type {request.fusion}")
    fusion = _FUSIONS[request.fusion]
    return dict(
        text=request.text,
        vector=vector,
        vector_model=vector_model,
        vector_name=vector_name,
        alpha=request.alpha if request.HasField("alpha") else None,
        fusion=fusion,
        filter=filter_from_proto(request.filter, max_nodes=max_filter_nodes)
        if request.HasField("filter")
        else None,
        limit=request.limit,
        offset=request.offset,
        window=request.candidate_window,
        keyword_fields=[(k.name, k.boost) for k in request.keyword_fields],
        include_vectors=request.include_vectors,
    )


def streamed_from_proto(request: search_pb2.StreamUpsertAssetsRequest) -> StreamedUpsert:
    record, problem = record_from_proto(request.asset)
    return StreamedUpsert(request.tenant, record, problem)


def upsert_result(outcome: UpsertOutcome) -> search_pb2.UpsertResult:
    result = search_pb2.UpsertResult(asset_id=outcome.asset_id)
    if outcome.error is not None:
        result.error.CopyFrom(_item_error(outcome.error.code, outcome.error.message))
    return result


def asset_record_to_proto(record: AssetRecord, tenant: str) -> search_pb2.AssetRecord:
    out = search_pb2.AssetRecord(asset=asset_to_proto(record.doc, tenant))
    if record.vector is not None:
        out.image_embedding.CopyFrom(_embedding(record.vector, record.doc.embedding_model, PRIMARY_VECTOR))
    for name, vec in sorted(record.named.items()):
        out.vectors.append(_embedding(vec, record.doc.embedding_model, name))
    for model, vecs in record.others.items():
        if vecs.vector is not None:
            out.vectors.append(_embedding(vecs.vector, model, ""))
        for name, vec in sorted(vecs.named.items()):
            out.vectors.append(_embedding(vec, model, name))
    for model in record.models:
        out.models.append(common_pb2.ModelRef(name=model.name, version=model.version))
    return out


def model_from_proto(m: common_pb2.ModelRef, what: str = "model") -> ModelRef:
    if not m.name or not m.version:
        raise InvalidArgument(f"{what} needs a name and a version")
    return ModelRef(m.name, m.version)


def _model_pb(m: ModelRef) -> common_pb2.ModelRef:
    return common_pb2.ModelRef(name=m.name, version=m.version)


def model_versions_to_proto(view: ModelVersionsView) -> search_pb2.GetModelVersionsResponse:
    out = search_pb2.GetModelVersionsResponse(asset_count=view.asset_count, index_generation=view.generation)
    if view.active is not None:
        out.active.CopyFrom(_model_pb(view.active))
    if view.previous is not None:
        out.previous.CopyFrom(_model_pb(view.previous))
    for v in view.versions:
        out.versions.append(
            search_pb2.ModelVersion(
                model=_model_pb(v.model),
                held=v.held,
                active=v.active,
                primary_slot=v.primary_slot,
                assets_covered=v.covered,
                vectors=[_vector_spec(s) for s in v.vectors],
            )
        )
    return out


def _vector_spec(v: VectorSpec) -> common_pb2.VectorSpec:
    return common_pb2.VectorSpec(
        name=v.name, dimension=v.dimension, from_text=v.primary, from_image=True, primary=v.primary
    )


def content_hash_matches_to_proto(matches: list[ContentHashMatch]) -> search_pb2.FindByContentHashResponse:
    return search_pb2.FindByContentHashResponse(
        matches=[
            search_pb2.ContentHashMatch(content_sha256=m.content_sha256, asset_ids=list(m.asset_ids))
            for m in matches
        ]
    )


def stats_to_proto(stats: Stats, generation: int, backend: str, cache: str) -> search_pb2.GetStatsResponse:
    out = search_pb2.GetStatsResponse(
        asset_count=stats.asset_count,
        index_generation=generation,
        backend=backend,
        dimension=stats.dimension,
        cache=cache,
    )
    if stats.model is not None:
        out.model.name, out.model.version = stats.model.name, stats.model.version
    for v in stats.vectors:
        out.vectors.append(_vector_spec(v))
    for m in stats.models:
        out.models.append(_model_pb(m))
    return out


def pending_to_proto(items: list[PendingAsset]) -> search_pb2.ListPendingAnalysisResponse:
    out = search_pb2.ListPendingAnalysisResponse()
    for p in items:
        m = out.assets.add(tenant=p.tenant, asset_id=p.asset_id, content_sha256=p.content_sha256)
        if p.updated_at is not None:
            m.updated_at.CopyFrom(_pb_ts(p.updated_at))
    return out
