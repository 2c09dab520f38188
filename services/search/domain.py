"""Plain domain types of the search service (no gRPC or protobuf types here).

Timestamps are timezone-aware UTC datetimes; vectors are 1-D float32 numpy arrays, L2-normalised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

import numpy as np

from services.common.errors import InvalidArgument
from services.search.filters import FilterNode

TENANT_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A content hash as stored and looked up: the SHA-256 of the original image bytes, lowercase hex.
SHA256_HEX_RE = re.compile(r"^[0-9a-f]{64}$")

# Properties the keyword (BM25) leg can search, and the default boosts (caption^2, tags^1.5, ocr_text^1).
KEYWORD_FIELDS: tuple[str, ...] = ("caption", "tags", "ocr_text")
DEFAULT_KEYWORD_FIELDS: tuple[tuple[str, float], ...] = (("caption", 2.0), ("tags", 1.5), ("ocr_text", 1.0))
# BM25 parameters of the keyword leg (Weaviate's defaults); both backends score with them.
BM25_K1 = 1.2
BM25_B = 0.75
# The name of every model's primary vector (the one its text and image towers share); an empty
# Embedding.vector_name means it. Other named vectors (e.g. "visual") are stored beside it.
PRIMARY_VECTOR = "semantic"
VECTOR_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# A model version registered after the collection's first model stores its vectors under internal
# names "<slot>__<name>" (slot "m2", "m3", ...); "__" is therefore reserved in model vector names.
SLOT_SEPARATOR = "__"
_TOKEN_RE = re.compile(r"[^\W_]+", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Weaviate's `word` tokenization: split on non-alphanumerics, lowercase (tantivy's `default`)."""
    return [t.lower() for t in _TOKEN_RE.findall(text) if len(t.encode()) <= 40]


@dataclass(frozen=True, slots=True)
class ModelRef:
    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True, slots=True)
class SafetyLabel:
    label: str
    score: float


# Where an asset's safety/OCR analysis stands (AssetDoc.analysis_state). "" is an asset stored before
# states existed: it was analysed at ingest. Only ANALYSIS_DONE states are visible to searches and reads.
ANALYSIS_PENDING = "pending"
ANALYSIS_ANALYSED = "analysed"
ANALYSIS_FAILED = "failed"
ANALYSIS_STATES = ("", ANALYSIS_PENDING, ANALYSIS_ANALYSED, ANALYSIS_FAILED)
# The states that keep an asset out of every search and read (fail-closed: anything not known done).
ANALYSIS_HIDDEN = (ANALYSIS_PENDING, ANALYSIS_FAILED)


def analysis_done(state: str) -> bool:
    return state not in ANALYSIS_HIDDEN


@dataclass(slots=True)
class AssetDoc:
    """An asset's metadata as stored. Empty strings / lists and None timestamps mean "no value"."""

    asset_id: str
    uri: str = ""
    caption: str = ""
    tags: tuple[str, ...] = ()
    ocr_text: str = ""
    owner: str = ""
    license_name: str = ""
    license_expires_at: datetime | None = None
    safety_labels: tuple[SafetyLabel, ...] = ()
    safety_score: float = 0.0
    source: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    width: int = 0
    height: int = 0
    content_sha256: str = ""
    embedding_model: ModelRef | None = None
    popularity: float = 0.0
    analysis_state: str = ""  # one of ANALYSIS_STATES


@dataclass(slots=True)
class ModelVectors:
    """One model version's vectors of an image: its primary and its other named vectors."""

    vector: np.ndarray | None
    named: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(slots=True)
class AssetRecord:
    """An asset with its image embedding (None only when read back without vectors) and its other
    named vectors (name -> vector; never the primary), both of `doc.embedding_model`; `others` holds
    the same image's vectors of other model versions. `models` (reads only) lists the versions the
    stored asset holds vectors of."""

    doc: AssetDoc
    vector: np.ndarray | None = None
    named: dict[str, np.ndarray] = field(default_factory=dict)
    others: dict[ModelRef, ModelVectors] = field(default_factory=dict)
    models: tuple[ModelRef, ...] = ()


