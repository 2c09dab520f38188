"""Prometheus metrics shared by all services (names follow go-grpc-prometheus conventions)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

# Buckets from 0.5 ms to 10 s: cache hits sit under a millisecond, encoder batches take seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

GRPC_STARTED = Counter(
    "grpc_server_started_total", "RPCs started on the server.", ["grpc_service", "grpc_method"]
)
GRPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_LATENCY = Histogram(
    "grpc_server_handling_seconds",
    "Time from receiving an RPC to completing it.",
    ["grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS,
)
BACKEND_READY = Counter(
    "backend_readiness_changes_total", "Transitions of a backend's readiness.", ["backend", "ready"]
)


def start_metrics_server(host: str, port: int) -> int:
    """Serve /metrics on a background thread; returns the bound port (port 0 picks a free one)."""
    httpd, _thread = start_http_server(port, addr=host)
    return int(httpd.server_port)
