"""A Weaviate cluster of N nodes on loopback (default 3), for the cluster tests and benchmarks.

    with WeaviateCluster(tmp_dir) as cluster:          # starts every node, waits until all are ready
        env = cluster.service_env()                      # the search service's settings (node 0)
        cluster.kill(2)                                  # kill -9 of one node
        cluster.restart(2)                               # same ports and data: it rejoins

Each node has its own data directory and ports; they form one Raft cluster (RAFT_BOOTSTRAP_EXPECT = N,
RAFT_JOIN lists every node) and one gossip ring (nodes 1.. join node 0). The processes are this object's
own, started by it and stopped on exit: unlike the shared stack (devstack up) nothing is reused or
left running. The binary is the pinned one `devstack prepare` builds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from devstack.common import HOST, StackError, tail
from devstack.ports import PortPicker
from devstack.probes import http_status, tcp_open
from devstack.weaviate import api_key_env, ensure_weaviate_server, weaviate_api_key


@dataclass(frozen=True)
class NodePorts:
    http: int
    grpc: int
    gossip: int  # CLUSTER_DATA_BIND_PORT is gossip + 1
    raft: int  # RAFT_INTERNAL_RPC_PORT is raft + 1 (required with CLUSTER_IN_LOCALHOST)


class WeaviateCluster:
    ready_timeout_s = 180.0
    stop_grace_s = 30.0

    def __init__(self, data_dir: Path, nodes: int = 3) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.data_dir = data_dir
        self.size = nodes
        self.binary = ensure_weaviate_server()
        picker = PortPicker()
        self.ports = [
            NodePorts(http=picker.one(), grpc=picker.one(), gossip=picker.pair(), raft=picker.pair())
            for _ in range(nodes)
        ]
        picker.release()
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * nodes

    # ---- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> WeaviateCluster:
        """Start every node at once (Raft bootstraps only when all expected voters are up), then wait."""
        try:
            for node in range(self.size):
                self._launch(node)
            for node in range(self.size):
                self.wait_ready(node)
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self, node: int) -> None:
        """kill -9 of one node."""
        proc = self._procs[node]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    def restart(self, node: int) -> None:
        """Start a stopped node again on its ports and data, and wait until it is ready."""
        self.kill(node)
        self._launch(node, rejoin=True)
        self.wait_ready(node)

    def stop(self) -> None:
        for proc in self._procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for node, proc in enumerate(self._procs):
            if proc is None:
                continue
            try:
                proc.wait(self.stop_grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self._procs[node] = None

    def __enter__(self) -> WeaviateCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- state -------------------------------------------------------------------------------------

    def node_name(self, node: int) -> str:
        return f"node{node}"

    def health(self, node: int) -> str | None:
        """None when the node is ready, else a short reason."""
        proc = self._procs[node]
        if proc is None or proc.poll() is not None:
            return "not running"
        ports = self.ports[node]
        code = http_status(f"http://{HOST}:{ports.http}/v1/.well-known/ready")
        if code != 200:
            return f"/v1/.well-known/ready -> {code}"
        return None if tcp_open(ports.grpc) else f"gRPC port {ports.grpc} closed"

    def wait_ready(self, node: int) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while (why := self.health(node)) is not None:
            proc = self._procs[node]
            if proc is None or proc.poll() is not None:
                raise StackError(f"weaviate {self.node_name(node)} exited:\n{tail(self.log_path(node))}")
            if time.monotonic() > deadline:
                raise StackError(
                    f"weaviate {self.node_name(node)} not ready in {self.ready_timeout_s:.0f}s ({why}):\n"
                    f"{tail(self.log_path(node))}"
                )
            time.sleep(0.25)

    def log_path(self, node: int) -> Path:
        return self.data_dir / f"{self.node_name(node)}.log"

    def service_env(self, node: int = 0) -> dict[str, str]:
        """Settings that point the search service at one node (it reaches the others through it)."""
        ports = self.ports[node]
        return {
            "IMAGESEARCH_SEARCH_BACKEND": "weaviate",
            "IMAGESEARCH_SEARCH_WEAVIATE_HOST": HOST,
            "IMAGESEARCH_SEARCH_WEAVIATE_HTTP_PORT": str(ports.http),
            "IMAGESEARCH_SEARCH_WEAVIATE_GRPC_PORT": str(ports.grpc),
            "IMAGESEARCH_SEARCH_WEAVIATE_API_KEY": weaviate_api_key(),
        }

    # ---- one node ----------------------------------------------------------------------------------

    def _launch(self, node: int, rejoin: bool = False) -> None:
        ports = self.ports[node]
        data = self.data_dir / self.node_name(node)
        data.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            PERSISTENCE_DATA_PATH=str(data),
            **api_key_env(),
            DEFAULT_VECTORIZER_MODULE="none",
            API_BASED_MODULES_DISABLED="true",
            DISABLE_TELEMETRY="true",
            CLUSTER_HOSTNAME=self.node_name(node),
            CLUSTER_IN_LOCALHOST="true",
            CLUSTER_BIND_ADDR=HOST,
            CLUSTER_ADVERTISE_ADDR=HOST,
            CLUSTER_GOSSIP_BIND_PORT=str(ports.gossip),
            CLUSTER_DATA_BIND_PORT=str(ports.gossip + 1),
            RAFT_PORT=str(ports.raft),
            RAFT_INTERNAL_RPC_PORT=str(ports.raft + 1),
            RAFT_JOIN=",".join(f"{self.node_name(n)}:{p.raft}" for n, p in enumerate(self.ports)),
            RAFT_BOOTSTRAP_EXPECT=str(self.size),
            GRPC_PORT=str(ports.grpc),
            GO_PROFILING_DISABLE="true",  # else the nodes clash on the profiling port
            DISK_USE_READONLY_PERCENTAGE="0",
            GOMEMLIMIT=os.environ.get("IMAGESEARCH_WEAVIATE_GOMEMLIMIT", "1GiB"),
        )
        # The gossip ring: node 0 founds it, the others join it; a restarted node joins any other node.
        seed = next((n for n in range(self.size) if n != node), node) if rejoin else 0
        if seed != node:
            env["CLUSTER_JOIN"] = f"{HOST}:{self.ports[seed].gossip}"
        argv = [str(self.binary), "--scheme", "http", "--host", HOST, "--port", str(ports.http)]
        log = self.log_path(node).open("ab")
        self._procs[node] = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
