"""MinIO: the S3-compatible object store for originals and thumbnails, one server on loopback.

Optional: not in the default stack (the gateway's embedded default is a local directory). Tests that
need it start it with ``Stack(root).up(only=["minio"])`` (the ``object_store`` fixture);
``python -m devstack up --only minio`` starts it beside a running stack.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devstack.common import HOST, cache_dir
from devstack.component import Component, Launch
from devstack.gobuild import ensure_go_binary
from devstack.probes import http_status
from devstack.versions import MINIO_MODULE, MINIO_VERSION

# Loopback-only development credentials (MinIO refuses a secret shorter than 8 characters).
ACCESS_KEY = "imagesearch"
SECRET_KEY = "imagesearch-dev-secret"
BUCKET = "imagesearch-blobs"


def minio_binary() -> Path:
    return cache_dir() / f"minio-{MINIO_VERSION}" / "minio"


class MinIO(Component):
    name = "minio"
    port_names = ("s3", "console")
    optional = True
    ready_timeout_s = 60.0
    stop_grace_s = 10.0

    def prepare(self) -> None:
        # Pure Go, no replace directives: `go install` builds it (cold: about 3 min on 2 cores).
        ensure_go_binary(MINIO_MODULE, MINIO_VERSION, minio_binary(), "MinIO", "about 3 min")

    def config(self) -> dict[str, Any]:
        return {"binary": str(minio_binary()), "version": MINIO_VERSION, "access_key": ACCESS_KEY}

    def command(self, ports: Mapping[str, int], data_dir: Path, run_id: str) -> Launch:
        env = dict(os.environ)
        env.update(
            MINIO_ROOT_USER=ACCESS_KEY,
            MINIO_ROOT_PASSWORD=SECRET_KEY,
            MINIO_BROWSER="off",
            MINIO_UPDATE="off",
            MINIO_CALLHOME_ENABLE="off",
        )
        argv = [
            str(minio_binary()),
            "server",
            str(data_dir),
            "--quiet",
            "--address",
            f"{HOST}:{ports['s3']}",
            # The console is off (MINIO_BROWSER) but its listener is still configured: keep it on loopback.
            "--console-address",
            f"{HOST}:{ports['console']}",
        ]
        return Launch(argv, env)

    def health(self, ports: Mapping[str, int], config: Mapping[str, Any]) -> str | None:
        code = http_status(f"http://{HOST}:{ports['s3']}/minio/health/ready")
        return None if code == 200 else f"/minio/health/ready -> {code}"

    def service_env(self, host: str, ports: Mapping[str, int]) -> dict[str, str]:
        return {
            "IMAGESEARCH_GATEWAY_BLOB_BACKEND": "s3",
            "IMAGESEARCH_GATEWAY_BLOB_S3_ENDPOINT": f"{host}:{ports['s3']}",
            "IMAGESEARCH_GATEWAY_BLOB_S3_BUCKET": BUCKET,
            "IMAGESEARCH_GATEWAY_BLOB_S3_ACCESS_KEY": ACCESS_KEY,
            "IMAGESEARCH_GATEWAY_BLOB_S3_SECRET_KEY": SECRET_KEY,
            "IMAGESEARCH_GATEWAY_BLOB_S3_SECURE": "false",
        }
