"""The gateway's backends as the flows see them: small protocols over domain types only.

Adapters: `encoder.GrpcEncoderClient`, `search.GrpcSearchClient` (gRPC, with deadlines, retries and
breakers) and `services.gateway.analysis.ImageAnalyzer` (in-process NudeNet + RapidOCR). Failures are
domain errors (`errors.py`); no protocol mentions gRPC.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Protocol

import numpy as np

from services.gateway.analysis import Analysis
from services.gateway.domain import (
    EncodedBatch,
    ModelRef,
    ModelVectors,
    PendingAnalysis,
    QueryResult,
    QuerySpec,
    ScannedAsset,
    StoredAsset,
    TenantModels,
    UpsertOutcome,
    UpsertRecord,
)


class EncoderClient(Protocol):
    async def encode_texts(self, texts: Sequence[str]) -> EncodedBatch: ...

    async def encode_images(self, images: Sequence[bytes]) -> EncodedBatch: ...

    async def ready(self) -> bool: ...


class SearchClient(Protocol):
    async def query(self, spec: QuerySpec) -> QueryResult: ...

    async def upsert(self, tenant: str, records: Sequence[UpsertRecord]) -> list[UpsertOutcome]: ...

    async def get_assets(
        self,
        tenant: str,
        asset_ids: Sequence[str],
        include_vectors: bool = False,
        include_unanalysed: bool = False,
    ) -> tuple[list[StoredAsset], list[str]]:
        """Assets by id; one whose analysis is not done is missing unless `include_unanalysed` (only
        the ingest flow and the analysis worker set it)."""
        ...

    async def pending_analysis(self, limit: int) -> list[PendingAnalysis]:
        """Up to `limit` assets of any tenant whose analysis is pending (the durable queue)."""
        ...

    async def find_by_content_hash(self, tenant: str, shas: Sequence[str]) -> dict[str, list[str]]:
        """For each digest, the sorted ids of the tenant's assets holding it (absent: none)."""
        ...

    async def delete_assets(self, tenant: str, asset_ids: Sequence[str]) -> list[tuple[str, bool]]: ...

    async def index_generation(self, tenant: str) -> int | None:
        """The tenant's index generation when it is consistent; None when it cannot be trusted or
        asked (then nothing derived from queries may be served from a cache)."""
        ...

    async def ready(self) -> bool: ...


class ModelVersionsClient(Protocol):
    """The search service's model-version calls (docs/LIFECYCLE.md)."""

    async def upsert_vectors(
        self, tenant: str, items: Sequence[tuple[str, str, ModelRef, ModelVectors]]
    ) -> list[UpsertOutcome]: ...

    async def scan(self, tenant: str, page_token: str, page_size: int) -> tuple[list[ScannedAsset], str]: ...

    async def model_versions(self, tenant: str, coverage: bool = False) -> TenantModels: ...

    async def add_model_version(self, tenant: str, model: ModelRef) -> TenantModels: ...

    async def activate_model_version(self, tenant: str, model: ModelRef) -> TenantModels: ...

    async def rollback_model_version(self, tenant: str) -> TenantModels: ...

    async def remove_model_version(self, tenant: str, model: ModelRef) -> tuple[TenantModels, int]: ...


class Analyzer(Protocol):
    @property
    def enabled(self) -> bool: ...

    @property
    def executor(self) -> Executor | None:
        """The threads analyses run on (None: the event loop's default executor). The deferred worker
        runs the rest of its CPU work (decoding, the thumbnail) there too, at their priority."""

    async def analyze(self, rgb: np.ndarray) -> Analysis: ...
