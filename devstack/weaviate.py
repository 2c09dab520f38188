"""Weaviate: the pinned weaviate-server, built from source once, one node on loopback."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devstack.common import HOST, cache_dir
from devstack.component import Component, Launch
from devstack.gobuild import ensure_go_binary
from devstack.ports import PortPicker
from devstack.probes import http_status, tcp_open
from devstack.versions import WEAVIATE_MODULE, WEAVIATE_VERSION


def weaviate_binary() -> Path:
    return cache_dir() / f"weaviate-{WEAVIATE_VERSION}" / "weaviate-server"


def ensure_weaviate_server() -> Path:
    """The pinned weaviate-server binary, built with the Go module proxy when it is not cached.

    No registry ships a Weaviate binary; v1.39.0 is pure Go (CGO_ENABLED=0) and its go.mod has no replace
    directives, so `go install module@version` builds it (cold: several minutes to tens of minutes and
    gigabytes of module cache, hence the cache and the lock).
    """
    return ensure_go_binary(
        WEAVIATE_MODULE, WEAVIATE_VERSION, weaviate_binary(), "Weaviate", "about 6-25 min"
    )


class Weaviate(Component):
    name = "weaviate"
    port_names = ("http", "grpc", "metrics", "gossip", "data", "raft", "raft_rpc")
    # It bootstraps its one-node Raft cluster before it reports ready.
    ready_timeout_s = 180.0
    stop_grace_s = 30.0

    def prepare(self) -> None:
        ensure_weaviate_server()

    def config(self) -> dict[str, Any]:
        return {"binary": str(weaviate_binary()), "version": WEAVIATE_VERSION}

    def pick_ports(self, picker: PortPicker, previous: Mapping[str, int]) -> dict[str, int]:
        ports = {
            name: picker.one(prefer=previous.get(name))
            for name in ("http", "grpc", "metrics", "gossip", "data")
        }
        # With CLUSTER_IN_LOCALHOST the internal Raft RPC port must be RAFT_PORT+1.
        ports["raft"] = picker.pair(prefer=previous.get("raft"))
        ports["raft_rpc"] = ports["raft"] + 1
        return ports

    def command(self, ports: Mapping[str, int], data_dir: Path, run_id: str) -> Launch:
        # Explicit addresses: this network's interface address confuses Weaviate's detection.
        # Caveat: Weaviate 1.39 listens on ":<port>" (all interfaces) for its gRPC API, the cluster data
        # port and the metrics port, with no setting to change it; REST, gossip and Raft honour 127.0.0.1.
        env = dict(os.environ)
        env.update(
            PERSISTENCE_DATA_PATH=str(data_dir),
            AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED="true",
            DEFAULT_VECTORIZER_MODULE="none",
            API_BASED_MODULES_DISABLED="true",
            DISABLE_TELEMETRY="true",
            CLUSTER_HOSTNAME="node1",
            CLUSTER_IN_LOCALHOST="true",
            CLUSTER_BIND_ADDR=HOST,
            CLUSTER_ADVERTISE_ADDR=HOST,
            CLUSTER_GOSSIP_BIND_PORT=str(ports["gossip"]),
            CLUSTER_DATA_BIND_PORT=str(ports["data"]),
            RAFT_PORT=str(ports["raft"]),
            RAFT_INTERNAL_RPC_PORT=str(ports["raft_rpc"]),
            RAFT_JOIN=f"node1:{ports['raft']}",
            RAFT_BOOTSTRAP_EXPECT="1",
            # Weaviate multiplies Raft's 1 s heartbeat/election timeouts by 5 by default (for busy
            # multi-node networks): a one-node loopback cluster then idles 5 s before electing itself.
            RAFT_TIMEOUTS_MULTIPLIER="1",
            GRPC_PORT=str(ports["grpc"]),
            PROMETHEUS_MONITORING_ENABLED="true",
            PROMETHEUS_MONITORING_PORT=str(ports["metrics"]),
            GO_PROFILING_DISABLE="true",
            DISK_USE_READONLY_PERCENTAGE="0",
            GOMEMLIMIT=os.environ.get("IMAGESEARCH_WEAVIATE_GOMEMLIMIT", "4GiB"),
        )
        argv = [str(weaviate_binary()), "--scheme", "http", "--host", HOST, "--port", str(ports["http"])]
        return Launch(argv, env)

    def health(self, ports: Mapping[str, int], config: Mapping[str, Any]) -> str | None:
        code = http_status(f"http://{HOST}:{ports['http']}/v1/.well-known/ready")
        if code != 200:
            return f"/v1/.well-known/ready -> {code}"
        return None if tcp_open(ports["grpc"]) else f"gRPC port {ports['grpc']} closed"

    def service_env(self, host: str, ports: Mapping[str, int]) -> dict[str, str]:
        return {
            "IMAGESEARCH_SEARCH_BACKEND": "weaviate",
            "IMAGESEARCH_SEARCH_WEAVIATE_HOST": host,
            "IMAGESEARCH_SEARCH_WEAVIATE_HTTP_PORT": str(ports["http"]),
            "IMAGESEARCH_SEARCH_WEAVIATE_GRPC_PORT": str(ports["grpc"]),
        }
