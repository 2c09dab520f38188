from google.protobuf import timestamp_pb2 as _timestamp_pb2
from imagesearch.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FusionType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FUSION_TYPE_UNSPECIFIED: _ClassVar[FusionType]
    FUSION_TYPE_RELATIVE_SCORE: _ClassVar[FusionType]
    FUSION_TYPE_RANKED: _ClassVar[FusionType]
    FUSION_TYPE_ADAPTIVE: _ClassVar[FusionType]

class VectorEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VECTOR_ENCODING_UNSPECIFIED: _ClassVar[VectorEncoding]
    VECTOR_ENCODING_FLOAT32: _ClassVar[VectorEncoding]
    VECTOR_ENCODING_FLOAT16: _ClassVar[VectorEncoding]
FUSION_TYPE_UNSPECIFIED: FusionType
FUSION_TYPE_RELATIVE_SCORE: FusionType
FUSION_TYPE_RANKED: FusionType
FUSION_TYPE_ADAPTIVE: FusionType
VECTOR_ENCODING_UNSPECIFIED: VectorEncoding
VECTOR_ENCODING_FLOAT32: VectorEncoding
VECTOR_ENCODING_FLOAT16: VectorEncoding

class AssetRecord(_message.Message):
    __slots__ = ("asset", "image_embedding", "vectors", "models")
    ASSET_FIELD_NUMBER: _ClassVar[int]
    IMAGE_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    asset: _common_pb2.Asset
    image_embedding: _common_pb2.Embedding
    vectors: _containers.RepeatedCompositeFieldContainer[_common_pb2.Embedding]
    models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelRef]
    def __init__(self, asset: _Optional[_Union[_common_pb2.Asset, _Mapping]] = ..., image_embedding: _Optional[_Union[_common_pb2.Embedding, _Mapping]] = ..., vectors: _Optional[_Iterable[_Union[_common_pb2.Embedding, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[_common_pb2.ModelRef, _Mapping]]] = ...) -> None: ...

class UpsertAssetsRequest(_message.Message):
    __slots__ = ("tenant", "assets", "vectors_only")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ASSETS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_ONLY_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    assets: _containers.RepeatedCompositeFieldContainer[AssetRecord]
    vectors_only: bool
    def __init__(self, tenant: _Optional[str] = ..., assets: _Optional[_Iterable[_Union[AssetRecord, _Mapping]]] = ..., vectors_only: bool = ...) -> None: ...

class UpsertResult(_message.Message):
    __slots__ = ("asset_id", "error")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    error: _common_pb2.ItemError
    def __init__(self, asset_id: _Optional[str] = ..., error: _Optional[_Union[_common_pb2.ItemError, _Mapping]] = ...) -> None: ...

class UpsertAssetsResponse(_message.Message):
    __slots__ = ("results", "index_generation")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    INDEX_GENERATION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[UpsertResult]
    index_generation: int
    def __init__(self, results: _Optional[_Iterable[_Union[UpsertResult, _Mapping]]] = ..., index_generation: _Optional[int] = ...) -> None: ...

class StreamUpsertAssetsRequest(_message.Message):
    __slots__ = ("tenant", "asset")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ASSET_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    asset: AssetRecord
    def __init__(self, tenant: _Optional[str] = ..., asset: _Optional[_Union[AssetRecord, _Mapping]] = ...) -> None: ...

class StreamUpsertAssetsResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: UpsertResult
    def __init__(self, result: _Optional[_Union[UpsertResult, _Mapping]] = ...) -> None: ...

class DeleteAssetsRequest(_message.Message):
    __slots__ = ("tenant", "asset_ids")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ASSET_IDS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    asset_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenant: _Optional[str] = ..., asset_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteResult(_message.Message):
    __slots__ = ("asset_id", "deleted")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    deleted: bool
    def __init__(self, asset_id: _Optional[str] = ..., deleted: bool = ...) -> None: ...

class DeleteAssetsResponse(_message.Message):
    __slots__ = ("results", "index_generation")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    INDEX_GENERATION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[DeleteResult]
    index_generation: int
    def __init__(self, results: _Optional[_Iterable[_Union[DeleteResult, _Mapping]]] = ..., index_generation: _Optional[int] = ...) -> None: ...

class GetAssetsRequest(_message.Message):
    __slots__ = ("tenant", "asset_ids", "include_vectors", "include_unanalysed")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ASSET_IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_UNANALYSED_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    asset_ids: _containers.RepeatedScalarFieldContainer[str]
    include_vectors: bool
    include_unanalysed: bool
    def __init__(self, tenant: _Optional[str] = ..., asset_ids: _Optional[_Iterable[str]] = ..., include_vectors: bool = ..., include_unanalysed: bool = ...) -> None: ...

class GetAssetsResponse(_message.Message):
    __slots__ = ("assets", "missing_asset_ids")
    ASSETS_FIELD_NUMBER: _ClassVar[int]
    MISSING_ASSET_IDS_FIELD_NUMBER: _ClassVar[int]
    assets: _containers.RepeatedCompositeFieldContainer[AssetRecord]
    missing_asset_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, assets: _Optional[_Iterable[_Union[AssetRecord, _Mapping]]] = ..., missing_asset_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ListPendingAnalysisRequest(_message.Message):
    __slots__ = ("tenant", "limit")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    limit: int
    def __init__(self, tenant: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class PendingAnalysis(_message.Message):
    __slots__ = ("tenant", "asset_id", "content_sha256", "updated_at")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    asset_id: str
    content_sha256: str
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, tenant: _Optional[str] = ..., asset_id: _Optional[str] = ..., content_sha256: _Optional[str] = ..., updated_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListPendingAnalysisResponse(_message.Message):
    __slots__ = ("assets",)
    ASSETS_FIELD_NUMBER: _ClassVar[int]
    assets: _containers.RepeatedCompositeFieldContainer[PendingAnalysis]
    def __init__(self, assets: _Optional[_Iterable[_Union[PendingAnalysis, _Mapping]]] = ...) -> None: ...

class FindByContentHashRequest(_message.Message):
    __slots__ = ("tenant", "content_sha256")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    content_sha256: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenant: _Optional[str] = ..., content_sha256: _Optional[_Iterable[str]] = ...) -> None: ...

class ContentHashMatch(_message.Message):
    __slots__ = ("content_sha256", "asset_ids")
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    ASSET_IDS_FIELD_NUMBER: _ClassVar[int]
    content_sha256: str
    asset_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, content_sha256: _Optional[str] = ..., asset_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class FindByContentHashResponse(_message.Message):
    __slots__ = ("matches",)
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[ContentHashMatch]
    def __init__(self, matches: _Optional[_Iterable[_Union[ContentHashMatch, _Mapping]]] = ...) -> None: ...

class KeywordField(_message.Message):
    __slots__ = ("name", "boost")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BOOST_FIELD_NUMBER: _ClassVar[int]
    name: str
    boost: float
    def __init__(self, name: _Optional[str] = ..., boost: _Optional[float] = ...) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = ("tenant", "text", "vector", "alpha", "fusion", "filter", "limit", "offset", "candidate_window", "keyword_fields", "include_vectors", "skip_cache", "packed_vector_encoding")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    FUSION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_WINDOW_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    SKIP_CACHE_FIELD_NUMBER: _ClassVar[int]
    PACKED_VECTOR_ENCODING_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    text: str
    vector: _common_pb2.Embedding
    alpha: float
    fusion: FusionType
    filter: _common_pb2.Filter
    limit: int
    offset: int
    candidate_window: int
    keyword_fields: _containers.RepeatedCompositeFieldContainer[KeywordField]
    include_vectors: bool
    skip_cache: bool
    packed_vector_encoding: VectorEncoding
    def __init__(self, tenant: _Optional[str] = ..., text: _Optional[str] = ..., vector: _Optional[_Union[_common_pb2.Embedding, _Mapping]] = ..., alpha: _Optional[float] = ..., fusion: _Optional[_Union[FusionType, str]] = ..., filter: _Optional[_Union[_common_pb2.Filter, _Mapping]] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ..., candidate_window: _Optional[int] = ..., keyword_fields: _Optional[_Iterable[_Union[KeywordField, _Mapping]]] = ..., include_vectors: bool = ..., skip_cache: bool = ..., packed_vector_encoding: _Optional[_Union[VectorEncoding, str]] = ...) -> None: ...

class ScoreBreakdown(_message.Message):
    __slots__ = ("fused", "keyword_contribution", "vector_contribution", "bm25", "cosine_similarity", "vector_name", "vector_weight")
    FUSED_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    BM25_FIELD_NUMBER: _ClassVar[int]
    COSINE_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    VECTOR_NAME_FIELD_NUMBER: _ClassVar[int]
    VECTOR_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    fused: float
    keyword_contribution: float
    vector_contribution: float
    bm25: float
    cosine_similarity: float
    vector_name: str
    vector_weight: float
    def __init__(self, fused: _Optional[float] = ..., keyword_contribution: _Optional[float] = ..., vector_contribution: _Optional[float] = ..., bm25: _Optional[float] = ..., cosine_similarity: _Optional[float] = ..., vector_name: _Optional[str] = ..., vector_weight: _Optional[float] = ...) -> None: ...

class QueryHit(_message.Message):
    __slots__ = ("asset", "scores", "image_embedding")
    ASSET_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    asset: _common_pb2.Asset
    scores: ScoreBreakdown
    image_embedding: _common_pb2.Embedding
    def __init__(self, asset: _Optional[_Union[_common_pb2.Asset, _Mapping]] = ..., scores: _Optional[_Union[ScoreBreakdown, _Mapping]] = ..., image_embedding: _Optional[_Union[_common_pb2.Embedding, _Mapping]] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("hits", "cached", "index_generation", "packed_vectors")
    HITS_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    INDEX_GENERATION_FIELD_NUMBER: _ClassVar[int]
    PACKED_VECTORS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[QueryHit]
    cached: bool
    index_generation: int
    packed_vectors: PackedVectors
    def __init__(self, hits: _Optional[_Iterable[_Union[QueryHit, _Mapping]]] = ..., cached: bool = ..., index_generation: _Optional[int] = ..., packed_vectors: _Optional[_Union[PackedVectors, _Mapping]] = ...) -> None: ...

class PackedVectors(_message.Message):
    __slots__ = ("encoding", "dimension", "values", "missing_rows")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    MISSING_ROWS_FIELD_NUMBER: _ClassVar[int]
    encoding: VectorEncoding
    dimension: int
    values: bytes
    missing_rows: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, encoding: _Optional[_Union[VectorEncoding, str]] = ..., dimension: _Optional[int] = ..., values: _Optional[bytes] = ..., missing_rows: _Optional[_Iterable[int]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("asset_count", "index_generation", "backend", "model", "dimension", "cache", "vectors", "models")
    ASSET_COUNT_FIELD_NUMBER: _ClassVar[int]
    INDEX_GENERATION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    asset_count: int
    index_generation: int
    backend: str
    model: _common_pb2.ModelRef
    dimension: int
    cache: str
    vectors: _containers.RepeatedCompositeFieldContainer[_common_pb2.VectorSpec]
    models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelRef]
    def __init__(self, asset_count: _Optional[int] = ..., index_generation: _Optional[int] = ..., backend: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., dimension: _Optional[int] = ..., cache: _Optional[str] = ..., vectors: _Optional[_Iterable[_Union[_common_pb2.VectorSpec, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[_common_pb2.ModelRef, _Mapping]]] = ...) -> None: ...

class GetIndexGenerationRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class GetIndexGenerationResponse(_message.Message):
    __slots__ = ("index_generation", "consistent")
    INDEX_GENERATION_FIELD_NUMBER: _ClassVar[int]
    CONSISTENT_FIELD_NUMBER: _ClassVar[int]
    index_generation: int
    consistent: bool
    def __init__(self, index_generation: _Optional[int] = ..., consistent: bool = ...) -> None: ...

class WatchIndexGenerationsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchIndexGenerationsResponse(_message.Message):
    __slots__ = ("subscribed", "tenant", "index_generation")
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    INDEX_GENERATION_FIELD_NUMBER: _ClassVar[int]
    subscribed: bool
    tenant: str
    index_generation: int
    def __init__(self, subscribed: bool = ..., tenant: _Optional[str] = ..., index_generation: _Optional[int] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("model", "held", "active", "primary_slot", "assets_covered", "vectors")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_SLOT_FIELD_NUMBER: _ClassVar[int]
    ASSETS_COVERED_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelRef
    held: bool
    active: bool
    primary_slot: bool
    assets_covered: int
    vectors: _containers.RepeatedCompositeFieldContainer[_common_pb2.VectorSpec]
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., held: bool = ..., active: bool = ..., primary_slot: bool = ..., assets_covered: _Optional[int] = ..., vectors: _Optional[_Iterable[_Union[_common_pb2.VectorSpec, _Mapping]]] = ...) -> None: ...

class GetModelVersionsRequest(_message.Message):
    __slots__ = ("tenant", "include_coverage")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    include_coverage: bool
    def __init__(self, tenant: _Optional[str] = ..., include_coverage: bool = ...) -> None: ...

class GetModelVersionsResponse(_message.Message):
    __slots__ = ("versions", "active", "previous", "asset_count", "index_generation")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    ASSET_COUNT_FIELD_NUMBER: _ClassVar[int]
    INDEX_GENERATION_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    active: _common_pb2.ModelRef
    previous: _common_pb2.ModelRef
    asset_count: int
    index_generation: int
    def __init__(self, versions: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ..., active: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., previous: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., asset_count: _Optional[int] = ..., index_generation: _Optional[int] = ...) -> None: ...

class AddModelVersionRequest(_message.Message):
    __slots__ = ("tenant", "model")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    model: _common_pb2.ModelRef
    def __init__(self, tenant: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class AddModelVersionResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: GetModelVersionsResponse
    def __init__(self, versions: _Optional[_Union[GetModelVersionsResponse, _Mapping]] = ...) -> None: ...

class ActivateModelVersionRequest(_message.Message):
    __slots__ = ("tenant", "model")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    model: _common_pb2.ModelRef
    def __init__(self, tenant: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class ActivateModelVersionResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: GetModelVersionsResponse
    def __init__(self, versions: _Optional[_Union[GetModelVersionsResponse, _Mapping]] = ...) -> None: ...

class RollbackModelVersionRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class RollbackModelVersionResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: GetModelVersionsResponse
    def __init__(self, versions: _Optional[_Union[GetModelVersionsResponse, _Mapping]] = ...) -> None: ...

class RemoveModelVersionRequest(_message.Message):
    __slots__ = ("tenant", "model")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    model: _common_pb2.ModelRef
    def __init__(self, tenant: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class RemoveModelVersionResponse(_message.Message):
    __slots__ = ("versions", "assets_changed")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ASSETS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    versions: GetModelVersionsResponse
    assets_changed: int
    def __init__(self, versions: _Optional[_Union[GetModelVersionsResponse, _Mapping]] = ..., assets_changed: _Optional[int] = ...) -> None: ...

class ScanAssetsRequest(_message.Message):
    __slots__ = ("tenant", "page_token", "page_size")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    page_token: str
    page_size: int
    def __init__(self, tenant: _Optional[str] = ..., page_token: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class ScanAssetsResponse(_message.Message):
    __slots__ = ("assets", "next_page_token")
    ASSETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    assets: _containers.RepeatedCompositeFieldContainer[AssetRecord]
    next_page_token: str
    def __init__(self, assets: _Optional[_Iterable[_Union[AssetRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
