"""Proto <-> console domain, both directions, nowhere else."""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from imagesearch.v1 import common_pb2, gateway_pb2

from services.console.domain import (
    AssetView,
    Click,
    IngestItemOutcome,
    ResultCard,
    ResultsPage,
    Scores,
    SearchQuery,
    Upload,
)

OUTCOME_NAMES = {
    v.number: v.name.removeprefix("INGEST_OUTCOME_").lower()
    for v in gateway_pb2.IngestOutcome.DESCRIPTOR.values
}


def _timestamp(day: dt.date, end_of_day: bool) -> Timestamp:
    moment = dt.datetime.combine(day, dt.time.max if end_of_day else dt.time.min)
    ts = Timestamp()
    ts.FromDatetime(moment)  # naive = UTC for protobuf
    return ts


def _condition(field: str, operator: int, **operand: Any) -> common_pb2.Filter:
    return common_pb2.Filter(condition=common_pb2.Condition(field=field, operator=operator, **operand))  # type: ignore[arg-type]


def filter_pb(query: SearchQuery) -> common_pb2.Filter | None:
    """The form's tag and date filters as one ANDed Filter (None when the form sets none)."""
    members = []
    if query.tag:
        members.append(
            _condition(
                "tags",
                common_pb2.FILTER_OPERATOR_CONTAINS_ANY,
                values=common_pb2.ValueList(values=[common_pb2.Value(string_value=query.tag)]),
            )
        )
    if query.created_from:
        members.append(
            _condition(
                "created_at",
                common_pb2.FILTER_OPERATOR_GREATER_THAN_OR_EQUAL,
                value=common_pb2.Value(timestamp_value=_timestamp(query.created_from, end_of_day=False)),
            )
        )
    if query.created_to:
        members.append(
            _condition(
                "created_at",
                common_pb2.FILTER_OPERATOR_LESS_THAN_OR_EQUAL,
                value=common_pb2.Value(timestamp_value=_timestamp(query.created_to, end_of_day=True)),
            )
        )
    if not members:
        return None
    if len(members) == 1:
        return members[0]
    return common_pb2.Filter(all_of=common_pb2.FilterList(filters=members))


def rerank_pb(query: SearchQuery) -> gateway_pb2.RerankOptions:
    options = gateway_pb2.RerankOptions(disable=not query.rerank)
    if query.text_weight is not None:
        options.text_weight = query.text_weight
    if query.mmr_lambda is not None:
        options.mmr_lambda = query.mmr_lambda
    return options


def search_request_pb(query: SearchQuery) -> gateway_pb2.SearchRequest:
    request = gateway_pb2.SearchRequest(
        text=query.text,
        image=query.image or b"",
        page_size=query.page_size,
        page_token=query.page_token,
        rerank=rerank_pb(query),
        licenses=list(query.licenses),
    )
    if query.alpha is not None:
        request.alpha = query.alpha
    condition = filter_pb(query)
    if condition is not None:
        request.filter.CopyFrom(condition)
    return request


def similar_request_pb(asset_id: str, query: SearchQuery) -> gateway_pb2.SearchSimilarRequest:
    request = gateway_pb2.SearchSimilarRequest(
        asset_id=asset_id, page_size=query.page_size, page_token=query.page_token, rerank=rerank_pb(query)
    )
    condition = filter_pb(query)
    if condition is not None:
        request.filter.CopyFrom(condition)
    return request


def _datetime(ts: Timestamp, present: bool) -> dt.datetime | None:
    return ts.ToDatetime(tzinfo=dt.UTC) if present else None


def model_name(model: common_pb2.ModelRef) -> str:
    return f"{model.name} {model.version}".strip()


def asset_view(asset: common_pb2.Asset) -> AssetView:
    return AssetView(
        asset_id=asset.asset_id,
        caption=asset.caption,
        tags=tuple(asset.tags),
        ocr_text=asset.ocr_text,
        owner=asset.owner,
        license_name=asset.license.name,
        license_expires_at=_datetime(asset.license.expires_at, asset.license.HasField("expires_at")),
        safety_labels=tuple((label.label, label.score) for label in asset.safety_labels),
        safety_score=asset.safety_score,
        source=asset.source,
        uri=asset.uri,
        created_at=_datetime(asset.created_at, asset.HasField("created_at")),
        updated_at=_datetime(asset.updated_at, asset.HasField("updated_at")),
        width=asset.width,
        height=asset.height,
        content_sha256=asset.content_sha256,
        model=model_name(asset.embedding_model),
        popularity=asset.popularity,
    )


def _scores(s: gateway_pb2.StageScores) -> Scores:
    return Scores(
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
    )


def results_page(response: gateway_pb2.SearchResponse | gateway_pb2.SearchSimilarResponse) -> ResultsPage:
    """One page of results; each result's rank is 1-based on its page (what feedback events carry)."""
    model = getattr(response, "model", None)
    return ResultsPage(
        results=tuple(
            ResultCard(
                rank=i + 1,
                asset=asset_view(r.asset),
                scores=_scores(r.scores),
                rerank_notes=tuple(r.rerank_notes),
                policy_reasons=tuple(r.policy.reasons),
            )
            for i, r in enumerate(response.results)
        ),
        next_page_token=response.next_page_token,
        degraded=response.degraded,
        degraded_reasons=tuple(response.degraded_reasons),
        cached=bool(getattr(response, "cached", False)),  # SearchSimilarResponse has no cached flag
        model=model_name(model) if model is not None else "",
        search_id=response.search_id,
        arm=response.arm,
    )


def ingest_request_pb(upload: Upload) -> gateway_pb2.IngestRequest:
    return gateway_pb2.IngestRequest(
        asset_id=upload.asset_id,
        image=upload.data,
        caption=upload.caption,
        tags=list(upload.tags),
        license=common_pb2.License(name=upload.license_name),
        source="console",
    )


def ingest_outcome(ack: gateway_pb2.IngestResponse) -> IngestItemOutcome:
    return IngestItemOutcome(
        asset_id=ack.asset_id,
        outcome=OUTCOME_NAMES.get(ack.outcome, "unknown"),
        message=ack.error.message if ack.HasField("error") else "",
        duplicate_of=ack.duplicate_of,
        safety_labels=tuple((label.label, label.score) for label in ack.safety_labels),
        ocr_text=ack.ocr_text,
        analysis_pending=ack.analysis_state == common_pb2.ANALYSIS_STATE_PENDING,
    )


def feedback_request_pb(click: Click) -> gateway_pb2.RecordFeedbackRequest:
    return gateway_pb2.RecordFeedbackRequest(
        events=[
            gateway_pb2.FeedbackEvent(
                event_id=click.event_id,
                kind=gateway_pb2.FEEDBACK_KIND_CLICK,
                search_id=click.search_id,
                asset_id=click.asset_id,
                rank=click.rank,
            )
        ]
    )
