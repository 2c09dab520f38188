"""Plain domain types of the gateway: assets, filters, hits, searches, ingest items (no gRPC/proto types).

The servicer and the backends map protos to these and back (services/gateway/convert.py); every other
gateway module speaks only these dataclasses and numpy arrays.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]

# Named vectors (common.proto VectorSpec): every model's primary vector, shared by its text and image
# towers, is "semantic"; a model may add "visual" (images only), the better one for image-to-image
# similarity. Text queries search "semantic"; an example image and "more like this" search "visual"
# when the model has it.
PRIMARY_VECTOR = "semantic"
VISUAL_VECTOR = "visual"


@dataclass(frozen=True)
class ModelRef:
    name: str = ""
    version: str = ""


@dataclass(frozen=True)
class SafetyLabel:
    label: str
    score: float


class AnalysisState(enum.Enum):
    """Where an asset's safety + OCR analysis stands (mirrors imagesearch.v1.AnalysisState). Only
    UNSPECIFIED (stored before states existed) and ANALYSED assets are visible to searches and reads."""

    UNSPECIFIED = 0
    PENDING = 1
    ANALYSED = 2
    FAILED = 3


@dataclass
class AssetSummary:
    """What ranking and policy read of an asset: ids, tenant, licence, safety, hash, times, popularity,
    caption and model. A first-stage hit carries only this (see `Hit`)."""

    asset_id: str
    tenant: str = ""
    caption: str = ""
    license_name: str = ""
    license_expires_at: dt.datetime | None = None
    safety_score: float = 0.0
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    content_sha256: str = ""
    embedding_model: ModelRef | None = None
    popularity: float = 0.0


@dataclass
class Asset(AssetSummary):
    """One stored image's metadata, complete (mirrors imagesearch.v1.Asset)."""

    uri: str = ""
    tags: list[str] = field(default_factory=list)
    ocr_text: str = ""
    owner: str = ""
    safety_labels: list[SafetyLabel] = field(default_factory=list)
    source: str = ""
    width: int = 0
    height: int = 0
    analysis_state: AnalysisState = AnalysisState.UNSPECIFIED


# ----------------------------------------------------------------------------------------------
# Filters: a typed boolean tree (mirrors imagesearch.v1.Filter)


class Op(enum.Enum):
    EQUAL = 1
    NOT_EQUAL = 2
    GREATER_THAN = 3
    GREATER_THAN_OR_EQUAL = 4
    LESS_THAN = 5
    LESS_THAN_OR_EQUAL = 6
    IN = 7
    CONTAINS_ANY = 8
    CONTAINS_ALL = 9
    LIKE = 10
    IS_NULL = 11


# A scalar operand: str, int, float, bool or an aware datetime; lists for IN/CONTAINS_*.
Scalar = str | int | float | bool | dt.datetime


@dataclass(frozen=True)
class Condition:
    field: str
    op: Op
    value: Scalar | tuple[Scalar, ...]


@dataclass(frozen=True)
class AllOf:
    filters: tuple[Filter, ...]


@dataclass(frozen=True)
class AnyOf:
    filters: tuple[Filter, ...]


@dataclass(frozen=True)
class Not:
    filter: Filter


Filter = Condition | AllOf | AnyOf | Not


def count_nodes(f: Filter | None) -> int:
    """Conditions plus operators, as the search service counts them against its node cap."""
    if f is None:
        return 0
    if isinstance(f, Condition):
        return 1
    if isinstance(f, Not):
        return 1 + count_nodes(f.filter)
    return 1 + sum(count_nodes(x) for x in f.filters)


def all_of(*filters: Filter | None) -> Filter | None:
    """AND of the given filters, skipping None; None when nothing is left."""
    present = tuple(f for f in filters if f is not None)
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return AllOf(present)


def canonical(f: Filter | None) -> Any:
    """A JSON-able, order-preserving form of a filter (for page-token binding and audit lines)."""
    if f is None:
        return None
    if isinstance(f, Condition):
        value: Any = f.value
        if isinstance(value, tuple):
            value = [_scalar(v) for v in value]
        else:
            value = _scalar(value)
        return [f.field, f.op.name, value]
    if isinstance(f, AllOf):
        return ["AND", [canonical(x) for x in f.filters]]
    if isinstance(f, AnyOf):
        return ["OR", [canonical(x) for x in f.filters]]
    return ["NOT", canonical(f.filter)]


