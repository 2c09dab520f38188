"""Index backends behind one Protocol; settings pick the adapter, nothing else branches on it."""

from __future__ import annotations

from services.search.backends.base import SearchBackend
from services.search.domain import ModelRef
from services.search.settings import SearchSettings


def make_backend(settings: SearchSettings) -> SearchBackend:
    model = (
        ModelRef(settings.expected_model_name, settings.expected_model_version)
        if settings.expected_model_name
        else None
    )
    if settings.backend == "weaviate":
        from services.search.backends.weaviate import Replication, WeaviateBackend

        return WeaviateBackend(
            host=settings.weaviate_host,
            http_port=settings.weaviate_http_port,
            grpc_port=settings.weaviate_grpc_port,
            collection=settings.weaviate_collection,
            timeout_s=settings.weaviate_timeout_s,
            write_timeout_s=settings.weaviate_write_timeout_s,
            hnsw={
                "max_connections": settings.hnsw_max_connections,
                "ef_construction": settings.hnsw_ef_construction,
                "ef": settings.hnsw_ef_search,
            },
            expected_model=model,
            expected_dimension=settings.expected_dimension,
            replication=Replication(
                factor=settings.weaviate_replication_factor,
                async_enabled=settings.weaviate_async_replication,
                write_consistency=settings.weaviate_write_consistency,
                read_consistency=settings.weaviate_read_consistency,
                async_frequency_s=settings.weaviate_async_replication_frequency_s,
                async_delay_s=settings.weaviate_async_replication_delay_s,
            ),
            api_key=weaviate_api_key(settings),
        )
    from services.search.backends.embedded import EmbeddedBackend, HnswParams

    return EmbeddedBackend(
        settings.data_dir,
        HnswParams(
            connectivity=settings.hnsw_max_connections,
            ef_construction=settings.hnsw_ef_construction,
            ef_search=settings.hnsw_ef_search,
            exact_cutoff=settings.exact_search_cutoff,
            graph_dtype=settings.hnsw_graph_dtype,
        ),
        expected_model=model,
        expected_dimension=settings.expected_dimension,
    )


def weaviate_api_key(settings: SearchSettings) -> str | None:
    return settings.weaviate_api_key.get_secret_value() if settings.weaviate_api_key else None


__all__ = ["SearchBackend", "make_backend", "weaviate_api_key"]
