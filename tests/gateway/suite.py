"""The whole suite as real processes (encoder, search, gateway) for end-to-end tests and benchmarks.

Two modes:
- "embedded": encoder on ONNX Runtime in-process, search on its embedded backend with the memory cache;
- "stack": encoder on Triton, search on Weaviate with the Redis cache (ports from a StackInfo).

Also the open-data sample used by the end-to-end tests: held-out items of the demo model's manifest
(models/demo/manifest.jsonl) read from the data cache that tools/models/fetch_data.py fills.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from imagesearch.v1 import gateway_pb2, gateway_pb2_grpc, search_pb2_grpc

from devstack.weaviate import weaviate_api_key
from tests.service_process import REPO_ROOT, ServiceProcess

DATA_CACHE = Path(os.environ.get("IMAGESEARCH_DATA_CACHE", Path.home() / ".cache/imagesearch/data"))
MANIFEST = REPO_ROOT / "models/demo/manifest.jsonl"
# The encoder reads IMAGESEARCH_ENCODER_MODEL_REPOSITORY (default triton_models/) from the environment.
MODEL_REPOSITORY = Path(os.environ.get("IMAGESEARCH_ENCODER_MODEL_REPOSITORY", REPO_ROOT / "triton_models"))
MODEL_FILES = [MODEL_REPOSITORY / "clip_image/1/model.onnx", MODEL_REPOSITORY / "clip_text/1/model.onnx"]

# Keyring of the end-to-end suite: two tenants, per-role keys.
ACME_LICENSES = ["MIT", "Apache-2.0", "GPL-2.0-only", "LicenseRef-PublicDomain", "CC0-1.0"]
KEYRING: dict[str, Any] = {
    "tenants": {
        "acme": {"safety_threshold": 0.5, "allowed_licenses": ACME_LICENSES},
        "globex": {"safety_threshold": 0.3},
    },
    "api_keys": {
        "acme-alice": {"tenant": "acme", "subject": "alice", "roles": ["search", "ingest", "delete"]},
        "acme-reader": {"tenant": "acme", "subject": "reader", "roles": ["search"]},
        "acme-ursula": {"tenant": "acme", "subject": "ursula", "roles": ["search", "unsafe-content"]},
        "globex-gus": {"tenant": "globex", "subject": "gus", "roles": ["admin"]},
    },
}
TOKEN_SECRET = "e2e-token-secret-0123456789abcdef0123"


def missing_prerequisites() -> str | None:
    """Why the end-to-end suite cannot run here (None when it can)."""
    absent = [str(p) for p in MODEL_FILES if not p.exists()]
    if absent:
        return f"demo model not built ({', '.join(absent)} missing; see tools/models/README.md)"
    if not MANIFEST.exists() or not DATA_CACHE.is_dir():
        return f"open-data sample not fetched ({DATA_CACHE}; run tools/models/fetch_data.py)"
    return None


@dataclass
class SampleItem:
    asset_id: str
    caption: str
    group: str
    source: str
    license: str
    path: Path

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()


def open_data_sample(groups: int = 12, extra: int = 12, seed: int = 7) -> list[SampleItem]:
    """Held-out items: `groups` concepts drawn in three emoji styles (fluent3d, google, openmoji), plus
    `extra` held-out Tux Paint / scikit-image / Open Clip Art items. Deterministic."""
    rows = [json.loads(line) for line in MANIFEST.read_text().splitlines() if line.strip()]
    held = [r for r in rows if r["split"] == "heldout" and (DATA_CACHE / r["path"]).is_file()]
    by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in held:
        by_group[r["group"]].append(r)
    styles = ("fluent3d", "google", "openmoji")
    rng = random.Random(seed)
    full = sorted(g for g, rs in by_group.items() if {s for s in styles} <= {r["source"] for r in rs})
    picked: list[dict[str, Any]] = []
    for g in rng.sample(full, min(groups, len(full))):
        for s in styles:
            picked.append(next(r for r in by_group[g] if r["source"] == s))
    others = sorted((r for r in held if r["source"] not in styles), key=lambda r: r["id"])
    picked += rng.sample(others, min(extra, len(others)))
    return [
        SampleItem(
            asset_id=r["id"].replace(":", "-"),
            caption=r["caption"],
            group=r["group"],
            source=r["source"],
            license=r["license"],
            path=DATA_CACHE / r["path"],
        )
        for r in picked
    ]


class Suite:
    """encoder + search + gateway processes. `stack` is a StackInfo for mode "stack"."""

    def __init__(
        self,
        mode: str,
        stack: Any = None,
        gateway_env: dict[str, str] | None = None,
        tls_dir: Path | None = None,
        replicas: int = 1,
        search_env: dict[str, str] | None = None,
        package: str = "demo",
    ) -> None:
        """`tls_dir`: a suite certificate directory; set, the internal hops run over mutual TLS.
        `replicas`: encoders and search services each (several search replicas need mode "stack": they
        share Weaviate); the gateway balances over them. `encoder`/`search` are the first replicas.
        `search_env`: settings of the search service over the mode's (e.g. another cache).
        `package`: the encoder's model package (the clip-art "demo" unless a test is about another)."""
        if replicas > 1 and mode != "stack":
            raise ValueError("search replicas share one index only on the stack (Weaviate)")
        self.replicas = replicas
        self.encoders: list[ServiceProcess] = []
        self.searches: list[ServiceProcess] = []
        self.mode = mode
        self.package = package
        self.search_env_over = search_env or {}
        self.tls_dir = tls_dir
        self.stack = stack
        self.tmp = Path(tempfile.mkdtemp(prefix="imagesearch-e2e-"))
        self.gateway_env = gateway_env or {}
        self.encoder: ServiceProcess | None = None
        self.search: ServiceProcess | None = None
        self.gateway: ServiceProcess | None = None
        self._channels: list[grpc.Channel] = []

    def encoder_env(self) -> dict[str, str]:
        # The end-to-end data is the clip-art sample (models/demo/manifest.jsonl) and the retrieval
        # assertions are about it: the clip-art package, trained on that domain, is pinned here.
        package = {"IMAGESEARCH_ENCODER_MODEL_PACKAGE": self.package}
        if self.mode == "stack":
            return {
                **package,
                "IMAGESEARCH_ENCODER_BACKEND": "triton",
                "IMAGESEARCH_TRITON_GRPC_URL": self.stack.triton_grpc_url,
            }
        return {**package, "IMAGESEARCH_ENCODER_BACKEND": "onnxruntime"}

    def search_env(self) -> dict[str, str]:
        return {**self._mode_search_env(), **self.search_env_over}

    def _mode_search_env(self) -> dict[str, str]:
        if self.mode == "stack":
            return {
                "IMAGESEARCH_SEARCH_BACKEND": "weaviate",
                "IMAGESEARCH_SEARCH_WEAVIATE_HOST": self.stack.host,
                "IMAGESEARCH_SEARCH_WEAVIATE_HTTP_PORT": str(self.stack.weaviate_http_port),
                "IMAGESEARCH_SEARCH_WEAVIATE_GRPC_PORT": str(self.stack.weaviate_grpc_port),
                "IMAGESEARCH_SEARCH_WEAVIATE_API_KEY": weaviate_api_key(),
                # a fresh collection per suite run, so earlier runs cannot satisfy the assertions
                "IMAGESEARCH_SEARCH_WEAVIATE_COLLECTION": f"E2e{os.getpid()}x{abs(hash(self.tmp)) % 10**6}",
                "IMAGESEARCH_SEARCH_CACHE": "redis",
                "IMAGESEARCH_SEARCH_REDIS_URL": self.stack.redis_url,
                "IMAGESEARCH_SEARCH_CACHE_KEY_PREFIX": f"e2e{os.getpid()}:{self.tmp.name}:",
            }
        return {
            "IMAGESEARCH_SEARCH_BACKEND": "embedded",
            "IMAGESEARCH_SEARCH_DATA_DIR": str(self.tmp / "search"),
            "IMAGESEARCH_SEARCH_CACHE": "memory",
        }

    def start(self) -> Suite:
        try:
            search_env = self.search_env()  # one collection for every replica
            for _ in range(self.replicas):
                self.encoders.append(
                    ServiceProcess("services.encoder", self.encoder_env(), tls_dir=self.tls_dir).start(
                        timeout_s=120
                    )
                )
                self.searches.append(
                    ServiceProcess("services.search", search_env, tls_dir=self.tls_dir).start(timeout_s=120)
                )
            self.encoder, self.search = self.encoders[0], self.searches[0]
            self.gateway = ServiceProcess(
                "services.gateway",
                {
                    "IMAGESEARCH_GATEWAY_ENCODER_ADDRESS": ",".join(p.address for p in self.encoders),
                    "IMAGESEARCH_GATEWAY_SEARCH_ADDRESS": ",".join(p.address for p in self.searches),
                    "IMAGESEARCH_GATEWAY_API_KEYS_JSON": json.dumps(KEYRING),
                    "IMAGESEARCH_GATEWAY_TOKEN_SECRET": TOKEN_SECRET,
                    "IMAGESEARCH_GATEWAY_BREAKER_RESET_S": "1.0",
                    "IMAGESEARCH_GATEWAY_LOG_LEVEL": "info",
                    "IMAGESEARCH_GATEWAY_DATA_DIR": str(self.tmp / "gateway"),
                    # The end-to-end tests search what they just ingested: analysed before the
                    # acknowledgement. Deferred analysis has its own (tests/gateway/test_deferred_e2e.py).
                    "IMAGESEARCH_GATEWAY_ANALYSIS_MODE": "inline",
                    **self.gateway_env,
                },
                tls_dir=self.tls_dir,
            ).start(timeout_s=120)
        except BaseException:
            self.stop()
            raise
        return self

    def restart_encoder(self) -> None:
        assert self.encoder is not None
        port = self.encoder.port
        self.encoder = ServiceProcess(
            "services.encoder",
            {**self.encoder_env(), "IMAGESEARCH_ENCODER_PORT": str(port)},
            tls_dir=self.tls_dir,
        )
        self.encoder.port = port
        if self.encoders:
            self.encoders[0] = self.encoder
        self.encoder.start(timeout_s=120)

    def restart_gateway(self, sig: int = signal.SIGTERM, env: dict[str, str] | None = None) -> None:
        """Stop the gateway (with `sig`: SIGKILL is a crash) and start it again with the same settings
        (and `env` over them), ports and data dir."""
        assert self.gateway is not None
        old = self.gateway
        old.stop(sig)
        fresh = ServiceProcess("services.gateway", {**old.env, **(env or {})}, tls_dir=self.tls_dir)
        fresh.port, fresh.metrics_port = old.port, old.metrics_port
        self.gateway = fresh.start(timeout_s=120)

    def restart_search(self) -> None:
        """Stop the search service and start a new process on the same port (same data and cache)."""
        assert self.search is not None
        port = self.search.port
        self.search.stop()
        self.search = ServiceProcess(
            "services.search",
            {**self.search_env(), "IMAGESEARCH_SEARCH_PORT": str(port)},
            tls_dir=self.tls_dir,
        )
        self.search.port = port
        if self.searches:
            self.searches[0] = self.search
        self.search.start(timeout_s=120)

    def channel(self, address: str, identity: str = "gateway") -> grpc.Channel:
        """A channel to one of the suite's processes; to an internal one under TLS, as `identity` (the
        tests inspect the search service as the gateway would)."""
        options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
        internal = self.gateway is None or address != self.gateway.address
        if self.tls_dir is not None and internal:
            from services.common.tls import CertFiles, client_credentials

            creds = client_credentials(CertFiles.in_dir(self.tls_dir, identity))
            ch = grpc.secure_channel(address, creds, options=options)
        else:
            ch = grpc.insecure_channel(address, options=options)
        self._channels.append(ch)
        return ch

    def gateway_stub(self) -> gateway_pb2_grpc.GatewayServiceStub:
        assert self.gateway is not None
        return gateway_pb2_grpc.GatewayServiceStub(self.channel(self.gateway.address))

    def ingest_all_created(
        self, requests: Iterable[gateway_pb2.IngestRequest], metadata: Sequence[tuple[str, str]]
    ) -> None:
        """Ingest `requests` through the gateway in one stream; every item must be CREATED."""
        acks = list(self.gateway_stub().Ingest(iter(requests), metadata=metadata, timeout=300))
        assert all(a.outcome == gateway_pb2.INGEST_OUTCOME_CREATED for a in acks), acks

    def search_stub(self) -> search_pb2_grpc.SearchServiceStub:
        assert self.search is not None
        return search_pb2_grpc.SearchServiceStub(self.channel(self.search.address))

    def stop(self) -> None:
        for ch in self._channels:
            ch.close()
        # The replicas and the current search/encoder: a restarted one (the chaos harness replaces
        # `search` or `encoder`) is not in the replica lists, and was left running.
        procs = [self.gateway, *self.searches, *self.encoders, self.search, self.encoder]
        stopped: set[int] = set()
        for proc in procs:
            if proc is not None and id(proc) not in stopped:
                stopped.add(id(proc))
                proc.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
