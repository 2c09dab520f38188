"""Prometheus metrics of the search service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.common.metrics import LATENCY_BUCKETS

# Finer buckets at the low end: a cache hit is answered in tens of microseconds.
CACHE_BUCKETS = (0.00005, 0.0001, 0.00025, *LATENCY_BUCKETS)

CACHE_REQUESTS = Counter(
    "search_cache_requests_total",
    "Result-cache lookups by outcome: hit, miss, bypass (skip_cache or cache unavailable), error.",
    ["cache", "result"],
)
CACHE_LATENCY = Histogram(
    "search_cache_operation_seconds",
    "Latency of result-cache operations (get, set, bump).",
    ["cache", "op"],
    buckets=CACHE_BUCKETS,
)
CACHE_COALESCED = Counter(
    "search_cache_coalesced_total", "Queries answered by waiting on an identical in-flight query."
)
CACHE_AVAILABLE = Gauge(
    "search_cache_available", "1 when the result cache answers, 0 while it is bypassed.", ["cache"]
)
QUERY_LATENCY = Histogram(
    "search_query_seconds",
    "Query latency inside the service, by backend and whether the cache answered.",
    ["backend", "cached"],
    buckets=CACHE_BUCKETS,
)
BACKEND_LATENCY = Histogram(
    "search_backend_seconds", "Latency of index backend calls.", ["backend", "op"], buckets=LATENCY_BUCKETS
)
ITEMS_WRITTEN = Counter("search_items_total", "Upserted/deleted items by outcome.", ["op", "outcome"])
