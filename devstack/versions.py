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
