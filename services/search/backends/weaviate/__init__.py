"""Weaviate index backend (weaviate-client v4, async, gRPC for data and queries).

Tenant isolation: Weaviate's native multi-tenancy. Each tenant is its own shard (its own HNSW graph,
inverted index and BM25 statistics), every data call is bound to one tenant with `with_tenant()`, and a
query cannot name two tenants, so cross-tenant leakage is structurally impossible (a forgotten filter
cannot leak); it also makes deleting or offloading a tenant cheap. A mandatory tenant filter would
share one graph and BM25 statistics across tenants (scores would depend on other tenants' data) and
rely on every code path adding the filter. Tenants are created by their first upsert; any other call
on a tenant Weaviate does not know is NotFound.

The collection's embedding model and dimension live in the collection description (JSON), written by
the first upsert (or from settings), so every replica rejects vectors from another model.

Object ids are UUIDv5 of "<tenant>/<asset_id>" (tenant names cannot contain '/'), so an upsert of the
same asset always addresses the same object: batch writes replace it (idempotent).

Modules: schema.py (the collection's properties and the asset <-> object mapping), query.py (filters,
hybrid and one-leg queries, score explanations), backend.py (the SearchBackend adapter: lifecycle,
tenants, writes, reads).
"""

from services.search.backends.weaviate.backend import Replication, WeaviateBackend
from services.search.backends.weaviate.schema import VECTOR_NAME, object_uuid

__all__ = ["VECTOR_NAME", "Replication", "WeaviateBackend", "object_uuid"]
