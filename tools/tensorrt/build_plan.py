#!/usr/bin/env python3
"""Build a tower's TensorRT plan (fp16, dynamic batch) from its ONNX, for the `tensorrt` Triton config.

Run on the GPU that will serve the plan (a plan is specific to the GPU model and TensorRT version), e.g.
inside the NGC container `nvcr.io/nvidia/tritonserver:<yy.mm>-py3` that will run it:

    python -m tools.tensorrt.build_plan --model clip_image
    python -m tools.tensorrt.build_plan --model clip_text
    tritonserver --model-repository=triton_models --model-config-name=tensorrt ...

    python -m tools.tensorrt.build_plan --model clip_image --dry-run    # print the plan, build nothing

Everything comes from the repository, so the plan cannot disagree with the config that serves it:
- the input tensor (name, type, per-item dims) and `max_batch_size` from <model>/configs/tensorrt.pbtxt;
- one optimisation profile: batch min 1, opt = the largest preferred_batch_size (or --opt-batch),
  max = max_batch_size;
- the ONNX is <model>/<latest version>/model.onnx; its input and output must match the config;
- the plan is written where the config looks for it: <model>/<version>/<default_model_filename>.

It uses the `tensorrt` Python module when importable, else `trtexec` from PATH (--trtexec forces it).
fp16 is on by default (--fp32 to turn it off); compare embeddings with the ONNX model after building
(cosine >= 0.999 is expected in fp16; the encoder's Triton-vs-embedded parity test measures it).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_TRT_TYPES = {"TYPE_UINT8": "uint8", "TYPE_INT64": "int64", "TYPE_INT32": "int32", "TYPE_FP32": "float32"}
_ONNX_TYPES = {2: "uint8", 7: "int64", 6: "int32", 1: "float32"}  # onnx.TensorProto enum values


@dataclass(frozen=True)
class PlanSpec:
    model: str
    onnx: str
    output: str
    input_name: str
    input_dtype: str
    output_name: str
    min_shape: tuple[int, ...]
    opt_shape: tuple[int, ...]
    max_shape: tuple[int, ...]
    fp16: bool
    workspace_mib: int

    def trtexec_command(self, trtexec: str = "trtexec") -> list[str]:
        def shape(s: tuple[int, ...]) -> str:
            return f"{self.input_name}:" + "x".join(str(d) for d in s)

        cmd = [
            trtexec,
            f"--onnx={self.onnx}",
            f"--saveEngine={self.output}",
            f"--minShapes={shape(self.min_shape)}",
            f"--optShapes={shape(self.opt_shape)}",
            f"--maxShapes={shape(self.max_shape)}",
            f"--memPoolSize=workspace:{self.workspace_mib}M",
        ]
        if self.fp16:
            cmd.append("--fp16")
        return cmd


def _read_config(path: Path):  # type: ignore[no-untyped-def]
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = model_config_pb2.ModelConfig()
    text_format.Parse(path.read_text(), config)
    return config


def plan_spec(
    repository: Path,
    model: str,
    config_name: str = "tensorrt",
    opt_batch: int | None = None,
    fp16: bool = True,
    workspace_mib: int = 4096,
) -> PlanSpec:
    """What to build for `model`, derived from its config and ONNX file (no GPU needed)."""
    from tritonclient.grpc import model_config_pb2

    model_dir = repository / model
    config = _read_config(model_dir / "configs" / f"{config_name}.pbtxt")
    if config.platform != "tensorrt_plan":
        raise SystemExit(f"{model}/configs/{config_name}.pbtxt is not a tensorrt_plan config")
    if len(config.input) != 1 or len(config.output) != 1:
        raise SystemExit(f"{model}: expected one input and one output in the config")
    versions = sorted(
        (int(p.name) for p in model_dir.iterdir() if p.name.isdigit() and (p / "model.onnx").is_file()),
        reverse=True,
    )
    if not versions:
        raise SystemExit(f"{model}: no <version>/model.onnx to build from")
    version_dir = model_dir / str(versions[0])
    tin, tout = config.input[0], config.output[0]
    dims = tuple(int(d) for d in tin.dims)
    max_batch = int(config.max_batch_size)
    preferred = [b for b in config.dynamic_batching.preferred_batch_size if b <= max_batch]
    opt = opt_batch or (max(preferred) if preferred else max_batch)
    if not 1 <= opt <= max_batch:
        raise SystemExit(f"--opt-batch must be within 1..{max_batch}")
    spec = PlanSpec(
        model=model,
        onnx=str(version_dir / "model.onnx"),
        output=str(version_dir / (config.default_model_filename or "model.plan")),
        input_name=tin.name,
        input_dtype=_TRT_TYPES[model_config_pb2.DataType.Name(tin.data_type)],
        output_name=tout.name,
        min_shape=(1, *dims),
        opt_shape=(opt, *dims),
        max_shape=(max_batch, *dims),
        fp16=fp16,
        workspace_mib=workspace_mib,
    )
    _check_onnx(spec)
    return spec


def _check_onnx(spec: PlanSpec) -> None:
    """The ONNX graph must have the config's input (name, type, per-item dims) and output."""
    import onnx

    graph = onnx.load(spec.onnx, load_external_data=False).graph
    inputs = {i.name: i for i in graph.input}
    outputs = {o.name for o in graph.output}
    if spec.input_name not in inputs or spec.output_name not in outputs:
        raise SystemExit(
            f"{spec.onnx}: inputs {sorted(inputs)}, outputs {sorted(outputs)} do not match the config"
        )
    tensor = inputs[spec.input_name].type.tensor_type
    dtype = _ONNX_TYPES.get(tensor.elem_type)
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
    if dtype != spec.input_dtype or dims[1:] != spec.max_shape[1:] or dims[0] != -1:
        raise SystemExit(
            f"{spec.onnx}: input {spec.input_name} is {dtype} {list(dims)}, the config needs "
            f"{spec.input_dtype} [-1, {', '.join(map(str, spec.max_shape[1:]))}]"
        )


