"""devstack's Triton component: when a running Triton may be reused."""

from __future__ import annotations

from pathlib import Path

from devstack.triton import model_files_stamp


def test_the_triton_model_files_stamp_follows_a_replaced_model_file(tmp_path: Path) -> None:
    """A re-assembled package must restart a reused Triton (it loaded the old graph at start)."""
    package = tmp_path / "package"
    package.mkdir()
    (package / "image.onnx").write_bytes(b"graph 1")
    version = tmp_path / "repo" / "photo_image" / "1"
    version.mkdir(parents=True)
    (version / "model.onnx").symlink_to(package / "image.onnx")
    (tmp_path / "repo" / "photo_image" / "config.pbtxt").write_text("name: 'photo_image'")
    before = model_files_stamp(tmp_path / "repo")
    assert model_files_stamp(tmp_path / "repo") == before  # stable while nothing changes
    replacement = package / "image.onnx.new"
    replacement.write_bytes(b"graph 2, rebuilt")
    replacement.replace(package / "image.onnx")  # as the assembler does: a new file in its place
    assert model_files_stamp(tmp_path / "repo") != before
