"""Model packages on disk: the OpenCLIP export's package.json is one the encoder serves (checked on the
demo towers, which share CLIP's tensor contract), and packages are resolved by name or directory."""

from __future__ import annotations

import json
from pathlib import Path

from services.encoder.backends.onnxruntime import OnnxRuntimeBackend
from services.encoder.core import build_model_info
from services.encoder.package import load_package
from services.encoder.settings import REPO_ROOT
from tools.models.export_openclip import package_manifest


async def test_openclip_export_writes_a_servable_package(model_repository: Path, tmp_path: Path) -> None:
    manifest = package_manifest(
        name="openclip-vit-b-32",
        dim=256,  # the demo towers' width stands in for an export's D
        image_model="clip_image",
        text_model="clip_text",
        mean=[0.48145466, 0.4578275, 0.40821073],
        std=[0.26862954, 0.26130258, 0.27577711],
        metadata={"model": "ViT-B-32", "pretrained": "test"},
    )
    (tmp_path / "package.json").write_text(json.dumps(manifest))
    package = load_package(str(tmp_path), REPO_ROOT / "models", model_repository)
    assert package.tower("image").file == model_repository / "clip_image" / "1" / "model.onnx"
    runtime = OnnxRuntimeBackend(package, intra_op_threads=1, max_batch=4, allow_spinning=False)
    try:
        info = build_model_info(package, *(await runtime.describe()), runtime.runtime)
    finally:
        await runtime.close()
    assert (info.model.name, info.model.version, info.dimension) == ("openclip-vit-b-32", "1", 256)
    assert info.image.color_mode == "clip_reference" and info.text.tokenizer == "clip-bpe-49408"
    assert [v.name for v in info.vectors] == ["semantic"]


def test_shipped_packages_name_their_primary_vector_semantic() -> None:
    """The convention every package we ship follows: the vector both towers share is "semantic"."""
    for name in ("demo", "photo"):
        package = load_package(name, REPO_ROOT / "models", REPO_ROOT / "triton_models")
        assert package.primary_vector == "semantic"
