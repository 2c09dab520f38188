"""The model repository is consistent: every config of a tower (CPU python backend, TensorRT, ONNX Runtime
on GPU) declares the same tensors, which are the model package's; the ONNX files match them, the
python-backend model.py files are one file, and the TensorRT build plan follows the config. No GPU needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from devstack import Stack, StackError
from tools.tensorrt.build_plan import plan_spec

REPO = Path(__file__).resolve().parents[2]
TRITON_MODELS = REPO / "triton_models"
GPU_CONFIGS = {
    "tensorrt": ("tensorrt_plan", "", "model.plan"),
    "onnxruntime_gpu": ("", "onnxruntime", "model.onnx"),
}
TOWERS = {"clip_image": "pixels", "clip_text": "input_ids", "clip_image_int8": "pixels"}
# The photo package's towers: (package tower, ONNX file in the package) per Triton model.
PHOTO_TOWERS = {"photo_image": ("image", "image.onnx"), "photo_text": ("text", "text.onnx")}
PACKAGES = ("demo", "photo")
ONNX_TYPES = {
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.FLOAT: "TYPE_FP32",
}


def _config(path: Path) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    text_format.Parse(path.read_text(), config)
    return config


def _io(config: model_config_pb2.ModelConfig) -> list[tuple[str, str, str, tuple[int, ...]]]:
    return [
        (kind, t.name, model_config_pb2.DataType.Name(t.data_type), tuple(t.dims))
        for kind, tensors in (("input", config.input), ("output", config.output))
        for t in tensors
    ]


def test_repository_has_the_clip_art_and_photo_towers() -> None:
    models = sorted(p.name for p in TRITON_MODELS.iterdir() if p.is_dir())
    assert models == sorted([*TOWERS, *PHOTO_TOWERS])


@pytest.mark.parametrize("model", sorted(TOWERS))
def test_default_config_is_the_cpu_python_backend(model: str) -> None:
    config = _config(TRITON_MODELS / model / "config.pbtxt")
    assert config.name == model and config.backend == "python"
    assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    assert sum(g.count for g in config.instance_group) == 1  # one ONNX Runtime session on 2 cores
    assert config.parameters["intra_op_threads"].string_value == "2"
    assert config.max_batch_size >= 32
    batching = config.dynamic_batching
    assert all(b <= config.max_batch_size for b in batching.preferred_batch_size)
    # No queue policy: it disables payload prefetching, and Triton 2.51 then stalls requests for 500 ms.
    assert not batching.HasField("default_queue_policy")
    ((kind, name, dtype, dims), out) = _io(config)
    assert (kind, name) == ("input", TOWERS[model])
    assert out == ("output", "embedding", "TYPE_FP32", (-1,))  # D comes from the graph


@pytest.mark.parametrize("model", ["clip_image", "clip_text"])
@pytest.mark.parametrize("name", sorted(GPU_CONFIGS))
def test_gpu_configs_declare_the_same_tensors_and_contract(model: str, name: str) -> None:
    cpu = _config(TRITON_MODELS / model / "config.pbtxt")
    gpu = _config(TRITON_MODELS / model / "configs" / f"{name}.pbtxt")
    platform, backend, filename = GPU_CONFIGS[name]
    assert (gpu.name, gpu.platform, gpu.backend, gpu.default_model_filename) == (
        model,
        platform,
        backend,
        filename,
    )
    assert [g.kind for g in gpu.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
    assert gpu.max_batch_size == cpu.max_batch_size
    cpu_io, gpu_io = _io(cpu), _io(gpu)
    assert cpu_io[0] == gpu_io[0]  # the input, identical
    (_, cpu_name, cpu_type, _), (_, gpu_name, gpu_type, gpu_dims) = cpu_io[1], gpu_io[1]
    assert (cpu_name, cpu_type) == (gpu_name, gpu_type) and len(gpu_dims) == 1  # [D] (see the ONNX test)


def test_int8_variant_is_clip_image_with_another_name() -> None:
    fp32 = _config(TRITON_MODELS / "clip_image" / "config.pbtxt")
    int8 = _config(TRITON_MODELS / "clip_image_int8" / "config.pbtxt")
    assert int8.name == "clip_image_int8"
    int8.name = fp32.name
    assert int8 == fp32  # same tensors, batching, threads and contract (same embedding space)
    assert not (TRITON_MODELS / "clip_image_int8" / "configs").exists()  # CPU only


def test_python_backend_model_files_are_one_file() -> None:
    files = {(TRITON_MODELS / m / "1" / "model.py").resolve(strict=True) for m in [*TOWERS, *PHOTO_TOWERS]}
    assert files == {TRITON_MODELS / "clip_image" / "1" / "model.py"}


def _onnx_io(path: Path) -> tuple[tuple[str, str, tuple[int, ...]], tuple[str, str, tuple[int, ...]]]:
    graph = onnx.load(str(path), load_external_data=False).graph
    (inp,), (out,) = graph.input, graph.output

    def describe(v: onnx.ValueInfoProto) -> tuple[str, str, tuple[int, ...]]:
        t = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return v.name, ONNX_TYPES[t.elem_type], dims

    return describe(inp), describe(out)


@pytest.mark.parametrize("model", sorted(TOWERS))
def test_onnx_files_match_every_config(model: str, model_repository: Path) -> None:
    """For the served repository (the demo model, or the stand-in towers while it is missing)."""
    (in_name, in_type, in_dims), (out_name, out_type, out_dims) = _onnx_io(
        model_repository / model / "1" / "model.onnx"
    )
    configs = [
        model_repository / model / "config.pbtxt",
        *sorted((model_repository / model / "configs").glob("*.pbtxt")),
    ]
    for path in configs:
        config = _config(path)
        (_, name, dtype, dims), (_, oname, otype, odims) = _io(config)
        assert (name, dtype, (-1, *dims)) == (in_name, in_type, in_dims), path
        assert (oname, otype) == (out_name, out_type), path
        if config.backend == "python":  # the python backend takes any D
            assert odims == (-1,), path
        else:  # the GPU backends compare with the graph's declared shape (onnxruntime: exactly)
            assert (-1, *odims) == out_dims, f"{path}: output dims {odims}, the ONNX declares {out_dims}"


@pytest.mark.parametrize("model", ["clip_image", "clip_text"])
def test_tensorrt_plan_spec_follows_the_config(model: str, model_repository: Path) -> None:
    spec = plan_spec(model_repository, model)
    config = _config(model_repository / model / "configs" / "tensorrt.pbtxt")
    dims = tuple(config.input[0].dims)
    assert spec.input_name == config.input[0].name and spec.output_name == config.output[0].name
    assert spec.min_shape == (1, *dims)
    assert spec.max_shape == (config.max_batch_size, *dims)
    assert spec.opt_shape == (max(config.dynamic_batching.preferred_batch_size), *dims)
    assert spec.fp16 and spec.output.endswith("/1/model.plan")
    command = spec.trtexec_command()
    assert "--fp16" in command and f"--maxShapes={spec.input_name}:{config.max_batch_size}x" in " ".join(
        command
    )


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(GPU_CONFIGS))
def test_gpu_configs_pass_tritons_own_validation(
    name: str, model_repository: Path, tmp_path: Path, photo_package: Any
) -> None:
    """The real Triton (CPU-only build) reads each GPU config, validates it and gets as far as looking for
    the GPU backend, which is the only thing missing; clip_image_int8, which has no GPU config, falls back
    to its config.pbtxt and loads."""
    manager = Stack(tmp_path, model_repository=model_repository, model_config_name=name)
    with pytest.raises(StackError) as failed:
        manager.up(only=["triton"])
    manager.down(only=["triton"])
    log = (tmp_path / ".stack" / "logs" / "triton.log").read_text()
    backend = "tensorrt" if name == "tensorrt" else "onnxruntime"
    for model in ("clip_image", "clip_text"):
        reason = f"failed to load '{model}' version 1: Invalid argument: unable to find backend library"
        assert f"{reason} for backend '{backend}'" in log, failed.value
    assert "TRITONBACKEND_ModelInstanceInitialize: clip_image_int8_0_0 (CPU device 0)" in log
    assert "failed to load 'clip_image_int8'" not in log
    if (
        model_repository == TRITON_MODELS
    ):  # the photo towers: a GPU config for ONNX Runtime, none for TensorRT
        for model in PHOTO_TOWERS:
            if name == "onnxruntime_gpu":
                reason = (
                    f"failed to load '{model}' version 1: Invalid argument: unable to find backend library"
                )
                assert f"{reason} for backend 'onnxruntime'" in log
            else:
                assert f"failed to load '{model}'" not in log


# ---- the model packages and the repository agree ---------------------------------------------------------


def _package(name: str) -> dict[str, Any]:
    return json.loads((REPO / "models" / name / "package" / "package.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_tower_is_a_triton_model_with_its_tensors(package: str) -> None:
    """What the encoder checks at startup against Triton's answer, checked here on the files."""
    manifest = _package(package)
    for kind, tower in manifest["towers"].items():
        names = [tower["triton_model"], *(v["triton_model"] for v in tower.get("variants", {}).values())]
        for name in names:
            for path in [
                TRITON_MODELS / name / "config.pbtxt",
                *(TRITON_MODELS / name / "configs").glob("*.pbtxt"),
            ]:
                config = _config(path)
                assert config.name == name, path
                assert [(t.name, tuple(t.dims)) for t in config.input] == [
                    (t["name"], tuple(t["shape"][1:])) for t in tower["inputs"]
                ], path
                served = {t.name: tuple(t.dims) for t in config.output}
                for out in tower["outputs"]:
                    dim = manifest["vectors"][out["vector"]]["dim"]
                    assert served[out["name"]] in ((-1,), (dim,)), f"{path}: {out['name']}"
                    assert kind in manifest["vectors"][out["vector"]]["towers"]