def _scalar(v: Scalar) -> Any:
    if isinstance(v, dt.datetime):
        return v.isoformat()
    return v


# ----------------------------------------------------------------------------------------------
# First stage (search service)


# How a search's two first-stage legs are fused (search.proto, FusionType).
FUSIONS = ("adaptive", "relative_score", "ranked")


@dataclass(frozen=True)
class QuerySpec:
    """One hybrid query to the search service."""

    tenant: str
    text: str = ""
    vector: Vector | None = None
    model: ModelRef | None = None
    alpha: float | None = None
    fusion: str | None = None  # one of FUSIONS; None: the search service's default
    filter: Filter | None = None
    limit: int = 10
    offset: int = 0
    candidate_window: int = 0
    include_vectors: bool = False
    skip_cache: bool = False
    # The stored named vector `vector` is compared with ("" = the primary, "semantic").
    vector_name: str = ""


@dataclass
class FirstStageScores:
    fused: float = 0.0
    keyword: float = 0.0
    vector: float = 0.0
    bm25: float = 0.0
    cosine: float = 0.0
    # The weight the first stage gave the vector leg (the keyword leg got 1 - it).
    vector_weight: float = 0.0


@dataclass
class Hit:
    """One first-stage hit: what ranking and policy read, its first-stage scores and (when asked for)
    its stored image embedding."""

    asset: AssetSummary
    scores: FirstStageScores
    vector: Vector | None = None
    # The complete asset, built only for the hits that make the page: a candidate window holds ~100
    # hits and a page ~20, so the backend defers the rest of each conversion until it is needed.
    load_asset: Callable[[], Asset] | None = field(default=None, repr=False, compare=False)
    # Builds the response's message for the complete asset straight from the backend's own, when it
    # has one, instead of converting it to an `Asset` and back (opaque here: only convert reads it).
    load_asset_message: Callable[[], Any] | None = field(default=None, repr=False, compare=False)

    def page_asset(self) -> tuple[AssetSummary, Any]:
        """What a page's result carries: the summary and the response's message for the asset when
        the backend gives one (`load_asset_message`), else the complete asset and None."""
        if self.load_asset_message is not None:
            return self.asset, self.load_asset_message()
        return self.full_asset(), None

    def full_asset(self) -> Asset:
        if isinstance(self.asset, Asset):
            return self.asset
        if self.load_asset is None:
            raise ValueError(f"hit {self.asset.asset_id!r} carries no complete asset")
        return self.load_asset()


@dataclass
class StoredAsset:
    """An asset read by id (GetAssets), complete, with its stored image embedding when asked for."""

    asset: Asset
    vector: Vector | None = None
    # The other named vectors (e.g. "visual") when vectors were asked for.
    named: dict[str, Vector] = field(default_factory=dict)
    # The vectors of the other model versions the asset holds (versioned indices), when asked for.
    others: dict[ModelRef, ModelVectors] = field(default_factory=dict)


@dataclass
class QueryResult:
    hits: list[Hit]
    cached: bool = False
    index_generation: int = 0


# ----------------------------------------------------------------------------------------------
# Gateway search


@dataclass(frozen=True)
class RerankOptions:
    """Second-stage knobs; None = the server's configured default."""

    disable: bool = False
    candidate_window: int | None = None
    text_weight: float | None = None
    mmr_lambda: float | None = None
    duplicate_threshold: float | None = None
    freshness_weight: float | None = None
    popularity_weight: float | None = None


@dataclass(frozen=True)
class SearchQuery:
    """A caller's search (Search or SearchSimilar), after validation."""

    text: str = ""
    image: bytes = b""
    similar_to: str = ""  # asset id for "more like this"
    filter: Filter | None = None
    page_size: int = 20
    page_token: str = ""
    alpha: float | None = None
    fusion: str | None = None  # one of FUSIONS; None: the package's (or the settings') default
    rerank: RerankOptions = field(default_factory=RerankOptions)
    include_unsafe: bool = False
    licenses: tuple[str, ...] = ()
    # A canary arm's model version (its encoder and vectors, when the tenant holds them).
    model: ModelRef | None = None


@dataclass
class StageScores:
    keyword: float = 0.0
    vector: float = 0.0
    fused: float = 0.0
    text_cosine: float = 0.0
    image_cosine: float = 0.0
    rerank: float = 0.0
    boost: float = 0.0
    final: float = 0.0
    first_stage_rank: int = 0
    # The named vector the first stage's vector leg searched ("" when it was keyword-only).
    vector_name: str = ""


