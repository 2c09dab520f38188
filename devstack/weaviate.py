"""Weaviate: the pinned weaviate-server, built from source once, one node on loopback."""

from __future__ import annotations

import os
import secrets
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


WEAVIATE_USER = "imagesearch"


def weaviate_api_key() -> str:
    """The local stack's Weaviate API key: random, made once per machine user and kept (mode 0600) in
    the cache. Weaviate 1.39 serves gRPC on every interface (see `Weaviate.command`), so the stack's
    Weaviate takes no anonymous call."""
    path = cache_dir() / "weaviate-api-key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under a private name, then linked into place: a concurrent reader never sees a
        # partial key, and of two processes making one, the first link wins.
        draft = path.with_name(f".weaviate-api-key.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


def api_key_env() -> dict[str, str]:
    """Weaviate's settings for API-key authentication with the stack's key, anonymous access off."""
    return {
        "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "false",
        "AUTHENTICATION_APIKEY_ENABLED": "true",
        "AUTHENTICATION_APIKEY_ALLOWED_KEYS": weaviate_api_key(),
        "AUTHENTICATION_APIKEY_USERS": WEAVIATE_USER,
    }


def auth_headers() -> dict[str, str]:
    """For a REST call to the stack's Weaviate (tests and benches reading /v1/nodes, /v1/meta...)."""
    return {"Authorization": f"Bearer {weaviate_api_key()}"}


class Weaviate(Component):
    name = "weaviate"
    port_names = ("http", "grpc", "metrics", "gossip", "data", "raft", "raft_rpc")
    # It bootstraps its one-node Raft cluster before it reports ready.
    ready_timeout_s = 180.0
    stop_grace_s = 30.0

    def prepare(self) -> None:
        ensure_weaviate_server()

    def config(self) -> dict[str, Any]:
        # "auth" is recorded so that a Weaviate an older checkout started with anonymous access is
        # restarted rather than reused.
        return {"binary": str(weaviate_binary()), "version": WEAVIATE_VERSION, "auth": "apikey"}

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
            **api_key_env(),
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
            "IMAGESEARCH_SEARCH_WEAVIATE_API_KEY": weaviate_api_key(),
        }
