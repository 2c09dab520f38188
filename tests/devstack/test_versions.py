"""docker-compose.yml runs the same component releases the local stack pins (devstack/versions.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

from devstack import versions

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _image(service: str) -> str:
    return str(COMPOSE["services"][service]["image"])


def test_weaviate_image_is_the_release_the_stack_builds() -> None:
    assert _image("weaviate") == versions.WEAVIATE_IMAGE
    assert _image("weaviate").rsplit(":", 1)[1] == versions.WEAVIATE_VERSION.removeprefix("v") == "1.39.0"


def test_triton_image_is_the_release_inside_the_pinned_pytriton_wheel() -> None:
    assert _image("triton") == versions.TRITON_IMAGE
    # Triton release 24.10 is server version 2.51.0, the tritonserver nvidia-pytriton 0.7.0 ships.
    assert (versions.TRITON_RELEASE, versions.TRITON_SERVER_VERSION) == ("24.10", "2.51.0")
    assert versions.PYTRITON_VERSION == "0.7.0"


def test_redis_image_is_pinned() -> None:
    assert _image("redis") == versions.REDIS_IMAGE


def test_minio_image_is_pinned() -> None:
    assert _image("minio") == versions.MINIO_IMAGE
