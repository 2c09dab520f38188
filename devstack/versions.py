"""Every pinned version of the backend components, in one place.

The local stack (this package) and the production-style deployment (docker-compose.yml) must run the same
releases; tests/devstack/test_versions.py fails when docker-compose.yml disagrees with this module.
"""

from __future__ import annotations

# Weaviate: built from source with the Go module proxy (no registry ships a binary). Compose runs the
# official image of the same release.
WEAVIATE_VERSION = "v1.39.0"
WEAVIATE_MODULE = "github.com/weaviate/weaviate/cmd/weaviate-server"
WEAVIATE_IMAGE = f"cr.weaviate.io/semitechnologies/weaviate:{WEAVIATE_VERSION.removeprefix('v')}"

# Triton: the nvidia-pytriton wheel carries a complete tritonserver binary of one Triton release. Compose
# runs the NGC image of that same release (NGC tags name the release, the server reports its version).
PYTRITON_VERSION = "0.7.0"
TRITON_RELEASE = "24.10"
TRITON_SERVER_VERSION = "2.51.0"  # what tritonserver 24.10 reports in its server metadata
TRITON_IMAGE = f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-py3"
# ONNX Runtime inside Triton's python-backend models: the same version as the project venv resolves, so
# the in-process and Triton encoder backends produce identical outputs.
TRITON_ONNXRUNTIME_VERSION = "1.31.1"

# Redis: the local stack runs Debian's redis-server package (whatever the distribution ships); compose
# pins the image.
REDIS_IMAGE = "redis:7.4-alpine"

# MinIO (the S3-compatible object store for originals and thumbnails): built from source with the Go module
# proxy at a pinned pseudo-version (the proxy carries no release tags; the open-source module has not
# changed since 2026-02). AGPL-3.0: run as a separate server process, never linked. Compose runs the
# official image of the last release before that commit.
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
MINIO_MODULE = "github.com/minio/minio"
MINIO_IMAGE = "minio/minio:RELEASE.2025-09-07T16-13-09Z"
