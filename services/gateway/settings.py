"""Gateway settings (env prefix IMAGESEARCH_GATEWAY_), one section per part of the gateway.

Each section is a model of its own (`BackendSettings`, `PolicySettings`, `SearchFlowSettings`,
`IngestSettings`, `AnalysisSettings`, `BlobSettings`) and the only place its defaults are written; each
flow builds its frozen config object from its section (`SearchConfig.from_settings`,
`IngestConfig.from_settings`).
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

from services.common.balancing import BackendAddress
from services.common.settings import PublicTlsSettings, ServiceSettings
from services.gateway.limits import MAX_QUERY_LIMIT


class BackendSettings(BaseModel):
    """Where the encoder and search services are, and how calls to them are bounded and retried."""

    encoder_address: BackendAddress = Field(
        "127.0.0.1:50071",
        description="EncoderService address: host:port, replicas as ip:port,ip:port or dns:///name:port "
        "(round robin over the replicas that report SERVING).",
    )
    search_address: BackendAddress = Field(
        "127.0.0.1:50072",
        description="SearchService address: host:port, replicas as ip:port,ip:port or dns:///name:port "
        "(round robin over the replicas that report SERVING).",
    )
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
    generation_watch: bool = Field(
        True,
        description="Learn the tenants' index generations by a push (SearchService.WatchIndexGenerations) "
        "so that a page-cache hit makes no call; off, or while the watch is down, every search reads "
        "the generation (GetIndexGeneration).",
    )
    generation_watch_renew_s: float = Field(
        300.0, gt=0, description="The generation watch is re-opened this often (each tenant re-read once)."
    )
    generation_watch_retry_s: float = Field(
        1.0, gt=0, description="Wait before re-opening a generation watch that was lost."
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
    audit_log_path: str | None = Field(
        None,
        description="File the audit trail is appended to as JSON lines, fsync'd per batch; unset = "
        "standard error (batched, not fsync'd).",
    )
    audit_flush_interval_s: float = Field(
        0.05,
        gt=0,
        le=5,
        description="Audit lines are written at least this often (a crash loses at most this much).",
    )


class SearchFlowSettings(BaseModel):
    """The search flow: rerank defaults, the default alpha, the page and query-embedding caches."""

    rerank_candidate_window: int = Field(
        100, ge=1, le=MAX_QUERY_LIMIT, description="First-stage candidates reranked."
    )
    rerank_vector_encoding: Literal["per_hit", "float32", "float16"] = Field(
        "float32",
        description="How the candidates' vectors come from the search service: one packed matrix "
        "(float32, or float16 at half the bytes, cosine within 1e-3) or one float32 message per hit "
        "(before issue 19 part 3; docs/PERFORMANCE.md).",
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
        "tenant's index generation (pushed by the search service, or asked per request) is unchanged.",
    )
    page_cache_ttl_s: float = Field(60.0, gt=0, description="Upper bound on the age of a cached result page.")
    search_plan_entries: int = Field(
        4096,
        ge=0,
        description="Validated text searches remembered per gateway process (0 = off): an identical "
        "search by the same principal (same key, roles and policy) skips re-validating the query and "
        "re-deriving its page-token binding; authentication, authorisation, policy, audit, rate limits "
        "and the page cache's generation check still run on every call.",
    )
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
    analysis_mode: Literal["deferred", "inline"] = Field(
        "deferred",
        description="deferred: an item is acknowledged once stored and encoded, invisible (analysis state "
        "pending) until safety + OCR ran behind it from the durable queue (the index); inline: analysed "
        "before the acknowledgement (docs/PERFORMANCE.md, deferred analysis, has the figures).",
    )
    analysis_nice: int = Field(
        0,
        ge=0,
        le=19,
        description="Deferred analysis: niceness added to the analysis threads (e.g. 10: the detectors "
        "take the CPU that acknowledging leaves; 0 = the same priority; docs/PERFORMANCE.md).",
    )
    analysis_paused: bool = Field(
        False,
        description="Hold the deferred analysis worker (pending assets stay stored and invisible; it "
        "resumes them when started without this). For incidents and tests.",
    )
    analysis_retry_attempts: int = Field(
        4, ge=1, le=20, description="Tries per image before its analysis state becomes failed (invisible)."
    )
    analysis_retry_backoff_s: float = Field(
        0.5, ge=0, description="Wait before the second try of a failed analysis; doubled for each next one."
    )
    analysis_scan_interval_s: float = Field(
        30.0,
        gt=0,
        description="How often the worker lists pending assets in the index (at start, then when idle).",
    )
    analysis_queue_max: int = Field(
        10_000,
        ge=1,
        description="Pending items the worker holds in memory; beyond it they wait in the index for a scan.",
    )


class BlobSettings(BaseModel):
    """Where originals and thumbnails are kept (content-addressed per tenant), and how thumbnails look."""

    blob_backend: Literal["local", "s3"] = Field(
        "local",
        description="Object store for originals and thumbnails: local (a directory, blob_dir) or s3 (an "
        "S3-compatible store such as MinIO).",
    )
    blob_dir: Path = Field(Path(".data/blobs"), description="Local object store: its directory.")
    blob_s3_endpoint: str = Field("127.0.0.1:9000", description="S3 object store: host:port (no scheme).")
    blob_s3_bucket: str = Field("imagesearch-blobs", description="S3 object store: the bucket.")
    blob_s3_access_key: str = Field("", description="S3 object store: access key id.")
    blob_s3_secret_key: SecretStr = Field(SecretStr(""), description="S3 object store: secret access key.")
    blob_s3_region: str | None = Field(None, description="S3 object store: region (unset: the server's).")
    blob_s3_secure: bool = Field(True, description="S3 object store: use HTTPS.")
    blob_s3_ca_file: Path | None = Field(
        None,
        description="S3 object store: CA bundle that verifies its HTTPS certificate (unset: system CAs).",
    )
    blob_s3_create_bucket: bool = Field(
        True, description="S3 object store: create the bucket on first use when it does not exist."
    )
    blob_s3_timeout_s: float = Field(
        10.0, gt=0, description="S3 object store: read timeout of one request (connect: at most 2 s)."
    )
    blob_chunk_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="GetAssetImage: bytes per streamed message (the contract allows at most 1 MiB).",
    )
    thumbnail_max_side: int = Field(
        256, ge=16, le=2048, description="Longest side of the stored thumbnail, in pixels (JPEG)."
    )
    thumbnail_quality: int = Field(85, ge=1, le=95, description="JPEG quality of the stored thumbnail.")


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


class DriftSettings(BaseModel):
    """Drift monitoring: running statistics of ingested image vectors and query vectors per tenant and
    model version, against a reference snapshot (docs/OPERATIONS.md)."""

    drift_reference_dir: Path | None = Field(
        None,
        description="Where drift references are kept (one JSON file per tenant and model version); "
        "unset keeps them in memory only (lost at restart).",
    )
    drift_half_life: float = Field(
        500.0,
        gt=0,
        description="Samples (vectors of one stream) after which a sample weighs half in the running "
        "drift statistics: smaller reacts faster, larger is steadier.",
    )
    drift_min_samples: int = Field(
        50,
        ge=1,
        description="Samples a stream needs before it gets a reference automatically (when none was "
        "taken for its model version).",
    )
    drift_low_score_threshold: float = Field(
        0.3,
        ge=-1,
        le=1,
        description="Best first-stage cosine below which a search counts as poorly matched "
        "(gateway_drift_low_score_share).",
    )
    drift_centroid_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of the centroid shift in the query drift score (the best-score shift gets "
        "the rest).",
    )


class FeedbackSettings(BaseModel):
    """Experiments (arms) and search feedback (RecordFeedback) with its durable store."""

    data_dir: Path = Field(
        Path(".data/gateway"),
        description="The gateway's own durable files (the SQLite feedback store); relative to the working "
        "directory.",
    )
    experiments_file: Path | None = Field(
        None,
        description="JSON or YAML experiments: {experiments: [{name, tenants?, unit: caller|session, arms: "
        "[{name, share, alpha?, fusion?, rerank?}]}]} (docs/GATEWAY.md); unset: every search is served by "
        "`control`.",
    )
    feedback_backend: Literal["sqlite", "redis"] = Field(
        "sqlite",
        description="Where searches' records, feedback events and per-arm totals live: sqlite (one WAL file "
        "under data_dir; one gateway) or redis (shared by every replica; the real stack).",
    )
    feedback_redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis feedback store: connection URL."
    )
    feedback_redis_timeout_s: float = Field(0.25, gt=0, description="Redis feedback store: per-call timeout.")
    feedback_key_prefix: str = Field(
        "imagesearch:feedback:", description="Redis feedback store: prefix of every key."
    )
    feedback_record_retry_after_s: float = Field(
        1.0,
        gt=0,
        description="After the feedback store failed to record a search, searches skip it for this long "
        "(served without a search_id): an outage costs one store timeout per window, not one per search.",
    )
    feedback_search_ttl_s: float = Field(
        86400.0,
        gt=0,
        description="How long a search_id takes feedback at least: a page's record (tenant, arm, results) "
        "is reused for this long after its write and kept for twice that; feedback naming an expired "
        "search_id is refused as NOT_FOUND.",
    )
    feedback_pages_remembered: int = Field(
        10_000,
        ge=1,
        description="Distinct served pages whose feedback record this gateway remembers: a search showing "
        "one of them again (a page-cache hit) names that record and writes nothing to the feedback store.",
    )
    feedback_count_flush_s: float = Field(
        1.0,
        gt=0,
        description="Searches served by remembered pages are added to the store's per-arm totals at most "
        "this long later (with the next record write, if sooner); a crash loses at most this long's counts.",
    )
    preference_boost_weight: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Per-caller preference boost: added to the rerank score of each asset the same caller "
        "clicked recently (RecordFeedback clicks); 0 = off. Measured before offering it: docs/RELEVANCE.md.",
    )
    preference_recent_clicks: int = Field(
        50,
        ge=1,
        le=1000,
        description="Preference boost: how many of a caller's most recent clicks the feedback store keeps "
        "and the boost reads.",
    )
    preference_cache_ttl_s: float = Field(
        30.0,
        ge=0,
        description="Preference boost: how long a gateway reuses a caller's recent-click set before "
        "reading it again (the caller's own clicks through this gateway refresh it at once).",
    )
    preference_cache_entries: int = Field(
        10000, ge=1, description="Preference boost: callers whose recent-click sets are cached."
    )


class LifecycleSettings(BaseModel):
    """Model versions (docs/LIFECYCLE.md): one encoder per model version, the re-index job."""

    model_encoders: dict[str, str] = Field(
        default_factory=dict,
        description='Encoder address per model version, JSON {"name:version": "host:port", ...}: queries of '
        "a tenant are encoded by its active version's encoder, ingest also writes the vectors of every "
        "other version the tenant holds that has one here, and a re-index needs its target here. Empty: "
        "the one encoder (encoder_address) for its own model.",
    )
    model_state_ttl_s: float = Field(
        2.0,
        ge=0,
        description="How long a gateway reuses a tenant's model-version state (active version, held "
        "versions) before reading it again; a stale view stays correct (queries name their version).",
    )
    reindex_rate_per_s: float = Field(
        50.0, ge=0, description="Re-index: images re-embedded per second per job at most (0 = unlimited)."
    )
    reindex_batch: int = Field(16, ge=1, le=256, description="Re-index: images per encoder call.")
    reindex_concurrency: int = Field(2, ge=1, le=16, description="Re-index: encoder calls in flight per job.")
    shadow_model: str = Field(
        "",
        description='Shadow queries: a candidate model version "name:version" (with an encoder in '
        "model_encoders) that answers a share of first pages beside the active version, compared "
        "(overlap@10, rank correlation: metrics) and never returned; empty: off.",
    )
    shadow_share: float = Field(
        0.1, ge=0, le=1, description="Shadow queries: the share of first pages sampled."
    )
    shadow_max_in_flight: int = Field(
        4, ge=1, le=256, description="Shadow queries: comparisons at once (more samples are dropped)."
    )
    reindex_page_size: int = Field(
        200, ge=1, le=1000, description="Re-index: assets per scan page (the checkpoint follows each page)."
    )


# Sections are listed last-first: pydantic collects inherited fields in reverse method-resolution
# order, and the README reference shows them in that order (backends first).
class GatewaySettings(
    ServiceSettings,
    PublicTlsSettings,
    LifecycleSettings,
    DriftSettings,
    FeedbackSettings,
    RateLimitSettings,
    BlobSettings,
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