@dataclass(frozen=True, slots=True)
class ItemFailure:
    """Why one item of a batch was not written (a gRPC status code number + actionable message)."""

    code: int
    message: str


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    """What the collection holds: its embedding model and the primary's dimension (None/0 until the
    first write), and the dimension of each other named vector (fixed when the name is first written)."""

    model: ModelRef | None
    dimension: int
    named: dict[str, int] = field(default_factory=dict)
    # Model versions registered after the first (`model`), each with its slot ("m2", ...).
    versions: dict[ModelRef, str] = field(default_factory=dict)

    def slot_of(self, model: ModelRef) -> str | None:
        """ "" for the first model, the slot of a registered version, None for an unknown one."""
        if model == self.model:
            return ""
        return self.versions.get(model)

    def all_models(self) -> list[ModelRef]:
        return ([self.model] if self.model is not None else []) + list(self.versions)

    def dimension_of(self, name: str) -> int:
        """The stored dimension of a vector name (0 when the collection has no such vector)."""
        return self.dimension if name == PRIMARY_VECTOR else self.named.get(name, 0)

    def specs(self, model: ModelRef | None = None) -> tuple[VectorSpec, ...]:
        """The named vectors one model version stores per asset (default: the first model's)."""
        if self.model is None:
            return ()
        slot = "" if model is None else self.slot_of(model)
        if slot is None:
            return ()
        if not slot:
            primary = VectorSpec(PRIMARY_VECTOR, self.dimension, primary=True)
            own = {n: d for n, d in self.named.items() if SLOT_SEPARATOR not in n}
            return (primary, *(VectorSpec(n, d) for n, d in sorted(own.items())))
        prefix = slot + SLOT_SEPARATOR
        own = {n[len(prefix) :]: d for n, d in self.named.items() if n.startswith(prefix)}
        out = []
        if PRIMARY_VECTOR in own:
            out.append(VectorSpec(PRIMARY_VECTOR, own.pop(PRIMARY_VECTOR), primary=True))
        return (*out, *(VectorSpec(n, d) for n, d in sorted(own.items())))


def storage_name(slot: str, name: str) -> str:
    """The stored vector name of a model's named vector: the first model's keep their own names."""
    return name if not slot else f"{slot}{SLOT_SEPARATOR}{name}"


@dataclass(frozen=True, slots=True)
class TenantModels:
    """A tenant's model-version state: the active version (None: the collection's first model), the
    one a rollback returns to, and the later versions its assets may hold vectors of."""

    active: ModelRef | None = None
    previous: ModelRef | None = None
    held: tuple[ModelRef, ...] = ()

    def to_json(self) -> dict[str, object]:
        def ref(m: ModelRef | None) -> list[str] | None:
            return None if m is None else [m.name, m.version]

        held = [ref(m) for m in self.held]
        return {"active": ref(self.active), "previous": ref(self.previous), "held": held}

    @staticmethod
    def from_json(d: dict[str, object]) -> TenantModels:
        def ref(v: object) -> ModelRef | None:
            return None if not v else ModelRef(str(v[0]), str(v[1]))  # type: ignore[index]

        held = tuple(m for m in (ref(v) for v in d.get("held") or ()) if m is not None)  # type: ignore[attr-defined]
        return TenantModels(ref(d.get("active")), ref(d.get("previous")), held)


@dataclass(frozen=True, slots=True)
class VectorSpec:
    """One named vector stored per asset (all are image vectors; the primary is also the text one)."""

    name: str
    dimension: int
    primary: bool = False


class Fusion(Enum):
    RELATIVE_SCORE = "relative_score"
    RANKED = "ranked"
    ADAPTIVE = "adaptive"