@dataclass(eq=False)  # compared by identity: convert.result_pb remembers each result's message
class SearchResult:
    # The complete Asset, or the summary when `asset_message` (the hit's) carries the rest.
    asset: AssetSummary
    scores: StageScores
    rerank_notes: list[str] = field(default_factory=list)
    policy_reasons: list[str] = field(default_factory=list)
    asset_message: Any = field(default=None, repr=False)  # opaque here: see Hit.load_asset_message


@dataclass
class SearchPage:
    results: list[SearchResult]
    next_page_token: str = ""
    degraded_reasons: list[str] = field(default_factory=list)
    cached: bool = False
    model: ModelRef | None = None
    # The highest raw cosine among the first-stage hits fetched (None: no vector leg ran); read by
    # drift monitoring, never sent.
    best_cosine: float | None = None
    arm: str = ""  # the experiment arm that served it (set by the gateway after the flow)
    search_id: str = ""  # what feedback names it by ("" when the feedback store could not record it)
    # The servicer's serialized renderings of this page without its per-request names (arm,
    # search_id), keyed by response type: the copies the gateway hands out share this dict, so a
    # page-cache hit converts and serializes nothing; opaque here.
    rendered: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def degraded(self) -> bool:
        return bool(self.degraded_reasons)


# ----------------------------------------------------------------------------------------------
# Ingest


class ImageVariant(enum.Enum):
    """Which stored image of an asset (the value is the last part of its object-store key)."""

    ORIGINAL = "original"
    THUMBNAIL = "thumbnail"


@dataclass(frozen=True)
class AssetImage:
    """One stored image of an asset, as GetAssetImage returns it."""

    content_type: str
    content_sha256: str  # of these bytes (the thumbnail's own digest for a thumbnail)
    data: bytes


class IngestOutcome(enum.Enum):
    CREATED = 1
    UPDATED = 2
    UNCHANGED = 3
    DUPLICATE = 4
    # Nothing of the item was stored.
    FAILED = 5
    # The store did not confirm the write before it became unreachable: stored or not; re-sending is safe.
    UNCERTAIN = 6


@dataclass(frozen=True)
class IngestItem:
    asset_id: str
    image: bytes
    uri: str = ""
    caption: str = ""
    tags: tuple[str, ...] = ()
    owner: str = ""
    license_name: str = ""
    license_expires_at: dt.datetime | None = None
    source: str = ""
    popularity: float = 0.0
    # Why the request's fields could not be read (set by convert); the item fails INVALID_ARGUMENT.
    invalid: str = ""


@dataclass
class IngestAck:
    asset_id: str
    outcome: IngestOutcome
    error_code: int = 0  # google.rpc.Code number when FAILED
    error_message: str = ""
    content_sha256: str = ""
    safety_labels: list[SafetyLabel] = field(default_factory=list)
    ocr_text: str = ""
    duplicate_of: str = ""
    # PENDING: stored, but invisible until its analysis (after this acknowledgement) is done.
    analysis_state: AnalysisState = AnalysisState.UNSPECIFIED


@dataclass(frozen=True)
class PendingAnalysis:
    """An asset whose analysis is pending, as the search service lists it (the durable queue)."""

    tenant: str
    asset_id: str
    content_sha256: str
    updated_at: dt.datetime | None = None


@dataclass
class UpsertOutcome:
    asset_id: str
    error_code: int = 0
    error_message: str = ""


# ----------------------------------------------------------------------------------------------
# What the backends exchange with the flows


@dataclass
class Encoded:
    """One item's encoding: a vector, or an error (google.rpc.Code number + message)."""

    vector: Vector | None
    error_code: int = 0
    error_message: str = ""
    truncated: bool = False
    # The model's other named vectors for this item (e.g. "visual"), never the primary.
    named: dict[str, Vector] = field(default_factory=dict)


@dataclass
class EncodedBatch:
    model: ModelRef | None
    items: list[Encoded]


@dataclass
class ModelVectors:
    """One model version's vectors of an image: the primary and its other named vectors."""

    vector: Vector
    named: dict[str, Vector] = field(default_factory=dict)


@dataclass
class UpsertRecord:
    asset: Asset
    vector: Vector
    model: ModelRef | None
    # The model's other named vectors (e.g. "visual"), stored beside the primary `vector`.
    named: dict[str, Vector] = field(default_factory=dict)
    # The same image's vectors of other model versions the tenant holds (written together).
    others: dict[ModelRef, ModelVectors] = field(default_factory=dict)


