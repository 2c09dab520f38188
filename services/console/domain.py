"""The console's types: what a page asks the gateway and what it shows (no gRPC, no HTTP types)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


class ConsoleError(Exception):
    """A gateway answer the page shows the user: `status` is the gRPC status name (e.g. NOT_FOUND) and
    `message` the gateway's public, actionable message."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class InvalidInput(ValueError):
    """A form field the console refuses before calling the gateway (shown next to the form)."""


@dataclass(frozen=True)
class SearchQuery:
    """One search as the search form describes it. `image` is the query image's bytes (or None)."""

    text: str = ""
    image: bytes | None = None
    alpha: float | None = None
    rerank: bool = True
    text_weight: float | None = None
    mmr_lambda: float | None = None
    licenses: tuple[str, ...] = ()
    tag: str = ""
    created_from: dt.date | None = None
    created_to: dt.date | None = None
    page_size: int = 24
    page_token: str = ""


@dataclass(frozen=True)
class Scores:
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


@dataclass(frozen=True)
class AssetView:
    asset_id: str
    caption: str
    tags: tuple[str, ...]
    ocr_text: str
    owner: str
    license_name: str
    license_expires_at: dt.datetime | None
    safety_labels: tuple[tuple[str, float], ...]
    safety_score: float
    source: str
    uri: str
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    width: int
    height: int
    content_sha256: str
    model: str
    popularity: float


@dataclass(frozen=True)
class ResultCard:
    rank: int
    asset: AssetView
    scores: Scores
    rerank_notes: tuple[str, ...]
    policy_reasons: tuple[str, ...]


@dataclass(frozen=True)
class ResultsPage:
    results: tuple[ResultCard, ...]
    next_page_token: str
    degraded: bool
    degraded_reasons: tuple[str, ...]
    cached: bool
    model: str
    search_id: str
    arm: str


@dataclass(frozen=True)
class Upload:
    """One file of an ingest post, checked (type, size) and described by the ingest form."""

    asset_id: str
    data: bytes
    caption: str
    tags: tuple[str, ...]
    license_name: str


PENDING_NOTE = "stored; visible once its safety analysis is done"


@dataclass(frozen=True)
class IngestItemOutcome:
    asset_id: str
    outcome: str  # created, updated, unchanged, duplicate, failed, uncertain, refused
    message: str = ""
    duplicate_of: str = ""
    safety_labels: tuple[tuple[str, float], ...] = ()
    ocr_text: str = ""
    # Stored, but invisible until its safety analysis (after the acknowledgement) is done.
    analysis_pending: bool = False

    @property
    def details(self) -> str:
        """The Details cell: the message, the holder of a duplicate, or that the item is not visible yet."""
        parts = [self.message] if self.message else []
        if self.duplicate_of:
            parts.append(f"duplicate of {self.duplicate_of}")
        if self.analysis_pending:
            parts.append(PENDING_NOTE)
        return "; ".join(parts)

    @property
    def ok(self) -> bool:
        return self.outcome in {"created", "updated", "unchanged", "duplicate"}


@dataclass(frozen=True)
class Click:
    """A result the user opened: sent to the gateway as feedback."""

    event_id: str
    search_id: str
    asset_id: str
    rank: int


@dataclass(frozen=True)
class BackendHealth:
    name: str
    state: str  # serving, not serving, not configured, unreachable


@dataclass(frozen=True)
class StatusView:
    gateway: BackendHealth
    backends: tuple[BackendHealth, ...]
    degraded_reasons: tuple[str, ...] = ()
    model: str = ""
    probe_error: str = ""
    checked_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
