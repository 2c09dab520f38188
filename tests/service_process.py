"""Run an imagesearch service as a real subprocess for tests and benchmarks.

    with ServiceProcess("services.search", env={...}) as svc:
        channel = grpc.insecure_channel(svc.address)

    with ServiceProcess("services.search", tls_dir=certs) as svc:   # mutual TLS (certs: a suite cert dir)
        channel = svc.channel("gateway")                              # presents gateway.crt

The service gets a free loopback port through its own settings (IMAGESEARCH_<NAME>_PORT), logs to a
file that is shown when startup fails, and is stopped with SIGTERM (graceful drain) on exit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServiceProcess:
    """One service process. `module` is e.g. "services.encoder"; its env prefix is derived from it."""

    def __init__(
        self,
        module: str,
        env: dict[str, str] | None = None,
        wait_serving: bool = True,
        tls_dir: Path | None = None,
        source_tree: Path | None = None,
    ) -> None:
        """`source_tree`: run another checkout's code (a benchmark's baseline), default this one."""
        self.module = module
        self.source_tree = source_tree or REPO_ROOT
        self.tls_dir = tls_dir
        self.name = module.rsplit(".", 1)[-1]
        self.prefix = f"IMAGESEARCH_{self.name.upper()}_"
        self.port = free_port()
        self.metrics_port = free_port()
        self.wait_serving = wait_serving
        self.env = {
            **os.environ,
            f"{self.prefix}PORT": str(self.port),
            f"{self.prefix}METRICS_PORT": str(self.metrics_port),
            f"{self.prefix}LOG_LEVEL": "debug",
            **({f"{self.prefix}TLS_DIR": str(tls_dir)} if tls_dir is not None else {}),
            **(env or {}),
        }
        if self.name == "gateway":  # its local object store in a directory of its own, not the clone's
            self.env.setdefault(f"{self.prefix}BLOB_DIR", tempfile.mkdtemp(prefix="gateway-blobs-"))
        self.log_path = Path(tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(self, identity: str = "operator") -> grpc.Channel:
        """A channel to this service: plaintext, or presenting `identity`'s suite certificate when the
        service runs with TLS (a gateway's public port: plaintext, or one-way TLS when configured)."""
        if self.tls_dir is None:
            return grpc.insecure_channel(self.address)
        from services.common.tls import CertFiles, client_credentials

        if self.name == "gateway":  # one-way TLS when its public certificate (from the suite CA) is set
            if not self.env.get(f"{self.prefix}PUBLIC_TLS_CERT_FILE"):
                return grpc.insecure_channel(self.address)
            ca = (self.tls_dir / "ca.crt").read_bytes()
            return grpc.secure_channel(self.address, grpc.ssl_channel_credentials(root_certificates=ca))
        return grpc.secure_channel(self.address, client_credentials(CertFiles.in_dir(self.tls_dir, identity)))

    def start(self, timeout_s: float = 60.0) -> ServiceProcess:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module], cwd=self.source_tree, env=self.env, stdout=log, stderr=log
        )
        try:
            self._wait_ready(timeout_s)
        except BaseException:  # not ready (or the test was interrupted): nothing is left running
            self.stop(signal.SIGKILL, timeout_s=10)
            raise
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self.channel() as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.module} exited with {self.proc.returncode}:\n{self.logs()}")
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status
                except grpc.RpcError:
                    time.sleep(0.1)
                    continue
                if status == health_pb2.HealthCheckResponse.SERVING or not self.wait_serving:
                    return
                time.sleep(0.1)
        raise TimeoutError(f"{self.module} not ready within {timeout_s}s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        """Signal the process and wait; returns its exit code (kills it if it does not exit)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def __enter__(self) -> ServiceProcess:
        # `with proc.start(...)`: already running; starting again would orphan the first process.
        if self.proc is not None and self.proc.poll() is None:
            return self
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