def build_with_tensorrt(spec: PlanSpec) -> None:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # implicit in TensorRT >= 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(spec.onnx):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SystemExit(f"TensorRT cannot parse {spec.onnx}:\n{errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_mib << 20)
    if spec.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(spec.input_name, spec.min_shape, spec.opt_shape, spec.max_shape)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SystemExit(f"TensorRT failed to build {spec.model}")
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    if spec.input_name not in names or spec.output_name not in names:
        raise SystemExit(
            f"built engine has tensors {names}, expected {spec.input_name} and {spec.output_name}"
        )
    Path(spec.output).write_bytes(bytes(serialized))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="model directory name, e.g. clip_image")
    parser.add_argument("--model-repository", type=Path, default=REPO / "triton_models")
    parser.add_argument("--config-name", default="tensorrt", help="configs/<name>.pbtxt to build for")
    parser.add_argument("--opt-batch", type=int, default=None, help="profile's optimal batch")
    parser.add_argument("--fp32", action="store_true", help="build without fp16")
    parser.add_argument("--workspace-mib", type=int, default=4096)
    parser.add_argument("--trtexec", action="store_true", help="build with trtexec instead of the Python API")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan as JSON and the trtexec command"
    )
    args = parser.parse_args(argv)

    spec = plan_spec(
        args.model_repository, args.model, args.config_name, args.opt_batch, not args.fp32, args.workspace_mib
    )
    if args.dry_run:
        print(json.dumps({**asdict(spec), "trtexec": shlex.join(spec.trtexec_command())}, indent=2))
        return 0
    try:
        import tensorrt  # noqa: F401

        have_python_api = True
    except ImportError:
        have_python_api = False
    if have_python_api and not args.trtexec:
        build_with_tensorrt(spec)
    else:
        trtexec = shutil.which("trtexec") or "/usr/src/tensorrt/bin/trtexec"
        if not Path(trtexec).is_file():
            raise SystemExit(
                "neither the tensorrt Python module nor trtexec is available (use the NGC container)"
            )
        subprocess.run(spec.trtexec_command(trtexec), check=True)
    print(f"wrote {spec.output} ({Path(spec.output).stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
