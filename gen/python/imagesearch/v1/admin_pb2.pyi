from google.protobuf import timestamp_pb2 as _timestamp_pb2
from imagesearch.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReindexState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REINDEX_STATE_UNSPECIFIED: _ClassVar[ReindexState]
    REINDEX_STATE_RUNNING: _ClassVar[ReindexState]
    REINDEX_STATE_SUCCEEDED: _ClassVar[ReindexState]
    REINDEX_STATE_FAILED: _ClassVar[ReindexState]
REINDEX_STATE_UNSPECIFIED: ReindexState
REINDEX_STATE_RUNNING: ReindexState
REINDEX_STATE_SUCCEEDED: ReindexState
REINDEX_STATE_FAILED: ReindexState

class ReindexJob(_message.Message):
    __slots__ = ("tenant", "target", "state", "total_assets", "scanned", "reindexed", "already_done", "missing_originals", "missing_asset_ids", "failed", "error", "started_at", "updated_at")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ASSETS_FIELD_NUMBER: _ClassVar[int]
    SCANNED_FIELD_NUMBER: _ClassVar[int]
    REINDEXED_FIELD_NUMBER: _ClassVar[int]
    ALREADY_DONE_FIELD_NUMBER: _ClassVar[int]
    MISSING_ORIGINALS_FIELD_NUMBER: _ClassVar[int]
    MISSING_ASSET_IDS_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    target: _common_pb2.ModelRef
    state: ReindexState
    total_assets: int
    scanned: int
    reindexed: int
    already_done: int
    missing_originals: int
    missing_asset_ids: _containers.RepeatedScalarFieldContainer[str]
    failed: int
    error: str
    started_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, tenant: _Optional[str] = ..., target: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., state: _Optional[_Union[ReindexState, str]] = ..., total_assets: _Optional[int] = ..., scanned: _Optional[int] = ..., reindexed: _Optional[int] = ..., already_done: _Optional[int] = ..., missing_originals: _Optional[int] = ..., missing_asset_ids: _Optional[_Iterable[str]] = ..., failed: _Optional[int] = ..., error: _Optional[str] = ..., started_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StartReindexRequest(_message.Message):
    __slots__ = ("tenant", "target")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    target: _common_pb2.ModelRef
    def __init__(self, tenant: _Optional[str] = ..., target: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class StartReindexResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: ReindexJob
    def __init__(self, job: _Optional[_Union[ReindexJob, _Mapping]] = ...) -> None: ...

class GetReindexJobRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class GetReindexJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: ReindexJob
    def __init__(self, job: _Optional[_Union[ReindexJob, _Mapping]] = ...) -> None: ...

class TenantModelVersion(_message.Message):
    __slots__ = ("model", "held", "active", "assets_covered", "encoder_configured")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    ASSETS_COVERED_FIELD_NUMBER: _ClassVar[int]
    ENCODER_CONFIGURED_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelRef
    held: bool
    active: bool
    assets_covered: int
    encoder_configured: bool
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., held: bool = ..., active: bool = ..., assets_covered: _Optional[int] = ..., encoder_configured: bool = ...) -> None: ...

class ListModelVersionsRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ListModelVersionsResponse(_message.Message):
    __slots__ = ("versions", "active", "previous", "asset_count")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    ASSET_COUNT_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[TenantModelVersion]
    active: _common_pb2.ModelRef
    previous: _common_pb2.ModelRef
    asset_count: int
    def __init__(self, versions: _Optional[_Iterable[_Union[TenantModelVersion, _Mapping]]] = ..., active: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., previous: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., asset_count: _Optional[int] = ...) -> None: ...

class ActivateModelRequest(_message.Message):
    __slots__ = ("tenant", "model")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    model: _common_pb2.ModelRef
    def __init__(self, tenant: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class ActivateModelResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: ListModelVersionsResponse
    def __init__(self, versions: _Optional[_Union[ListModelVersionsResponse, _Mapping]] = ...) -> None: ...

class RollbackModelRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class RollbackModelResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: ListModelVersionsResponse
    def __init__(self, versions: _Optional[_Union[ListModelVersionsResponse, _Mapping]] = ...) -> None: ...

class RemoveModelRequest(_message.Message):
    __slots__ = ("tenant", "model")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    model: _common_pb2.ModelRef
    def __init__(self, tenant: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class RemoveModelResponse(_message.Message):
    __slots__ = ("versions", "assets_changed")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ASSETS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    versions: ListModelVersionsResponse
    assets_changed: int
    def __init__(self, versions: _Optional[_Union[ListModelVersionsResponse, _Mapping]] = ..., assets_changed: _Optional[int] = ...) -> None: ...
