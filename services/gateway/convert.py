"""Mapping between imagesearch.v1 protos and the gateway's domain types (the only place both meet).

Both sides use it: the servicer for the gateway's own messages, the backends for the encoder's and
the search service's.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from imagesearch.v1 import admin_pb2, common_pb2, encoder_pb2, gateway_pb2, search_pb2

from services.common.errors import InvalidArgument
from services.gateway import domain as m
from services.gateway.backends.errors import BackendError
from services.gateway.drift import StreamReport
from services.gateway.limits import MAX_FILTER_NODES, MAX_FILTER_VALUES, MAX_LIST_VALUES

# Value fields that must carry a timestamp / int / double (the rest are strings).
_TIMESTAMP_FIELDS = {"created_at", "updated_at", "license_expires_at"}
_MAX_FILTER_DEPTH = 16


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# protobuf's valid Timestamp range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_TIMESTAMP_SECONDS_MIN = -62_135_596_800
_TIMESTAMP_SECONDS_MAX = 253_402_300_799


def ts_to_dt(ts: Timestamp, present: bool = True) -> dt.datetime | None:
    if not present:
        return None
    # Exact, as protobuf's own ToDatetime (integer arithmetic, nanos truncated to microseconds, no float
    # rounding): an item re-sent with the expiry it was stored with must compare equal to the stored
    # one (UNCHANGED, not UPDATED). Inlined because every hit of a candidate window converts two or
    # three; an invalid one goes to ToDatetime for protobuf's own ValueError.
    seconds, nanos = ts.seconds, ts.nanos
    if _TIMESTAMP_SECONDS_MIN <= seconds <= _TIMESTAMP_SECONDS_MAX and 0 <= nanos < 1_000_000_000:
        return _EPOCH + dt.timedelta(seconds=seconds, microseconds=nanos // 1000)
    return ts.ToDatetime(tzinfo=dt.UTC)


def timestamp(ts: Timestamp, what: str) -> dt.datetime:
    """A caller's timestamp; INVALID_ARGUMENT naming `what` when it is not a valid Timestamp (seconds
    outside the years 1-9999 or nanos outside one second: protobuf's own range check)."""
    try:
        return ts.ToDatetime(tzinfo=dt.UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(
            f"{what} is not a valid timestamp (seconds={ts.seconds}, nanos={ts.nanos}): it must lie "
            "between 0001-01-01 and 9999-12-31 UTC, with nanos in [0, 999999999]"
        ) from None


def dt_to_ts(value: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(dt.UTC).replace(tzinfo=None))
    return ts


def model_ref(ref: common_pb2.ModelRef | None) -> m.ModelRef | None:
    if ref is None or (not ref.name and not ref.version):
        return None
    return m.ModelRef(ref.name, ref.version)


def model_ref_pb(ref: m.ModelRef | None) -> common_pb2.ModelRef | None:
    if ref is None:
        return None
    return common_pb2.ModelRef(name=ref.name, version=ref.version)


def vector(e: common_pb2.Embedding) -> m.Vector | None:
    if not e.values:
        return None
    return np.frombuffer(e.values, dtype="<f4").astype(np.float32, copy=False)


def embedding_pb(v: m.Vector, ref: m.ModelRef | None, name: str = "") -> common_pb2.Embedding:
    return common_pb2.Embedding(
        values=np.asarray(v, dtype="<f4").tobytes(), model=model_ref_pb(ref), vector_name=name
    )


def named_vectors(embeddings: Sequence[common_pb2.Embedding]) -> dict[str, m.Vector]:
    """The non-primary named vectors of a list that may also hold the primary (EncodeResult.vectors)."""
    out: dict[str, m.Vector] = {}
    for e in embeddings:
        v = vector(e)
        if e.vector_name not in ("", m.PRIMARY_VECTOR) and v is not None:
            out[e.vector_name] = v
    return out


# ----------------------------------------------------------------------------------------------
# Asset


def asset(a: common_pb2.Asset) -> m.Asset:
    has_license = a.HasField("license")
    return m.Asset(
        asset_id=a.asset_id,
        tenant=a.tenant,
        uri=a.uri,
        caption=a.caption,
        tags=list(a.tags),
        ocr_text=a.ocr_text,
        owner=a.owner,
        license_name=a.license.name if has_license else "",
        license_expires_at=(
            ts_to_dt(a.license.expires_at) if has_license and a.license.HasField("expires_at") else None
        ),
        safety_labels=[m.SafetyLabel(s.label, float(s.score)) for s in a.safety_labels],
        safety_score=float(a.safety_score),
        source=a.source,
        created_at=ts_to_dt(a.created_at, a.HasField("created_at")),
        updated_at=ts_to_dt(a.updated_at, a.HasField("updated_at")),
        width=a.width,
        height=a.height,
        content_sha256=a.content_sha256,
        embedding_model=model_ref(a.embedding_model) if a.HasField("embedding_model") else None,
        popularity=a.popularity,
        analysis_state=analysis_state(a.analysis_state),
    )


_ANALYSIS_STATES = frozenset(state.value for state in m.AnalysisState)


def page_asset_message(source: common_pb2.Asset) -> common_pb2.Asset:
    """The search service's asset as a page sends it: the message `asset_pb(asset(source))` builds,
    made by a copy in C and the few changes that round trip makes (fields this gateway does not know
    dropped, a licence always present, times truncated to microseconds, an unknown analysis state
    FAILED, a model reference with neither name nor version left out). Its times are valid:
    `asset_summary` read them from the same message.

    A copy, not `source` itself: a part of a message keeps its whole response alive (the candidate
    window's hits and vectors), and a page-cache entry would hold that response for its lifetime."""
    out = common_pb2.Asset()
    out.CopyFrom(source)
    out.DiscardUnknownFields()
    out.license.SetInParent()
    for ts in (out.created_at, out.updated_at, out.license.expires_at):
        below_us = ts.nanos % 1000  # non-zero only for a set time: reading an unset one sets nothing
        if below_us:
            ts.nanos -= below_us
    if out.analysis_state not in _ANALYSIS_STATES:
        out.analysis_state = common_pb2.ANALYSIS_STATE_FAILED
    if out.HasField("embedding_model") and not (out.embedding_model.name or out.embedding_model.version):
        out.ClearField("embedding_model")
    return out


def analysis_state(value: int) -> m.AnalysisState:
    """A state number from the search service; one this gateway does not know counts as FAILED (an
    asset is shown only when its analysis is known to be done)."""
    try:
        return m.AnalysisState(value)
    except ValueError:
        return m.AnalysisState.FAILED


def asset_summary(a: common_pb2.Asset) -> m.AssetSummary:
    """The fields ranking and policy read (see `m.Hit`: the rest is converted only for the page)."""
    lic = a.license
    return m.AssetSummary(
        asset_id=a.asset_id,
        tenant=a.tenant,
        caption=a.caption,
        license_name=lic.name,
        license_expires_at=ts_to_dt(lic.expires_at) if lic.HasField("expires_at") else None,
        safety_score=float(a.safety_score),
        created_at=ts_to_dt(a.created_at) if a.HasField("created_at") else None,
        updated_at=ts_to_dt(a.updated_at) if a.HasField("updated_at") else None,
        content_sha256=a.content_sha256,
        embedding_model=model_ref(a.embedding_model) if a.HasField("embedding_model") else None,
        popularity=a.popularity,
    )


def asset_pb(a: m.Asset) -> common_pb2.Asset:
    lic = common_pb2.License(name=a.license_name)
    if a.license_expires_at is not None:
        lic.expires_at.CopyFrom(dt_to_ts(a.license_expires_at))
    out = common_pb2.Asset(
        asset_id=a.asset_id,
        tenant=a.tenant,
        uri=a.uri,
        caption=a.caption,
        tags=a.tags,
        ocr_text=a.ocr_text,
        owner=a.owner,
        license=lic,
        safety_labels=[common_pb2.SafetyLabel(label=s.label, score=s.score) for s in a.safety_labels],
        safety_score=a.safety_score,
        source=a.source,
        width=a.width,
        height=a.height,
        content_sha256=a.content_sha256,
        popularity=a.popularity,
        analysis_state=a.analysis_state.value,  # type: ignore[arg-type]
    )
    if a.created_at is not None:
        out.created_at.CopyFrom(dt_to_ts(a.created_at))
    if a.updated_at is not None:
        out.updated_at.CopyFrom(dt_to_ts(a.updated_at))
    if a.embedding_model is not None:
        out.embedding_model.CopyFrom(
            common_pb2.ModelRef(name=a.embedding_model.name, version=a.embedding_model.version)
        )
    return out


# ----------------------------------------------------------------------------------------------
# Filter


def _value(v: common_pb2.Value, fld: str) -> m.Scalar:
    kind = v.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument(
            f"filter on {fld!r}: the value is empty; set one of string/int/double/bool/timestamp"
        )
    if kind == "timestamp_value":
        return timestamp(v.timestamp_value, f"filter on {fld!r}: the value")
    return getattr(v, kind)  # type: ignore[no-any-return]


def filter_from_pb(f: common_pb2.Filter) -> m.Filter:
    """A caller's filter as a domain filter, checked at the gateway's boundary with the answers the
    search service would give: every node set (an empty node is not "no filter"), operators known,
    nesting depth, values present and timestamps valid. Field names and value types are validated by
    the search service (which knows its schema). The search service's size caps (nodes, list lengths)
    are checked as the tree is read, so refusing an oversized filter costs no more than the cap."""
    return _filter(f, 0, _FilterBudget(MAX_FILTER_NODES, MAX_FILTER_VALUES))


@dataclass
class _FilterBudget:
    """What is left of the caps as the tree is read."""

    nodes: int
    values: int


def _filter(f: common_pb2.Filter, depth: int, budget: _FilterBudget) -> m.Filter:
    if depth > _MAX_FILTER_DEPTH:
        raise InvalidArgument(f"filter nesting is deeper than {_MAX_FILTER_DEPTH}")
    budget.nodes -= 1
    if budget.nodes < 0:
        raise InvalidArgument(f"the filter has more than {MAX_FILTER_NODES} nodes")
    which = f.WhichOneof("expr")
    if which is None:
        raise InvalidArgument("a filter node has none of condition, all_of, any_of, negate set")
    if which == "condition":
        return _condition(f.condition, budget)
    if which in ("all_of", "any_of"):
        members = tuple(_filter(g, depth + 1, budget) for g in getattr(f, which).filters)
        if not members:
            raise InvalidArgument(f"filter {which} needs at least one member")
        return m.AllOf(members) if which == "all_of" else m.AnyOf(members)
    return m.Not(_filter(f.negate, depth + 1, budget))


_OPERATORS = ", ".join(op.name for op in m.Op)


def _condition(c: common_pb2.Condition, budget: _FilterBudget) -> m.Condition:
    if not c.field:
        raise InvalidArgument("filter condition has no field name")
    if c.operator == common_pb2.FILTER_OPERATOR_UNSPECIFIED:
        raise InvalidArgument(f"filter condition on {c.field!r} has no operator")
    try:
        op = m.Op(c.operator)
    except ValueError:  # a number this contract does not define (a newer client, or garbage)
        raise InvalidArgument(
            f"filter condition on {c.field!r}: operator {c.operator} is unknown; use one of {_OPERATORS}"
        ) from None
    operand = c.WhichOneof("operand")
    if operand == "values":
        if len(c.values.values) > MAX_LIST_VALUES:  # counted before any value is converted
            raise InvalidArgument(
                f"filter on '{c.field}': {op.name} takes at most {MAX_LIST_VALUES} values, "
                f"got {len(c.values.values)}"
            )
        budget.values -= len(c.values.values)
        if budget.values < 0:
            raise InvalidArgument(f"the filter's lists hold more than {MAX_FILTER_VALUES} values in all")
        values = tuple(_value(v, c.field) for v in c.values.values)
        if not values:
            raise InvalidArgument(f"filter condition on {c.field!r}: the value list is empty")
        return m.Condition(c.field, op, values)
    if operand == "value":
        return m.Condition(c.field, op, _value(c.value, c.field))
    raise InvalidArgument(f"filter condition on {c.field!r} has no operand")


def _value_pb(v: m.Scalar) -> common_pb2.Value:
    if isinstance(v, bool):
        return common_pb2.Value(bool_value=v)
    if isinstance(v, int):
        return common_pb2.Value(int_value=v)
    if isinstance(v, float):
        return common_pb2.Value(double_value=v)
    if isinstance(v, dt.datetime):
        return common_pb2.Value(timestamp_value=dt_to_ts(v))
    return common_pb2.Value(string_value=v)


def filter_pb(f: m.Filter | None) -> common_pb2.Filter | None:
    if f is None:
        return None
    if isinstance(f, m.Condition):
        cond = common_pb2.Condition(field=f.field, operator=f.op.value)
        if isinstance(f.value, tuple):
            cond.values.CopyFrom(common_pb2.ValueList(values=[_value_pb(v) for v in f.value]))
        else:
            cond.value.CopyFrom(_value_pb(f.value))
        return common_pb2.Filter(condition=cond)
    if isinstance(f, m.AllOf | m.AnyOf):
        members = [x for x in (filter_pb(g) for g in f.filters) if x is not None]
        lst = common_pb2.FilterList(filters=members)
        return common_pb2.Filter(all_of=lst) if isinstance(f, m.AllOf) else common_pb2.Filter(any_of=lst)
    inner = filter_pb(f.filter)
    return common_pb2.Filter(negate=inner)


# ----------------------------------------------------------------------------------------------
# Gateway requests and responses


def rerank_options(r: gateway_pb2.RerankOptions) -> m.RerankOptions:
    def opt(name: str) -> float | None:
        return getattr(r, name) if r.HasField(name) else None

    window = r.candidate_window if r.HasField("candidate_window") else None
    return m.RerankOptions(
        disable=r.disable,
        candidate_window=window,
        text_weight=opt("text_weight"),
        mmr_lambda=opt("mmr_lambda"),
        duplicate_threshold=opt("duplicate_threshold"),
        freshness_weight=opt("freshness_weight"),
        popularity_weight=opt("popularity_weight"),
    )


def result_pb(r: m.SearchResult) -> gateway_pb2.SearchResult:
    s = r.scores
    out = gateway_pb2.SearchResult(
        scores=gateway_pb2.StageScores(
            keyword=s.keyword,
            vector=s.vector,
            fused=s.fused,
            text_cosine=s.text_cosine,
            image_cosine=s.image_cosine,
            rerank=s.rerank,
            boost=s.boost,
            final=s.final,
            first_stage_rank=s.first_stage_rank,
            vector_name=s.vector_name,
        ),
        rerank_notes=r.rerank_notes,
        policy=gateway_pb2.PolicyVerdict(reasons=r.policy_reasons),
    )
    if r.asset_message is not None:
        out.asset.CopyFrom(r.asset_message)
    elif isinstance(r.asset, m.Asset):
        out.asset.CopyFrom(asset_pb(r.asset))
    else:
        raise ValueError(f"result {r.asset.asset_id!r} carries neither a complete asset nor its message")
    return out


_FEEDBACK_KINDS = {
    gateway_pb2.FEEDBACK_KIND_CLICK: m.FeedbackKind.CLICK,
    gateway_pb2.FEEDBACK_KIND_DWELL: m.FeedbackKind.DWELL,
    gateway_pb2.FEEDBACK_KIND_RATING: m.FeedbackKind.RATING,
}
_FEEDBACK_OUTCOMES = {
    m.FeedbackOutcome.RECORDED: gateway_pb2.FEEDBACK_OUTCOME_RECORDED,
    m.FeedbackOutcome.DUPLICATE: gateway_pb2.FEEDBACK_OUTCOME_DUPLICATE,
    m.FeedbackOutcome.FAILED: gateway_pb2.FEEDBACK_OUTCOME_FAILED,
}


def feedback_event(e: gateway_pb2.FeedbackEvent) -> m.FeedbackEvent:
    """Never raises: an unreadable occurred_at fails only its event (`FeedbackEvent.invalid`)."""
    occurred_at: dt.datetime | None = None
    invalid = ""
    if e.HasField("occurred_at"):
        try:
            occurred_at = timestamp(e.occurred_at, "occurred_at")
        except InvalidArgument as exc:
            invalid = exc.message
    return m.FeedbackEvent(
        event_id=e.event_id,
        kind=_FEEDBACK_KINDS.get(e.kind),
        search_id=e.search_id,
        asset_id=e.asset_id,
        rank=e.rank,
        dwell_ms=e.dwell_ms,
        rating=e.rating,
        occurred_at=occurred_at,
        invalid=invalid,
    )


def feedback_result_pb(a: m.FeedbackAck) -> gateway_pb2.FeedbackResult:
    out = gateway_pb2.FeedbackResult(event_id=a.event_id, outcome=_FEEDBACK_OUTCOMES[a.outcome])
    if a.outcome is m.FeedbackOutcome.FAILED:
        out.error.CopyFrom(common_pb2.ItemError(code=a.error_code, message=a.error_message))
    return out


def ingest_item(req: gateway_pb2.IngestRequest) -> m.IngestItem:
    """Never raises: a field that cannot be read fails only its item (`IngestItem.invalid`), so one
    bad item cannot end the stream of the good ones around it."""
    has_license = req.HasField("license")
    expires: dt.datetime | None = None
    invalid = ""
    if has_license and req.license.HasField("expires_at"):
        try:
            expires = timestamp(req.license.expires_at, "license.expires_at")
        except InvalidArgument as exc:
            invalid = exc.message
    return m.IngestItem(
        asset_id=req.asset_id,
        image=req.image,
        uri=req.uri,
        caption=req.caption,
        tags=tuple(req.tags),
        owner=req.owner,
        license_name=req.license.name if has_license else "",
        license_expires_at=expires,
        source=req.source,
        popularity=req.popularity,
        invalid=invalid,
    )


def ingest_ack_pb(a: m.IngestAck) -> gateway_pb2.IngestResponse:
    out = gateway_pb2.IngestResponse(
        asset_id=a.asset_id,
        outcome=a.outcome.value,
        content_sha256=a.content_sha256,
        safety_labels=[common_pb2.SafetyLabel(label=s.label, score=s.score) for s in a.safety_labels],
        ocr_text=a.ocr_text,
        duplicate_of=a.duplicate_of,
        analysis_state=a.analysis_state.value,  # type: ignore[arg-type]
    )
    if a.outcome in (m.IngestOutcome.FAILED, m.IngestOutcome.UNCERTAIN):
        out.error.CopyFrom(common_pb2.ItemError(code=a.error_code, message=a.error_message))
    return out


# ----------------------------------------------------------------------------------------------
# Encoder service


_IMAGE_VARIANTS = {
    gateway_pb2.IMAGE_VARIANT_UNSPECIFIED: m.ImageVariant.ORIGINAL,
    gateway_pb2.IMAGE_VARIANT_ORIGINAL: m.ImageVariant.ORIGINAL,
    gateway_pb2.IMAGE_VARIANT_THUMBNAIL: m.ImageVariant.THUMBNAIL,
}


def image_variant(v: int) -> m.ImageVariant:
    try:
        return _IMAGE_VARIANTS[v]
    except KeyError:
        raise InvalidArgument(
            f"variant {v} is not an ImageVariant (IMAGE_VARIANT_ORIGINAL or IMAGE_VARIANT_THUMBNAIL)"
        ) from None


def asset_image_pbs(image: m.AssetImage, chunk_bytes: int) -> Iterator[gateway_pb2.GetAssetImageResponse]:
    """The image as a stream: the first message carries the metadata (and the first chunk)."""
    data = memoryview(image.data)
    yield gateway_pb2.GetAssetImageResponse(
        content_type=image.content_type,
        total_bytes=len(data),
        content_sha256=image.content_sha256,
        chunk=bytes(data[:chunk_bytes]),
    )
    for start in range(chunk_bytes, len(data), chunk_bytes):
        yield gateway_pb2.GetAssetImageResponse(chunk=bytes(data[start : start + chunk_bytes]))


def text_request(texts: Sequence[str]) -> encoder_pb2.EncodeTextsRequest:
    return encoder_pb2.EncodeTextsRequest(
        texts=[encoder_pb2.TextInput(id=str(i), text=t) for i, t in enumerate(texts)]
    )


def image_request(images: Sequence[bytes]) -> encoder_pb2.EncodeImagesRequest:
    return encoder_pb2.EncodeImagesRequest(
        images=[encoder_pb2.ImageInput(id=str(i), data=b) for i, b in enumerate(images)]
    )


def encoded_batch(
    resp: encoder_pb2.EncodeTextsResponse | encoder_pb2.EncodeImagesResponse,
) -> m.EncodedBatch:
    items = []
    for r in resp.results:
        if r.WhichOneof("outcome") == "embedding":
            items.append(
                m.Encoded(vector(r.embedding), truncated=r.truncated, named=named_vectors(r.vectors))
            )
        else:
            items.append(m.Encoded(None, r.error.code or 2, r.error.message or "encoding failed"))
    return m.EncodedBatch(model_ref(resp.model), items)


# ----------------------------------------------------------------------------------------------
# Search service


FUSION_PB = {
    "adaptive": search_pb2.FUSION_TYPE_ADAPTIVE,
    "relative_score": search_pb2.FUSION_TYPE_RELATIVE_SCORE,
    "ranked": search_pb2.FUSION_TYPE_RANKED,
}
_FUSION_NAMES = {number: name for name, number in FUSION_PB.items()}


def fusion_from_pb(value: int) -> str | None:
    """A request's FusionType: None for UNSPECIFIED (the defaults apply)."""
    if value == search_pb2.FUSION_TYPE_UNSPECIFIED:
        return None
    if value not in _FUSION_NAMES:
        raise InvalidArgument(
            f"fusion {value} is not a FusionType; use FUSION_TYPE_ADAPTIVE, _RELATIVE_SCORE or _RANKED"
        )
    return _FUSION_NAMES[value]


# settings.rerank_vector_encoding -> QueryRequest.packed_vector_encoding, and the packed values' dtype.
PACKED_ENCODINGS = {
    "per_hit": search_pb2.VECTOR_ENCODING_UNSPECIFIED,
    "float32": search_pb2.VECTOR_ENCODING_FLOAT32,
    "float16": search_pb2.VECTOR_ENCODING_FLOAT16,
}
_PACKED_DTYPES = {search_pb2.VECTOR_ENCODING_FLOAT32: "<f4", search_pb2.VECTOR_ENCODING_FLOAT16: "<f2"}


def query_request(
    spec: m.QuerySpec, packed: int = search_pb2.VECTOR_ENCODING_UNSPECIFIED
) -> search_pb2.QueryRequest:
    req = search_pb2.QueryRequest(
        tenant=spec.tenant,
        text=spec.text,
        limit=spec.limit,
        offset=spec.offset,
        candidate_window=spec.candidate_window,
        include_vectors=spec.include_vectors,
        skip_cache=spec.skip_cache,
        packed_vector_encoding=packed if spec.include_vectors else 0,  # type: ignore[arg-type]
    )
    if spec.vector is not None:
        req.vector.CopyFrom(embedding_pb(spec.vector, spec.model, spec.vector_name))
    if spec.alpha is not None:
        req.alpha = spec.alpha
    if spec.fusion is not None:
        req.fusion = FUSION_PB[spec.fusion]
    f = filter_pb(spec.filter)
    if f is not None:
        req.filter.CopyFrom(f)
    return req


def first_stage_scores(s: search_pb2.ScoreBreakdown) -> m.FirstStageScores:
    return m.FirstStageScores(
        fused=s.fused,
        keyword=s.keyword_contribution,
        vector=s.vector_contribution,
        bm25=s.bm25,
        cosine=s.cosine_similarity,
        vector_weight=s.vector_weight,
    )


def query_result(resp: search_pb2.QueryResponse) -> m.QueryResult:
    rows = packed_rows(resp)
    hits = [
        m.Hit(
            asset=asset_summary(h.asset),
            scores=first_stage_scores(h.scores),
            vector=(
                rows[i]
                if rows is not None
                else vector(h.image_embedding)
                if h.HasField("image_embedding")
                else None
            ),
            load_asset=functools.partial(asset, h.asset),
            load_asset_message=functools.partial(page_asset_message, h.asset),
        )
        for i, h in enumerate(resp.hits)
    ]
    return m.QueryResult(hits, cached=resp.cached, index_generation=resp.index_generation)


def packed_rows(resp: search_pb2.QueryResponse) -> list[m.Vector | None] | None:
    """The hits' vectors from a packed matrix (one decode for the window: rows are views of one float32
    array), None where a hit has none; None when the response is not packed."""
    if not resp.HasField("packed_vectors"):
        return None
    p = resp.packed_vectors
    dtype = _PACKED_DTYPES.get(p.encoding)
    n = len(resp.hits)
    if dtype is None or p.dimension <= 0 or len(p.values) != n * p.dimension * np.dtype(dtype).itemsize:
        raise BackendError(
            "search",
            f"packed vectors do not match the hits ({len(p.values)} bytes, {n} hits, dimension "
            f"{p.dimension}, encoding {p.encoding})",
            public="the search service returned malformed candidate vectors",
        )
    matrix = np.frombuffer(p.values, dtype=dtype).astype(np.float32).reshape(n, p.dimension)
    rows: list[m.Vector | None] = list(matrix)
    for i in p.missing_rows:
        if 0 <= i < n:
            rows[i] = None
    return rows


def stored_assets(resp: search_pb2.GetAssetsResponse) -> list[m.StoredAsset]:
    return [
        m.StoredAsset(
            asset(r.asset),
            vector(r.image_embedding) if r.HasField("image_embedding") else None,
            # the primary's model's named vectors (the others are other model versions')
            named_vectors([e for e in r.vectors if e.model == r.image_embedding.model]),
            other_versions(r),
        )
        for r in resp.assets
    ]


def other_versions(r: search_pb2.AssetRecord) -> dict[m.ModelRef, m.ModelVectors]:
    """A read asset's vectors of model versions other than its primary's (a version without its
    primary vector is left out: it is not held)."""
    primaries: dict[m.ModelRef, m.Vector] = {}
    named: dict[m.ModelRef, list[common_pb2.Embedding]] = {}
    for e in r.vectors:
        ref = model_ref(e.model)
        if ref is None or e.model == r.image_embedding.model:
            continue
        v = vector(e)
        if e.vector_name in ("", m.PRIMARY_VECTOR) and v is not None:
            primaries[ref] = v
        else:
            named.setdefault(ref, []).append(e)
    return {ref: m.ModelVectors(v, named_vectors(named.get(ref, []))) for ref, v in primaries.items()}


def scanned_assets(resp: search_pb2.ScanAssetsResponse) -> list[m.ScannedAsset]:
    return [
        m.ScannedAsset(
            r.asset.asset_id,
            r.asset.content_sha256,
            tuple(m.ModelRef(x.name, x.version) for x in r.models),
        )
        for r in resp.assets
    ]


def tenant_models(resp: search_pb2.GetModelVersionsResponse) -> m.TenantModels:
    return m.TenantModels(
        versions=tuple(
            m.TenantModelVersion(
                m.ModelRef(v.model.name, v.model.version), v.held, v.active, v.assets_covered
            )
            for v in resp.versions
        ),
        active=model_ref(resp.active) if resp.HasField("active") else None,
        previous=model_ref(resp.previous) if resp.HasField("previous") else None,
        asset_count=resp.asset_count,
    )


def vectors_only_request(
    tenant: str, items: Sequence[tuple[str, str, m.ModelRef, m.ModelVectors]]
) -> search_pb2.UpsertAssetsRequest:
    """A re-index write: (asset id, the content hash the vectors were computed from, model, vectors)."""
    return search_pb2.UpsertAssetsRequest(
        tenant=tenant,
        vectors_only=True,
        assets=[
            search_pb2.AssetRecord(
                asset=common_pb2.Asset(asset_id=aid, content_sha256=sha),
                image_embedding=embedding_pb(vecs.vector, model),
                vectors=[embedding_pb(v, model, name) for name, v in sorted(vecs.named.items())],
            )
            for aid, sha, model, vecs in items
        ],
    )


def upsert_request(tenant: str, records: Sequence[m.UpsertRecord]) -> search_pb2.UpsertAssetsRequest:
    return search_pb2.UpsertAssetsRequest(
        tenant=tenant,
        assets=[
            search_pb2.AssetRecord(
                asset=asset_pb(r.asset),
                image_embedding=embedding_pb(r.vector, r.model),
                vectors=[embedding_pb(v, r.model, name) for name, v in sorted(r.named.items())]
                + [
                    e
                    for model, vecs in r.others.items()
                    for e in [
                        embedding_pb(vecs.vector, model),
                        *(embedding_pb(v, model, name) for name, v in sorted(vecs.named.items())),
                    ]
                ],
            )
            for r in records
        ],
    )


def upsert_outcomes(resp: search_pb2.UpsertAssetsResponse) -> list[m.UpsertOutcome]:
    return [
        m.UpsertOutcome(r.asset_id, r.error.code if r.HasField("error") else 0, r.error.message)
        for r in resp.results
    ]


def pending_analysis(resp: search_pb2.ListPendingAnalysisResponse) -> list[m.PendingAnalysis]:
    return [
        m.PendingAnalysis(
            p.tenant, p.asset_id, p.content_sha256, ts_to_dt(p.updated_at, p.HasField("updated_at"))
        )
        for p in resp.assets
    ]


def content_hash_holders(resp: search_pb2.FindByContentHashResponse) -> dict[str, list[str]]:
    return {match.content_sha256: list(match.asset_ids) for match in resp.matches}


_DRIFT_STREAM_KINDS = {
    "image": gateway_pb2.DRIFT_STREAM_KIND_IMAGE,
    "query": gateway_pb2.DRIFT_STREAM_KIND_QUERY,
}


def drift_stream_pb(report: StreamReport) -> gateway_pb2.DriftStream:
    out = gateway_pb2.DriftStream(
        model=model_ref_pb(report.model),
        kind=_DRIFT_STREAM_KINDS[report.stream],
        samples=report.current.samples,
    )
    if report.drift is not None:
        out.drift_score = report.drift.score
    return out


# ----------------------------------------------------------------------------------------------
# Admin: model versions and re-index jobs (admin.proto)

_REINDEX_STATES = {
    "running": admin_pb2.REINDEX_STATE_RUNNING,
    "succeeded": admin_pb2.REINDEX_STATE_SUCCEEDED,
    "failed": admin_pb2.REINDEX_STATE_FAILED,
}


def model_from_pb(ref: common_pb2.ModelRef) -> m.ModelRef:
    return m.ModelRef(ref.name, ref.version)


def _ts(iso: str) -> Timestamp | None:
    if not iso:
        return None
    t = Timestamp()
    t.FromDatetime(dt.datetime.fromisoformat(iso))
    return t


def reindex_job_pb(job: m.ReindexJob) -> admin_pb2.ReindexJob:
    out = admin_pb2.ReindexJob(
        tenant=job.tenant,
        target=model_ref_pb(job.target),
        state=_REINDEX_STATES[job.state],
        total_assets=job.total_assets,
        scanned=job.scanned,
        reindexed=job.reindexed,
        already_done=job.already_done,
        missing_originals=job.missing_originals,
        missing_asset_ids=job.missing_asset_ids,
        failed=job.failed,
        error=job.error,
    )
    for name in ("started_at", "updated_at"):
        t = _ts(getattr(job, name))
        if t is not None:
            getattr(out, name).CopyFrom(t)
    return out


def tenant_models_pb(state: m.TenantModels) -> admin_pb2.ListModelVersionsResponse:
    out = admin_pb2.ListModelVersionsResponse(
        asset_count=state.asset_count,
        versions=[
            admin_pb2.TenantModelVersion(
                model=model_ref_pb(v.model),
                held=v.held,
                active=v.active,
                assets_covered=v.covered,
                encoder_configured=v.encoder_configured,
            )
            for v in state.versions
        ],
    )
    if state.active is not None:
        out.active.CopyFrom(model_ref_pb(state.active))
    if state.previous is not None:
        out.previous.CopyFrom(model_ref_pb(state.previous))
    return out
