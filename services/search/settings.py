"""Search settings (env prefix IMAGESEARCH_SEARCH_).

Settings choose the adapters (index backend, result cache) and bound every request; nothing else in
the service branches on which adapter runs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.limits import MAX_FILTER_NODES, MAX_QUERY_DEPTH, MAX_QUERY_LIMIT
from services.common.settings import ServiceSettings


class SearchSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="IMAGESEARCH_SEARCH_", extra="ignore", validate_default=True)

    # ---- index backend ----------------------------------------------------------------------------
    backend: Literal["embedded", "weaviate"] = Field(
        "embedded",
        description="Index backend: embedded (in-process usearch HNSW + tantivy BM25 + SQLite, persistent) "
        "or weaviate (a Weaviate server).",
    )
    data_dir: str = Field(
        ".data/search", description="Embedded backend: directory holding the persistent index (per tenant)."
    )
    weaviate_host: str = Field("127.0.0.1", description="Weaviate backend: server host.")
    weaviate_http_port: int = Field(8080, ge=1, le=65535, description="Weaviate backend: REST port.")
    weaviate_grpc_port: int = Field(50051, ge=1, le=65535, description="Weaviate backend: gRPC port.")
    weaviate_api_key: SecretStr | None = Field(
        None,
        description="Weaviate backend: the API key presented to Weaviate (its AUTHENTICATION_APIKEY_*); "
        "unset = anonymous access, for a Weaviate nothing else can reach.",
    )
    weaviate_collection: str = Field(
        "ImagesearchAsset",
        pattern=r"^[A-Z][A-Za-z0-9_]{0,127}$",
        description="Weaviate backend: collection name (created on start with the documented schema).",
    )
    weaviate_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Weaviate backend: per-query timeout cap (the caller's deadline may be shorter).",
    )
    weaviate_write_timeout_s: float = Field(
        120.0,
        gt=0,
        description="Weaviate backend: per-batch write timeout cap (HNSW inserts of a 1000-asset batch can "
        "take tens of seconds on 2 busy cores); a timed-out batch is UNAVAILABLE and safe to retry.",
    )
    weaviate_repair_interval_s: float = Field(
        5.0,
        ge=0,
        description="Weaviate backend: how often to look for a Weaviate restart; after each (and at start) "
        "every stored object is checked to be findable by vector search and re-indexed if not "
        "(docs/DURABILITY.md). 0 turns the check off.",
    )
    weaviate_repair_chunk: int = Field(
        500, ge=1, le=10000, description="Weaviate backend: objects checked per query by the repair pass."
    )
    # ---- Weaviate cluster (docs/SCALING.md) -------------------------------------------------------------
    weaviate_replication_factor: int = Field(
        1,
        ge=1,
        description="Weaviate backend: copies of each tenant's shard across the cluster's nodes, set when "
        "the collection is created (at most the node count). Each tenant is one shard (multi-tenancy), so "
        "there is no shard count to set: Weaviate spreads the tenants over the nodes.",
    )
    weaviate_async_replication: bool = Field(
        False,
        description="Weaviate backend: replicas compare and repair each other in the background, so a node "
        "that was down catches up without waiting for reads to repair it (at collection creation; for "
        "replication_factor > 1).",
    )
    weaviate_async_replication_frequency_s: float = Field(
        30.0,
        gt=0,
        description="Weaviate backend: how often replicas compare their copies (async replication; "
        "Weaviate's default 30 s). A node that was down catches up within about frequency + delay.",
    )
    weaviate_async_replication_delay_s: float = Field(
        30.0,
        ge=0,
        description="Weaviate backend: async replication leaves objects younger than this to the write "
        "path (still in flight) and does not propagate them yet (Weaviate's default 30 s).",
    )
    weaviate_write_consistency: Literal["ONE", "QUORUM", "ALL"] = Field(
        "QUORUM",
        description="Weaviate backend: replicas that must confirm a write before it is acknowledged. QUORUM "
        "with QUORUM reads: every read meets the latest acknowledged write, and one node of three may be "
        "down (with one node every level is that node).",
    )
    weaviate_read_consistency: Literal["ONE", "QUORUM", "ALL"] = Field(
        "QUORUM", description="Weaviate backend: replicas that must answer a read (see write consistency)."
    )

    # ---- HNSW parameters (both backends) ----------------------------------------------------------
    hnsw_max_connections: int = Field(32, ge=4, le=128, description="HNSW graph degree (M) for new indexes.")
    hnsw_ef_construction: int = Field(256, ge=16, le=2048, description="HNSW build-time candidate list size.")
    hnsw_ef_search: int = Field(
        256,
        ge=16,
        le=4096,
        description="HNSW query-time candidate list size floor; the search uses max(this, candidate window). "
        "256 gives recall@10 1.0 on embedding-like (clustered) vectors at 100k; iid random 256-d vectors "
        "need about 2048 for 0.98 (docs/SEARCH.md).",
    )
    hnsw_graph_dtype: Literal["i8", "f16", "f32"] = Field(
        "i8",
        description="Embedded backend: scalar type of the vectors inside the HNSW graph (a saved graph of "
        "another type is rebuilt at start); candidates are always re-scored with exact float32 cosine.",
    )
    exact_search_cutoff: int = Field(
        10_000,
        ge=0,
        description="Embedded backend: a filter matching at most this many assets is answered by exact "
        "(brute-force) vector search instead of the graph (like Weaviate's flatSearchCutoff).",
    )

    # ---- model -----------------------------------------------------------------------------------
    expected_model_name: str = Field(
        "",
        description="Model every stored vector must come from; empty = learned from the first write "
        "and stored with the collection.",
    )
    expected_model_version: str = Field("", description="Version of expected_model_name (empty = learned).")
    expected_dimension: int = Field(
        0, ge=0, le=65536, description="Vector dimension; 0 = learned from the first write."
    )

    # ---- cache -----------------------------------------------------------------------------------
    cache: Literal["memory", "redis", "none"] = Field(
        "memory",
        description="Result cache: memory (in-process LRU, single replica), redis (shared), or none.",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis cache: connection URL.")
    redis_timeout_s: float = Field(
        0.25, gt=0, description="Redis cache: per-command timeout; slower means the cache is bypassed."
    )
    redis_retry_after_s: float = Field(
        1.0,
        ge=0,
        description="Redis cache: after a failure, how long the cache stays bypassed before a retry.",
    )
    cache_ttl_s: int = Field(300, ge=1, description="Lifetime of a cached result, in seconds.")
    cache_max_entries: int = Field(10_000, ge=1, description="Memory cache: most entries kept (LRU).")
    cache_key_prefix: str = Field("imagesearch:search:", description="Prefix of every cache key.")
    model_state_ttl_s: float = Field(
        2.0,
        ge=0,
        description="How long a search replica reuses a tenant's model-version state for queries that "
        "name no version (another replica's activation or rollback is seen within it); writes, and a "
        "query about to be refused, read the state fresh.",
    )
    max_tenants_tracked: int = Field(
        1024, ge=1, description="Tenants whose model-version state is cached (least recently read dropped)."
    )

    # ---- query defaults (QueryRequest in search.proto) --------------------------------------------
    hybrid_alpha: float = Field(
        0.75,
        ge=0,
        le=1,
        description="Weight of the vector leg when a query gives both text and a vector but no alpha "
        "(the keyword leg gets 1 - alpha).",
    )
    hybrid_fusion: Literal["adaptive", "relative_score", "ranked"] = Field(
        "adaptive",
        description="How the keyword and vector legs are fused when a query names no fusion "
        "(search.proto, FusionType).",
    )
    adaptive_strength_exponent: float = Field(
        4.0,
        ge=1,
        le=16,
        description="Adaptive fusion: the keyword leg's weight is (1 - alpha) * strength ** this, strength "
        "being the best keyword candidate's share of the query's words (higher: partial matches count less).",
    )
    default_limit: int = Field(10, ge=1, description="Results returned when a query sets no limit.")

    # ---- limits ----------------------------------------------------------------------------------
    max_batch: int = Field(1000, ge=1, description="Most assets (or ids) in one upsert, delete or get.")
    max_limit: int = Field(MAX_QUERY_LIMIT, ge=1, description="Largest `limit` of a query.")
    max_offset: int = Field(10_000, ge=0, description="Largest `offset` of a query.")
    max_candidate_window: int = Field(
        MAX_QUERY_DEPTH,
        ge=100,
        description="Largest candidate window (candidates per leg); offset + limit must fit in it "
        "(Weaviate's QUERY_MAXIMUM_RESULTS defaults to 10000).",
    )
    max_query_chars: int = Field(2048, ge=1, description="Longest keyword query text.")
    max_filter_nodes: int = Field(
        MAX_FILTER_NODES, ge=1, description="Most nodes (conditions + operators) in one filter."
    )

    @model_validator(mode="after")
    def _model_pair(self) -> SearchSettings:
        if bool(self.expected_model_name) != bool(self.expected_model_version):
            raise ValueError("set both expected_model_name and expected_model_version, or neither")
        if self.default_limit > self.max_limit:
            raise ValueError(f"default_limit {self.default_limit} exceeds max_limit {self.max_limit}")
        return self
