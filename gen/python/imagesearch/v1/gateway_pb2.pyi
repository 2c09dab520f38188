from google.protobuf import timestamp_pb2 as _timestamp_pb2
from imagesearch.v1 import common_pb2 as _common_pb2
from imagesearch.v1 import search_pb2 as _search_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IngestOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INGEST_OUTCOME_UNSPECIFIED: _ClassVar[IngestOutcome]
    INGEST_OUTCOME_CREATED: _ClassVar[IngestOutcome]
    INGEST_OUTCOME_UPDATED: _ClassVar[IngestOutcome]
    INGEST_OUTCOME_UNCHANGED: _ClassVar[IngestOutcome]
    INGEST_OUTCOME_DUPLICATE: _ClassVar[IngestOutcome]
    INGEST_OUTCOME_FAILED: _ClassVar[IngestOutcome]
    INGEST_OUTCOME_UNCERTAIN: _ClassVar[IngestOutcome]

class ImageVariant(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_VARIANT_UNSPECIFIED: _ClassVar[ImageVariant]
    IMAGE_VARIANT_ORIGINAL: _ClassVar[ImageVariant]
    IMAGE_VARIANT_THUMBNAIL: _ClassVar[ImageVariant]

class FeedbackKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_KIND_UNSPECIFIED: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_CLICK: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_DWELL: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_RATING: _ClassVar[FeedbackKind]

class FeedbackOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_OUTCOME_UNSPECIFIED: _ClassVar[FeedbackOutcome]
    FEEDBACK_OUTCOME_RECORDED: _ClassVar[FeedbackOutcome]
    FEEDBACK_OUTCOME_DUPLICATE: _ClassVar[FeedbackOutcome]
    FEEDBACK_OUTCOME_FAILED: _ClassVar[FeedbackOutcome]

class DriftStreamKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DRIFT_STREAM_KIND_UNSPECIFIED: _ClassVar[DriftStreamKind]
    DRIFT_STREAM_KIND_IMAGE: _ClassVar[DriftStreamKind]
    DRIFT_STREAM_KIND_QUERY: _ClassVar[DriftStreamKind]
INGEST_OUTCOME_UNSPECIFIED: IngestOutcome
INGEST_OUTCOME_CREATED: IngestOutcome
INGEST_OUTCOME_UPDATED: IngestOutcome
INGEST_OUTCOME_UNCHANGED: IngestOutcome
INGEST_OUTCOME_DUPLICATE: IngestOutcome
INGEST_OUTCOME_FAILED: IngestOutcome
INGEST_OUTCOME_UNCERTAIN: IngestOutcome
IMAGE_VARIANT_UNSPECIFIED: ImageVariant
IMAGE_VARIANT_ORIGINAL: ImageVariant
IMAGE_VARIANT_THUMBNAIL: ImageVariant
FEEDBACK_KIND_UNSPECIFIED: FeedbackKind
FEEDBACK_KIND_CLICK: FeedbackKind
FEEDBACK_KIND_DWELL: FeedbackKind
FEEDBACK_KIND_RATING: FeedbackKind
FEEDBACK_OUTCOME_UNSPECIFIED: FeedbackOutcome
FEEDBACK_OUTCOME_RECORDED: FeedbackOutcome
FEEDBACK_OUTCOME_DUPLICATE: FeedbackOutcome
FEEDBACK_OUTCOME_FAILED: FeedbackOutcome
DRIFT_STREAM_KIND_UNSPECIFIED: DriftStreamKind
DRIFT_STREAM_KIND_IMAGE: DriftStreamKind
DRIFT_STREAM_KIND_QUERY: DriftStreamKind

class RerankOptions(_message.Message):
    __slots__ = ("disable", "candidate_window", "text_weight", "mmr_lambda", "duplicate_threshold", "freshness_weight", "popularity_weight")
    DISABLE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_WINDOW_FIELD_NUMBER: _ClassVar[int]
    TEXT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    MMR_LAMBDA_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    POPULARITY_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    disable: bool
    candidate_window: int
    text_weight: float
    mmr_lambda: float
    duplicate_threshold: float
    freshness_weight: float
    popularity_weight: float
    def __init__(self, disable: bool = ..., candidate_window: _Optional[int] = ..., text_weight: _Optional[float] = ..., mmr_lambda: _Optional[float] = ..., duplicate_threshold: _Optional[float] = ..., freshness_weight: _Optional[float] = ..., popularity_weight: _Optional[float] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("text", "image", "filter", "page_size", "page_token", "alpha", "rerank", "include_unsafe", "licenses", "fusion")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_UNSAFE_FIELD_NUMBER: _ClassVar[int]
    LICENSES_FIELD_NUMBER: _ClassVar[int]
    FUSION_FIELD_NUMBER: _ClassVar[int]
    text: str
    image: bytes
    filter: _common_pb2.Filter
    page_size: int
    page_token: str
    alpha: float
    rerank: RerankOptions
    include_unsafe: bool
    licenses: _containers.RepeatedScalarFieldContainer[str]
    fusion: _search_pb2.FusionType
    def __init__(self, text: _Optional[str] = ..., image: _Optional[bytes] = ..., filter: _Optional[_Union[_common_pb2.Filter, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., alpha: _Optional[float] = ..., rerank: _Optional[_Union[RerankOptions, _Mapping]] = ..., include_unsafe: bool = ..., licenses: _Optional[_Iterable[str]] = ..., fusion: _Optional[_Union[_search_pb2.FusionType, str]] = ...) -> None: ...

class StageScores(_message.Message):
    __slots__ = ("keyword", "vector", "fused", "text_cosine", "image_cosine", "rerank", "boost", "final", "first_stage_rank", "vector_name")
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    FUSED_FIELD_NUMBER: _ClassVar[int]
    TEXT_COSINE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_COSINE_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    BOOST_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    FIRST_STAGE_RANK_FIELD_NUMBER: _ClassVar[int]
    VECTOR_NAME_FIELD_NUMBER: _ClassVar[int]
    keyword: float
    vector: float
    fused: float
    text_cosine: float
    image_cosine: float
    rerank: float
    boost: float
    final: float
    first_stage_rank: int
    vector_name: str
    def __init__(self, keyword: _Optional[float] = ..., vector: _Optional[float] = ..., fused: _Optional[float] = ..., text_cosine: _Optional[float] = ..., image_cosine: _Optional[float] = ..., rerank: _Optional[float] = ..., boost: _Optional[float] = ..., final: _Optional[float] = ..., first_stage_rank: _Optional[int] = ..., vector_name: _Optional[str] = ...) -> None: ...

class PolicyVerdict(_message.Message):
    __slots__ = ("reasons",)
    REASONS_FIELD_NUMBER: _ClassVar[int]
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class SearchResult(_message.Message):
    __slots__ = ("asset", "scores", "rerank_notes", "policy")
    ASSET_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    RERANK_NOTES_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    asset: _common_pb2.Asset
    scores: StageScores
    rerank_notes: _containers.RepeatedScalarFieldContainer[str]
    policy: PolicyVerdict
    def __init__(self, asset: _Optional[_Union[_common_pb2.Asset, _Mapping]] = ..., scores: _Optional[_Union[StageScores, _Mapping]] = ..., rerank_notes: _Optional[_Iterable[str]] = ..., policy: _Optional[_Union[PolicyVerdict, _Mapping]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("results", "next_page_token", "degraded", "degraded_reasons", "cached", "model", "arm", "search_id")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_REASONS_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResult]
    next_page_token: str
    degraded: bool
    degraded_reasons: _containers.RepeatedScalarFieldContainer[str]
    cached: bool
    model: _common_pb2.ModelRef
    arm: str
    search_id: str
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., degraded: bool = ..., degraded_reasons: _Optional[_Iterable[str]] = ..., cached: bool = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., arm: _Optional[str] = ..., search_id: _Optional[str] = ...) -> None: ...

class SearchSimilarRequest(_message.Message):
    __slots__ = ("asset_id", "filter", "page_size", "page_token", "rerank", "include_unsafe")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_UNSAFE_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    filter: _common_pb2.Filter
    page_size: int
    page_token: str
    rerank: RerankOptions
    include_unsafe: bool
    def __init__(self, asset_id: _Optional[str] = ..., filter: _Optional[_Union[_common_pb2.Filter, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., rerank: _Optional[_Union[RerankOptions, _Mapping]] = ..., include_unsafe: bool = ...) -> None: ...

class SearchSimilarResponse(_message.Message):
    __slots__ = ("results", "next_page_token", "degraded", "degraded_reasons", "arm", "search_id", "model")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_REASONS_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResult]
    next_page_token: str
    degraded: bool
    degraded_reasons: _containers.RepeatedScalarFieldContainer[str]
    arm: str
    search_id: str
    model: _common_pb2.ModelRef
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., degraded: bool = ..., degraded_reasons: _Optional[_Iterable[str]] = ..., arm: _Optional[str] = ..., search_id: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("asset_id", "image", "uri", "caption", "tags", "owner", "license", "source", "popularity")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    LICENSE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    POPULARITY_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    image: bytes
    uri: str
    caption: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    owner: str
    license: _common_pb2.License
    source: str
    popularity: float
    def __init__(self, asset_id: _Optional[str] = ..., image: _Optional[bytes] = ..., uri: _Optional[str] = ..., caption: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., owner: _Optional[str] = ..., license: _Optional[_Union[_common_pb2.License, _Mapping]] = ..., source: _Optional[str] = ..., popularity: _Optional[float] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("asset_id", "outcome", "error", "content_sha256", "safety_labels", "ocr_text", "duplicate_of", "analysis_state")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    SAFETY_LABELS_FIELD_NUMBER: _ClassVar[int]
    OCR_TEXT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_OF_FIELD_NUMBER: _ClassVar[int]
    ANALYSIS_STATE_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    outcome: IngestOutcome
    error: _common_pb2.ItemError
    content_sha256: str
    safety_labels: _containers.RepeatedCompositeFieldContainer[_common_pb2.SafetyLabel]
    ocr_text: str
    duplicate_of: str
    analysis_state: _common_pb2.AnalysisState
    def __init__(self, asset_id: _Optional[str] = ..., outcome: _Optional[_Union[IngestOutcome, str]] = ..., error: _Optional[_Union[_common_pb2.ItemError, _Mapping]] = ..., content_sha256: _Optional[str] = ..., safety_labels: _Optional[_Iterable[_Union[_common_pb2.SafetyLabel, _Mapping]]] = ..., ocr_text: _Optional[str] = ..., duplicate_of: _Optional[str] = ..., analysis_state: _Optional[_Union[_common_pb2.AnalysisState, str]] = ...) -> None: ...

class GetAssetRequest(_message.Message):
    __slots__ = ("asset_id",)
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    def __init__(self, asset_id: _Optional[str] = ...) -> None: ...

class GetAssetResponse(_message.Message):
    __slots__ = ("asset",)
    ASSET_FIELD_NUMBER: _ClassVar[int]
    asset: _common_pb2.Asset
    def __init__(self, asset: _Optional[_Union[_common_pb2.Asset, _Mapping]] = ...) -> None: ...

class DeleteAssetRequest(_message.Message):
    __slots__ = ("asset_id",)
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    def __init__(self, asset_id: _Optional[str] = ...) -> None: ...

class DeleteAssetResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetAssetImageRequest(_message.Message):
    __slots__ = ("asset_id", "variant")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    variant: ImageVariant
    def __init__(self, asset_id: _Optional[str] = ..., variant: _Optional[_Union[ImageVariant, str]] = ...) -> None: ...

class GetAssetImageResponse(_message.Message):
    __slots__ = ("content_type", "total_bytes", "content_sha256", "chunk")
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    content_type: str
    total_bytes: int
    content_sha256: str
    chunk: bytes
    def __init__(self, content_type: _Optional[str] = ..., total_bytes: _Optional[int] = ..., content_sha256: _Optional[str] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class FeedbackEvent(_message.Message):
    __slots__ = ("event_id", "kind", "search_id", "asset_id", "rank", "dwell_ms", "rating", "occurred_at")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    DWELL_MS_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    kind: FeedbackKind
    search_id: str
    asset_id: str
    rank: int
    dwell_ms: int
    rating: int
    occurred_at: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., kind: _Optional[_Union[FeedbackKind, str]] = ..., search_id: _Optional[str] = ..., asset_id: _Optional[str] = ..., rank: _Optional[int] = ..., dwell_ms: _Optional[int] = ..., rating: _Optional[int] = ..., occurred_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RecordFeedbackRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[FeedbackEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[FeedbackEvent, _Mapping]]] = ...) -> None: ...

class FeedbackResult(_message.Message):
    __slots__ = ("event_id", "outcome", "error")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    outcome: FeedbackOutcome
    error: _common_pb2.ItemError
    def __init__(self, event_id: _Optional[str] = ..., outcome: _Optional[_Union[FeedbackOutcome, str]] = ..., error: _Optional[_Union[_common_pb2.ItemError, _Mapping]] = ...) -> None: ...

class RecordFeedbackResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[FeedbackResult]
    def __init__(self, results: _Optional[_Iterable[_Union[FeedbackResult, _Mapping]]] = ...) -> None: ...

class TakeDriftReferenceRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DriftStream(_message.Message):
    __slots__ = ("model", "kind", "samples", "drift_score")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DRIFT_SCORE_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelRef
    kind: DriftStreamKind
    samples: int
    drift_score: float
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., kind: _Optional[_Union[DriftStreamKind, str]] = ..., samples: _Optional[int] = ..., drift_score: _Optional[float] = ...) -> None: ...

class TakeDriftReferenceResponse(_message.Message):
    __slots__ = ("streams",)
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    streams: _containers.RepeatedCompositeFieldContainer[DriftStream]
    def __init__(self, streams: _Optional[_Iterable[_Union[DriftStream, _Mapping]]] = ...) -> None: ...