@dataclass(frozen=True)
class ScannedAsset:
    """One asset of a re-index scan: its id, content hash and the model versions it holds."""

    asset_id: str
    content_sha256: str
    models: tuple[ModelRef, ...]


@dataclass(frozen=True)
class TenantModelVersion:
    model: ModelRef
    held: bool
    active: bool
    covered: int = 0
    encoder_configured: bool = False


@dataclass(frozen=True)
class TenantModels:
    """A tenant's model versions as the search service reports them (GetModelVersions)."""

    versions: tuple[TenantModelVersion, ...]
    active: ModelRef | None
    previous: ModelRef | None
    asset_count: int

    def held(self) -> list[ModelRef]:
        return [v.model for v in self.versions if v.held]


# ----------------------------------------------------------------------------------------------
# Feedback: what a search leaves behind for RecordFeedback, and one recorded event


class FeedbackKind(enum.Enum):
    CLICK = "click"
    DWELL = "dwell"
    RATING = "rating"


class FeedbackOutcome(enum.Enum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    FAILED = "failed"


@dataclass(frozen=True)
class SearchRecord:
    """One served page, kept for a while so feedback can name it: whose it was (tenant), which arm
    served it, and which assets it showed at which 1-based page rank. Every search that shows the
    same page names the one record (services/gateway/feedback_flow.py); `secret` signs their ids."""

    search_id: str  # the record's key: a search_id is `<key>.<nonce>.<signature>` (or the key alone)
    tenant: str
    arm: str
    ranks: dict[str, int]  # asset id -> 1-based rank on the page
    secret: str = ""  # never leaves the gateway and the store


@dataclass(frozen=True)
class FeedbackEvent:
    """A caller's event after validation (the servicer's convert step builds it)."""

    event_id: str
    kind: FeedbackKind | None  # None: the caller left it unset (validation refuses it)
    search_id: str
    asset_id: str
    rank: int
    dwell_ms: int
    rating: int
    occurred_at: dt.datetime | None
    invalid: str = ""  # why a field could not be read (convert never raises: one bad event fails alone)


@dataclass(frozen=True)
class StoredFeedback:
    """One event as the feedback store keeps it: tenant-scoped, with the arm that served the search and
    the rank the store's copy of the search gave the asset (what MRR of clicks is computed from)."""

    tenant: str
    event_id: str
    kind: FeedbackKind
    search_id: str
    asset_id: str
    arm: str
    rank: int
    dwell_ms: int
    rating: int
    occurred_at: dt.datetime
    caller: str = ""  # the principal's subject: its clicks feed its own preference boost (if enabled)


@dataclass(frozen=True)
class FeedbackAck:
    event_id: str
    outcome: FeedbackOutcome
    error_code: int = 0  # google.rpc.Code number when FAILED
    error_message: str = ""


@dataclass(frozen=True)
class ArmTotals:
    """Durable per-arm totals: click-through rate = clicked_searches / searches; MRR of clicks =
    reciprocal_rank_sum / clicks."""

    searches: int = 0
    clicked_searches: int = 0
    clicks: int = 0
    reciprocal_rank_sum: float = 0.0
    events: dict[str, int] = field(default_factory=dict)  # kind value -> events recorded

    @property
    def click_through_rate(self) -> float:
        return self.clicked_searches / self.searches if self.searches else 0.0

    @property
    def mrr_of_clicks(self) -> float:
        return self.reciprocal_rank_sum / self.clicks if self.clicks else 0.0


# ----------------------------------------------------------------------------------------------
# Re-index jobs (services/gateway/reindex.py)

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"


@dataclass
class ReindexJob:
    tenant: str
    target: ModelRef
    state: str = RUNNING
    total_assets: int = 0
    scanned: int = 0
    reindexed: int = 0
    already_done: int = 0
    missing_originals: int = 0
    missing_asset_ids: list[str] = field(default_factory=list)
    failed: int = 0
    error: str = ""
    started_at: str = ""
    updated_at: str = ""
    cursor: str = ""
    # Pass 1 is the scan; pass 2 the sweep for assets an ingest wrote before it knew of the job.
    scan_pass: int = 1

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["target"] = [self.target.name, self.target.version]
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> ReindexJob:
        d = dict(d)
        d["target"] = ModelRef(*d["target"])
        return ReindexJob(**d)
