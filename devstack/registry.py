"""The components of the local stack, in the order they are started and listed."""

from __future__ import annotations

import os
from pathlib import Path

from devstack.component import Component
from devstack.minio import MinIO
from devstack.redis import Redis
from devstack.triton import Triton
from devstack.weaviate import Weaviate

# MinIO is optional (the object store for originals): started only when named.
COMPONENT_NAMES: tuple[str, ...] = (Redis.name, Weaviate.name, Triton.name, MinIO.name)


def default_components(
    repo_root: Path,
    *,
    model_repository: str | os.PathLike[str] | None = None,
    model_config_name: str | None = None,
) -> tuple[Component, ...]:
    """One instance of each component; Triton serves ``model_repository`` (default: triton_models/)."""
    return (
        Redis(),
        Weaviate(),
        Triton(repo_root, model_repository=model_repository, model_config_name=model_config_name),
        MinIO(),
    )
