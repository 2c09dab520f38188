"""Embedded index backend: in-process, persistent, no server to run.

Built from three well-kept libraries, each doing what it is best at:
- SQLite (stdlib) holds the records (metadata JSON + vector) and is the source of truth: a batch is
  acknowledged only after its SQLite transaction committed, and a failed item is never in it.
- usearch: the HNSW graph (cosine, M / efConstruction / ef from settings) for the vector leg. Scales past
  1M vectors on one machine; saved on shutdown, rebuilt from SQLite when its snapshot is stale.
- tantivy: the inverted index and BM25 (k1 = 1.2, b = 0.75) for the keyword leg, one field per keyword
  property, with per-property boosts; rebuilt from SQLite when behind.
Filters are evaluated in memory on numpy columns (a boolean mask over slots), and both legs are
pre-filtered with that mask, as in Weaviate: the vector leg searches exactly over the allowed assets when
they are few (<= exact_search_cutoff, like Weaviate's flatSearchCutoff) and otherwise searches the graph
with over-fetching until it has enough allowed candidates; the keyword leg restricts tantivy to the
allowed slots when they are few and over-fetches otherwise. The legs are fused with Weaviate's rules
(services.search.fusion), so the two backends rank alike (see the parity test).

Tenancy mirrors Weaviate's native multi-tenancy: each tenant has its own directory, SQLite file, graph
and inverted index (its own BM25 statistics, as Weaviate's per-tenant shards have), so no query can
reach another tenant's data.

Why not LanceDB: measured slower per leg, with new rows unindexed until an optimize() pass
(docs/SEARCH.md, "Embedded backend: why usearch + tantivy").

Every write gets fresh internal slots (a monotonically increasing integer key shared by SQLite, usearch
and tantivy); the previous version of a replaced asset is retired only after the new one is in every
index, so a concurrent query sees the old or the new version, never neither.

Modules: columns.py (filter columns and token statistics), tenant.py (one tenant's persistence: SQLite,
graph and inverted index files, writes), ranking.py (the vector and keyword legs), backend.py (the
SearchBackend adapter over the tenants).
"""

from services.search.backends.embedded.backend import EmbeddedBackend
from services.search.backends.embedded.columns import tokenize
from services.search.backends.embedded.tenant import HnswParams

__all__ = ["EmbeddedBackend", "HnswParams", "tokenize"]
