"""`python -m services.suite` (what `make run` starts): the whole suite on one machine.

Runs the encoder (ONNX Runtime in-process), the search service (embedded index, in-process cache)
and the gateway as three processes, exactly as they run in production, wired to each other on
loopback, and the web console (HTTP, default http://127.0.0.1:8080) in front of the gateway. Nothing
else needs to be installed. Environment variables already set (any IMAGESEARCH_* setting) win over
these defaults, so the same launcher can point at a real stack.
Ctrl-C (or SIGTERM) stops them all gracefully.

The internal hops (gateway -> encoder, gateway -> search) run over mutual TLS with certificates made
once under IMAGESEARCH_SUITE_TLS_DIR (default .data/certs; docs/SECURITY.md); set it empty for
plaintext. The gateway's public port stays plaintext unless IMAGESEARCH_GATEWAY_PUBLIC_TLS_* are set.

Replicas: IMAGESEARCH_SUITE_ENCODER_REPLICAS / IMAGESEARCH_SUITE_SEARCH_REPLICAS (default 1) start that
many encoders / search services, replica i on the first one's ports + 100 * i, and the gateway balances
over them (services/common/balancing.py). Search replicas share one index only on a shared backend:
more than one needs IMAGESEARCH_SEARCH_BACKEND=weaviate.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import certs
from services.common.tls import CertFiles, client_credentials
from services.console.settings import ConsoleSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = os.environ.get("IMAGESEARCH_SUITE_HOST", "127.0.0.1")
TLS_DIR = os.environ.get("IMAGESEARCH_SUITE_TLS_DIR", str(REPO_ROOT / ".data" / "certs"))

# name -> (module, gRPC port, metrics port)
SERVICES = {
    "encoder": ("services.encoder", 50071, 9471),
    "search": ("services.search", 50072, 9472),
    "gateway": ("services.gateway", 50070, 9470),
}
REPLICA_PORT_STEP = 100  # replica i listens on the first replica's ports + 100 * i


def _replicas(name: str) -> int:
    if name == "gateway":
        return 1
    count = int(os.environ.get(f"IMAGESEARCH_SUITE_{name.upper()}_REPLICAS", "1"))
    if count < 1:
        raise SystemExit(f"IMAGESEARCH_SUITE_{name.upper()}_REPLICAS must be >= 1, got {count}")
    if name == "search" and count > 1 and os.environ.get("IMAGESEARCH_SEARCH_BACKEND") != "weaviate":
        raise SystemExit(
            "search replicas share one index only on Weaviate: set IMAGESEARCH_SEARCH_BACKEND=weaviate "
            "(and its WEAVIATE_* settings) or IMAGESEARCH_SUITE_SEARCH_REPLICAS=1"
        )
    return count


def _replica_ports(name: str, replica: int) -> tuple[int, int]:
    """(gRPC port, metrics port) of one replica; a metrics port of 0 (pick a free one) stays 0."""
    _, port, metrics = SERVICES[name]
    prefix = f"IMAGESEARCH_{name.upper()}_"
    port = int(os.environ.get(f"{prefix}PORT", port))
    metrics = int(os.environ.get(f"{prefix}METRICS_PORT", metrics))
    step = REPLICA_PORT_STEP * replica
    return port + step, metrics + step if metrics else 0


def _addresses(name: str) -> str:
    """The gateway's address setting for a service: one host:port, or the replicas' list."""
    return ",".join(f"{HOST}:{_replica_ports(name, i)[0]}" for i in range(_replicas(name)))


def _env_for(name: str, replica: int = 0) -> dict[str, str]:
    port, metrics = _replica_ports(name, replica)
    prefix = f"IMAGESEARCH_{name.upper()}_"
    defaults = {
        f"{prefix}HOST": HOST,
        f"{prefix}PORT": str(port),
        f"{prefix}METRICS_PORT": str(metrics),
        f"{prefix}LOG_FORMAT": "console",
    }
    if TLS_DIR:
        defaults[f"{prefix}TLS_DIR"] = TLS_DIR
    if name == "search":
        defaults[f"{prefix}DATA_DIR"] = str(REPO_ROOT / ".data" / "search")
    if name == "gateway":
        defaults[f"{prefix}DATA_DIR"] = str(REPO_ROOT / ".data" / "gateway")
        defaults[f"{prefix}ENCODER_ADDRESS"] = _addresses("encoder")
        defaults[f"{prefix}SEARCH_ADDRESS"] = _addresses("search")
        defaults[f"{prefix}BLOB_DIR"] = str(REPO_ROOT / ".data" / "blobs")
        if not os.environ.get(f"{prefix}API_KEYS_JSON"):  # demo keyring unless keys are configured
            defaults[f"{prefix}API_KEYS_FILE"] = str(REPO_ROOT / "services" / "gateway" / "demo_keys.json")
    # Settings already in the environment win, except each replica's own ports.
    return {**defaults, **os.environ, f"{prefix}PORT": str(port), f"{prefix}METRICS_PORT": str(metrics)}


def _console_env(gateway_address: str) -> dict[str, str]:
    """The console listens where its own settings say (IMAGESEARCH_CONSOLE_LISTEN_ADDRESS)."""
    defaults = {
        "IMAGESEARCH_CONSOLE_GATEWAY_ADDRESS": gateway_address,
        "IMAGESEARCH_CONSOLE_LOG_FORMAT": "console",
    }
    return {**defaults, **os.environ}


def _wait_http(name: str, url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with code {proc.returncode} during startup")
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"{name} did not become ready within {timeout_s:.0f}s")


def _port(name: str, env: dict[str, str]) -> str:
    return env[f"IMAGESEARCH_{name.upper()}_PORT"]


def _health_channel(name: str, address: str, env: dict[str, str]) -> grpc.Channel:
    """Health is open to any suite identity: the launcher asks as `operator`."""
    tls_dir = env.get(f"IMAGESEARCH_{name.upper()}_TLS_DIR")
    if name == "gateway" or not tls_dir:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, client_credentials(CertFiles.in_dir(Path(tls_dir), "operator")))


def _wait_serving(
    name: str,
    address: str,
    proc: subprocess.Popen[bytes],
    env: dict[str, str],
    timeout_s: float = 120,
    label: str = "",
) -> None:
    label = label or name
    deadline = time.monotonic() + timeout_s
    with _health_channel(name, address, env) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{label} exited with code {proc.returncode} during startup")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise SystemExit(f"{label} did not become ready within {timeout_s:.0f}s")


def main() -> int:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop_all(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    try:
        if TLS_DIR:
            issued = certs.init(Path(TLS_DIR))  # once: valid certificates are kept
            print(
                f"suite: internal hops over mutual TLS, certificates in {TLS_DIR}"
                + (f" (issued {', '.join(issued)})" if issued else ""),
                flush=True,
            )
        for name in ("encoder", "search", "gateway"):  # the gateway needs the other two
            count = _replicas(name)
            for replica in range(count):
                label = name if count == 1 else f"{name}-{replica + 1}"
                env = _env_for(name, replica)
                module = SERVICES[name][0]
                procs[label] = subprocess.Popen([sys.executable, "-m", module], cwd=REPO_ROOT, env=env)
                _wait_serving(name, f"{HOST}:{_port(name, env)}", procs[label], env, label=label)
                print(f"suite: {label} ready on {HOST}:{_port(name, env)}", flush=True)
        gateway = f"{HOST}:{_port('gateway', _env_for('gateway'))}"
        console_env = _console_env(gateway)
        console_url = f"http://{ConsoleSettings().listen_address}"
        procs["console"] = subprocess.Popen(
            [sys.executable, "-m", "services.console"], cwd=REPO_ROOT, env=console_env
        )
        _wait_http("console", f"{console_url}/healthz", procs["console"])
        print(f"suite: console ready on {console_url}", flush=True)
        print(
            f"suite: ready. Gateway on {gateway}; demo API key `demo-key` (tenant demo: search, ingest,\n"
            "delete; services/gateway/demo_keys.json). Try:\n"
            f"  open {console_url} and sign in with demo-key\n"
            "  .venv/bin/imagesearch ingest DIR\n"
            '  .venv/bin/imagesearch search "a red car"\n'
            "Ctrl-C stops the suite.",
            flush=True,
        )
        while not stopping:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(f"suite: {name} exited with code {proc.returncode}; stopping", flush=True)
                    stopping = True
            time.sleep(0.5)
    finally:
        for proc in reversed(list(procs.values())):  # console, then gateway: each depends on the ones before
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return max((p.returncode or 0 for p in procs.values()), default=0)


if __name__ == "__main__":
    sys.exit(main())
