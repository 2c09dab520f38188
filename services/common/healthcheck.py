"""`python -m services.common.healthcheck PORT [SERVICE] [--tls-dir DIR]`: exit 0 when the gRPC health
service on 127.0.0.1:PORT reports SERVING. Used by container health checks (no extra probe binary
needed). With --tls-dir (a suite certificate directory) it asks over mutual TLS as `operator`, the
identity any internal service lets read its health."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.tls import CertFiles, client_credentials


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.common.healthcheck")
    parser.add_argument("port")
    parser.add_argument("service", nargs="?", default="")
    parser.add_argument("--tls-dir", type=Path)
    args = parser.parse_args(argv[1:])
    address = f"127.0.0.1:{args.port}"
    channel = (
        grpc.insecure_channel(address)
        if args.tls_dir is None
        else grpc.secure_channel(address, client_credentials(CertFiles.in_dir(args.tls_dir, "operator")))
    )
    try:
        with channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=3
            )
    except grpc.RpcError as exc:
        print(f"unhealthy: {exc.code().name}", file=sys.stderr)
        return 1
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