@pytest.mark.parametrize("model", sorted(PHOTO_TOWERS))
def test_photo_towers_default_to_the_cpu_python_backend_with_a_gpu_config(model: str) -> None:
    config = _config(TRITON_MODELS / model / "config.pbtxt")
    assert config.backend == "python" and config.parameters["intra_op_threads"].string_value == "2"
    assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    assert not config.dynamic_batching.HasField("default_queue_policy")
    gpu = _config(TRITON_MODELS / model / "configs" / "onnxruntime_gpu.pbtxt")
    assert (gpu.name, gpu.backend, gpu.default_model_filename) == (model, "onnxruntime", "model.onnx")
    assert [g.kind for g in gpu.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
    assert gpu.max_batch_size == config.max_batch_size and _io(gpu) == _io(config)


@pytest.mark.parametrize("model", sorted(PHOTO_TOWERS))
def test_photo_onnx_files_are_the_packages_and_match_the_configs(model: str, photo_package: Any) -> None:
    tower, filename = PHOTO_TOWERS[model]
    link = TRITON_MODELS / model / "1" / "model.onnx"
    assert link.resolve(strict=True) == (photo_package.directory / filename).resolve()
    graph = onnx.load(str(link), load_external_data=False).graph
    config = _config(TRITON_MODELS / model / "config.pbtxt")

    def described(values: Any) -> list[tuple[str, str, tuple[int, ...]]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
            out.append((v.name, ONNX_TYPES[t.elem_type], dims[1:]))
        return out

    declared = [
        (t.name, model_config_pb2.DataType.Name(t.data_type), tuple(t.dims))
        for t in [*config.input, *config.output]
    ]
    assert described([*graph.input, *graph.output]) == declared


def test_a_repository_with_unassembled_package_files_is_refused_before_triton_starts(tmp_path: Path) -> None:
    from devstack.triton import Triton

    (tmp_path / "photo_image" / "1").mkdir(parents=True)
    (tmp_path / "photo_image" / "1" / "model.onnx").symlink_to(tmp_path / "absent.onnx")
    with pytest.raises(
        StackError, match=r"not assembled yet .*photo_image/1/model.onnx \(run `make models`\)"
    ):
        Triton(REPO, model_repository=tmp_path).prepare()
