"""Gateway settings (env prefix IMAGESEARCH_GATEWAY_), one section per part of the gateway.

Each section is a model of its own (`BackendSettings`, `PolicySettings`, `SearchFlowSettings`,
`IngestSettings`, `AnalysisSettings`) and the only place its defaults are written; each flow builds its
frozen config object from its section (`SearchConfig.from_settings`, `IngestConfig.from_settings`).
`GatewaySettings` composes the sections by inheritance rather than as nested fields, so every field
keeps its flat environment name (`IMAGESEARCH_GATEWAY_RERANK_TEXT_WEIGHT`, ...): deployments, the
README reference (`services/common/config_docs.py`) and the compose check (`tests/common/test_deploy.py`)
read the top-level fields by those names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.common.settings import PublicTlsSettings, ServiceSettings
from services.gateway.limits import MAX_QUERY_LIMIT


class BackendSettings(BaseModel):
    """Where the encoder and search services are, and how calls to them are bounded and retried."""

    encoder_address: str = Field("127.0.0.1:50071", description="EncoderService address (host:port).")
    search_address: str = Field("127.0.0.1:50072", description="SearchService address (host:port).")
    encoder_text_deadline_s: float = Field(
        2.0, gt=0, description="Per-hop deadline of one EncodeTexts call (capped by the caller's deadline)."
    )
    encoder_image_deadline_s: float = Field(
        10.0, gt=0, description="Per-hop deadline of one EncodeImages call (ingest batches, query images)."
    )
    search_query_deadline_s: float = Field(
        2.0, gt=0, description="Per-hop deadline of one Query/GetAssets call."
    )
    search_write_deadline_s: float = Field(
        10.0, gt=0, description="Per-hop deadline of one UpsertAssets/DeleteAssets call."
    )
    retry_attempts: int = Field(
        3,
        ge=1,
        le=10,
        description="Attempts (first try included) for idempotent backend calls on UNAVAILABLE.",
    )
    retry_initial_backoff_s: float = Field(
        0.02, gt=0, description="Base of the jittered exponential backoff between retries."
    )
    retry_max_backoff_s: float = Field(0.5, gt=0, description="Cap of one backoff sleep.")
    breaker_failure_threshold: int = Field(
        5,
        ge=1,
        description="Consecutive backend failures (UNAVAILABLE/DEADLINE/INTERNAL) that open its breaker.",
    )
    breaker_reset_s: float = Field(
        5.0, gt=0, description="How long an open breaker fails fast before letting one probe call through."
    )


class PolicySettings(BaseModel):
    """Authentication, visibility policy and page tokens."""

    api_keys_file: Path | None = Field(
        None,
        description="JSON or YAML keyring: {tenants: {name: {safety_threshold, allowed_licenses}}, "
        "api_keys: {key id: {hash, tenant, roles, subject, not_after?, revoked_at?, allowed_licenses?, "
        "safety_threshold?}}}; `python -m services.gateway.keys` manages it (docs/GATEWAY.md).",
    )
    api_keys_json: str | None = Field(
        None,
        description="The same keyring inline as JSON (merged over api_keys_file; for tests and containers).",
    )
    token_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 secret for signed bearer tokens (JWT HS256); unset disables tokens."
    )
    token_jwks_file: Path | None = Field(
        None,
        description="JWKS file of public keys (RSA for RS256, EC P-256 for ES256) that verify signed bearer "
        "tokens, chosen by the token's `kid`; unset accepts no RS256/ES256 tokens.",
    )
    token_audience: str = Field("imagesearch", description="Required `aud` claim of signed tokens.")
    token_leeway_s: float = Field(
        30.0, ge=0, description="Clock skew tolerated on `exp`/`nbf` of signed tokens."
    )
    default_safety_threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Safety score above which an asset is hidden, for tenants that configure none.",
    )
    license_time_granularity_s: int = Field(
        60,
        ge=1,
        description="The licence-expiry filter sent to search uses `now` rounded down to this (stable cache "
        "keys); the gateway re-checks the exact expiry on every result.",
    )
    page_token_secret: SecretStr | None = Field(
        None, description="HMAC secret for page tokens; unset = random per process (tokens die on restart)."
    )


class SearchFlowSettings(BaseModel):
    """The search flow: rerank defaults, the default alpha, the page and query-embedding caches."""

    rerank_candidate_window: int = Field(
        100, ge=1, le=MAX_QUERY_LIMIT, description="First-stage candidates reranked."
    )
    rerank_text_weight: float = Field(
        0.5, ge=0, le=1, description="Text share of text + image fusion (image gets the rest)."
    )
    rerank_mmr_lambda: float = Field(
        0.7, ge=0, le=1, description="MMR relevance/diversity trade-off (1 = relevance only)."
    )
    rerank_duplicate_threshold: float = Field(
        0.99,
        ge=0,
        le=1,
        description="Embedding cosine above which hits collapse as near-duplicates (1 = off).",
    )
    rerank_freshness_weight: float = Field(
        0.0, ge=0, le=1, description="Default weight of the freshness boost."
    )
    rerank_freshness_half_life_days: float = Field(
        30.0, gt=0, description="Age at which the freshness boost halves."
    )
    rerank_popularity_weight: float = Field(
        0.0, ge=0, le=1, description="Default weight of the popularity boost."
    )
    default_alpha: float = Field(
        0.4,
        ge=0,
        le=1,
        description="Vector-leg weight of text queries when the model package's card gives none "
        "(fusion_defaults.text_query.hybrid_alpha in its package.json wins over this).",
    )
    default_fusion: Literal["adaptive", "relative_score", "ranked"] = Field(
        "adaptive",
        description="First-stage fusion of text queries when the model package's card gives none.",
    )
    model_packages_dir: str = Field(
        "",
        description="Where model packages' cards are read for their fusion defaults "
        "(*/package/package.json; empty: the repository's models/).",
    )
    page_cache_entries: int = Field(
        4096,
        ge=0,
        description="Result pages kept per gateway process (0 = off). A hit is served only while the "
        "tenant's index generation (asked of the search service per request) is unchanged.",
    )
    page_cache_ttl_s: float = Field(60.0, gt=0, description="Upper bound on the age of a cached result page.")
    query_vector_cache_entries: int = Field(
        4096,
        ge=1,
        description="Query-text embeddings kept (LRU); query-image embeddings get a quarter of this.",
    )
    query_vector_ttl_s: float = Field(
        600.0, gt=0, description="Upper bound on the age of a cached query embedding."
    )


class IngestSettings(BaseModel):
    """The ingest flow: image caps, concurrency and micro-batching."""

    ingest_max_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Largest accepted image, in bytes.")
    ingest_max_pixels: int = Field(40_000_000, ge=1, description="Largest accepted decoded image (w*h).")
    ingest_max_in_flight: int = Field(
        128,
        ge=1,
        le=1024,
        description="Items of one Ingest stream processed concurrently (fills encoder batches).",
    )
    ingest_encode_batch: int = Field(16, ge=1, le=256, description="Images per EncodeImages call at ingest.")
    ingest_encode_concurrency: int = Field(
        2, ge=1, le=64, description="EncodeImages calls in flight at ingest (batches grow while they run)."
    )
    ingest_upsert_batch: int = Field(
        64, ge=1, le=1000, description="Most assets per UpsertAssets call (one call in flight per tenant)."
    )
    ingest_batch_wait_ms: float = Field(
        5.0, ge=0, description="How long an ingest micro-batch waits to fill before it is sent."
    )


class AnalysisSettings(BaseModel):
    """Ingest-time image analysis (NudeNet safety labels, RapidOCR text)."""

    safety_enabled: bool = Field(True, description="Run the NudeNet safety detector at ingest.")
    ocr_enabled: bool = Field(
        True, description="Run RapidOCR at ingest (text inside images, keyword-searchable)."
    )
    analysis_threads: int = Field(
        1,
        ge=1,
        le=16,
        description="Worker threads for safety + OCR (each model also uses 1 intra-op thread).",
    )
    ocr_max_side: int = Field(
        640, ge=32, description="Images are shrunk to this longest side before OCR text detection."
    )
    ocr_min_confidence: float = Field(
        0.6, ge=0, le=1, description="OCR lines below this confidence are dropped."
    )


class RateLimitSettings(BaseModel):
    """Rate limits: token buckets per tenant and per caller (API key subject or token `sub`), one pair for
    searches and one for ingest items. A rate of 0 means unlimited (the default)."""

    rate_limit_backend: Literal["memory", "redis"] = Field(
        "memory",
        description="Where buckets live: memory (this process; each replica allows the full rate) or redis "
        "(shared by every replica, Redis's clock).",
    )
    rate_limit_redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis rate limiter: connection URL."
    )
    rate_limit_redis_timeout_s: float = Field(
        0.1, gt=0, description="Redis rate limiter: per-call timeout; slower means the call is let through."
    )
    rate_limit_redis_retry_after_s: float = Field(
        1.0,
        ge=0,
        description="Redis rate limiter: after a failure, how long limits are not enforced (fail open) "
        "before Redis is tried again.",
    )
    rate_limit_key_prefix: str = Field(
        "imagesearch:ratelimit:", description="Redis rate limiter: prefix of every bucket key."
    )
    rate_limit_max_buckets: int = Field(
        65536,
        ge=1,
        description="Memory rate limiter: buckets kept (LRU; a forgotten bucket comes back full).",
    )
    search_rate_per_tenant: float = Field(
        0.0, ge=0, description="Searches (Search, SearchSimilar) per second per tenant; 0 = unlimited."
    )
    search_burst_per_tenant: float = Field(
        0.0, ge=0, description="Searches a tenant may make at once (bucket size); 0 = one second's worth."
    )
    search_rate_per_caller: float = Field(
        0.0, ge=0, description="Searches per second per caller (key subject / token sub); 0 = unlimited."
    )
    search_burst_per_caller: float = Field(
        0.0, ge=0, description="Searches a caller may make at once; 0 = one second's worth."
    )
    ingest_rate_per_tenant: float = Field(
        0.0, ge=0, description="Ingest items per second per tenant (one token per item); 0 = unlimited."
    )
    ingest_burst_per_tenant: float = Field(
        0.0, ge=0, description="Ingest items a tenant may send at once; 0 = one second's worth."
    )
    ingest_rate_per_caller: float = Field(
        0.0, ge=0, description="Ingest items per second per caller; 0 = unlimited."
    )
    ingest_burst_per_caller: float = Field(
        0.0, ge=0, description="Ingest items a caller may send at once; 0 = one second's worth."
    )
    ingest_daily_quota_per_tenant: int = Field(
        0, ge=0, description="Ingest items per tenant per UTC day (a quota, counted per item); 0 = none."
    )
    ingest_daily_quota_per_caller: int = Field(
        0, ge=0, description="Ingest items per caller per UTC day; 0 = none."
    )


# Sections are listed last-first: pydantic collects inherited fields in reverse method-resolution
# order, and the README reference shows them in that order (backends first).
class GatewaySettings(
    ServiceSettings,
    PublicTlsSettings,
    RateLimitSettings,
    AnalysisSettings,
    IngestSettings,
    SearchFlowSettings,
    PolicySettings,
    BackendSettings,
):
    model_config = SettingsConfigDict(
        env_prefix="IMAGESEARCH_GATEWAY_", extra="ignore", validate_default=True
    )

    max_tenants_tracked: int = Field(
        1024,
        ge=1,
        description="Tenants whose per-tenant state (ingest batchers, page-cache generations) is kept; "
        "the least recently active tenant's is dropped beyond this (rebuilt on its next call).",
    )