@dataclass(frozen=True, slots=True)
class QueryPlan:
    """A validated, fully defaulted query: what a backend executes.

    `window` is the number of candidates each leg contributes before fusion; the fused list is cut to
    [offset, offset + limit). alpha = 0 runs only the keyword leg, alpha = 1 only the vector leg.
    """

    text: str
    vector: np.ndarray | None
    alpha: float
    fusion: Fusion
    filter: FilterNode | None
    limit: int
    offset: int
    window: int
    keyword_fields: tuple[tuple[str, float], ...]
    include_vectors: bool
    # The stored named vector the vector leg searches (PRIMARY_VECTOR unless another was asked for;
    # a later model version's names are "<slot>__<name>").
    vector_name: str = PRIMARY_VECTOR
    # The model version the query vector comes from, and its name as that model calls it.
    vector_model: ModelRef | None = None
    vector_label: str = PRIMARY_VECTOR
    # Adaptive fusion: the keyword leg's weight is (1 - alpha) * strength ** this (services.search.fusion).
    strength_exponent: float = 2.0

    @property
    def uses_keyword(self) -> bool:
        return self.alpha < 1.0 and bool(self.text.strip())

    @property
    def uses_vector(self) -> bool:
        return self.alpha > 0.0 and self.vector is not None


@dataclass(slots=True)
class Scores:
    fused: float = 0.0
    keyword_contribution: float = 0.0
    vector_contribution: float = 0.0
    bm25: float = 0.0
    cosine_similarity: float = 0.0
    # The named vector the vector leg searched ("" when the query had no vector leg).
    vector_name: str = ""
    # The weight the fusion gave the vector leg for this query (the keyword leg got 1 - it).
    vector_weight: float = 0.0


@dataclass(slots=True)
class Hit:
    doc: AssetDoc
    scores: Scores
    vector: np.ndarray | None = None
    # The model of `vector` (the query's model version).
    vector_model: ModelRef | None = None


@dataclass(slots=True)
class QueryResult:
    hits: list[Hit]
    cached: bool = False
    generation: int = 0


@dataclass(frozen=True, slots=True)
class Stats:
    asset_count: int
    model: ModelRef | None
    dimension: int
    vectors: tuple[VectorSpec, ...] = ()
    # The model versions the collection holds (the first model first).
    models: tuple[ModelRef, ...] = ()


@dataclass(frozen=True, slots=True)
class ModelVersionInfo:
    model: ModelRef
    held: bool
    active: bool
    primary_slot: bool
    covered: int = 0
    vectors: tuple[VectorSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class ModelVersionsView:
    versions: tuple[ModelVersionInfo, ...]
    active: ModelRef | None
    previous: ModelRef | None
    asset_count: int
    generation: int = 0


@dataclass(frozen=True, slots=True)
class ContentHashMatch:
    """The tenant's assets whose original image has one content hash (ids sorted; empty when none)."""

    content_sha256: str
    asset_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PendingAsset:
    """An asset whose analysis is pending: where the analysis worker finds its original."""

    tenant: str
    asset_id: str
    content_sha256: str
    updated_at: datetime | None = None


@dataclass(slots=True)
class StreamedUpsert:
    """One item of an upsert stream: its tenant, the record, and its wire-level problem if any."""

    tenant: str
    record: AssetRecord
    wire_error: ItemFailure | None = None


@dataclass(slots=True)
class UpsertOutcome:
    asset_id: str
    error: ItemFailure | None = None


@dataclass(slots=True)
class WriteSummary:
    """Per-item outcomes of a write and the tenant's index generation after it."""

    outcomes: list[UpsertOutcome] = field(default_factory=list)
    generation: int = 0


def validate_vector(values: np.ndarray, what: str) -> np.ndarray:
    """Finite and non-zero; returned L2-normalised (cosine is scale-free; the graph wants unit length)."""
    if values.ndim != 1 or len(values) == 0:
        raise InvalidArgument(f"{what} is empty")
    if not np.all(np.isfinite(values)):
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise InvalidArgument(f"{what} has a non-finite value ({values[bad]}) at index {bad}")
    norm = float(np.linalg.norm(values))
    if norm == 0.0:
        raise InvalidArgument(f"{what} is all zeros")
    return (values / norm).astype(np.float32)
