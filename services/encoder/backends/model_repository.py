"""Reading Triton model configurations (config.pbtxt files, or Triton's GetModelConfig answers).

Both adapters describe a tower from the same `ModelConfig` protobuf, so the in-process runtime and
Triton read one source of truth: the tensors, the batch limit and the `parameters` that carry the
model's preprocessing contract.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from services.common.errors import FailedPrecondition
from services.encoder.backends.base import TensorSpec

# Triton data types the towers use, as numpy dtype names.
_DTYPES = {
    model_config_pb2.TYPE_UINT8: "uint8",
    model_config_pb2.TYPE_INT32: "int32",
    model_config_pb2.TYPE_INT64: "int64",
    model_config_pb2.TYPE_FP16: "float16",
    model_config_pb2.TYPE_FP32: "float32",
}


def read_config(path: Path) -> model_config_pb2.ModelConfig:
    """Parse a config.pbtxt (or configs/<name>.pbtxt) file."""
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(path.read_text(), config)
    except OSError as exc:  # the OS's reason, not the exception's repr
        raise FailedPrecondition(
            f"cannot read the model configuration {path}: {exc.strerror or 'unreadable'}"
        ) from None
    except text_format.ParseError as exc:  # its text is the line and column of the mistake
        raise FailedPrecondition(f"the model configuration {path} is not valid: {exc}") from None
    return config


def parameters(config: model_config_pb2.ModelConfig) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


def single_io(config: model_config_pb2.ModelConfig) -> tuple[str, str, tuple[int, ...], str, tuple[int, ...]]:
    """(input name, input numpy dtype, input dims, output name, output dims) of a one-in one-out tower."""
    if len(config.input) != 1 or len(config.output) != 1:
        raise FailedPrecondition(
            f"model '{config.name}' must have exactly one input and one output "
            f"(has {len(config.input)} and {len(config.output)})"
        )
    tin, tout = config.input[0], config.output[0]
    dtype = _DTYPES.get(tin.data_type)
    if dtype is None:
        raise FailedPrecondition(
            f"model '{config.name}' input '{tin.name}' has unsupported type "
            f"{model_config_pb2.DataType.Name(tin.data_type)}"
        )
    if tout.data_type != model_config_pb2.TYPE_FP32:
        raise FailedPrecondition(
            f"model '{config.name}' output '{tout.name}' must be TYPE_FP32, "
            f"not {model_config_pb2.DataType.Name(tout.data_type)}"
        )
    return tin.name, dtype, tuple(tin.dims), tout.name, tuple(tout.dims)


def tensors(config: model_config_pb2.ModelConfig) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """(inputs, outputs) of a tower's config, dims without the batch axis; outputs must be TYPE_FP32."""
    inputs = []
    for tensor in config.input:
        dtype = _DTYPES.get(tensor.data_type)
        if dtype is None:
            raise FailedPrecondition(
                f"model '{config.name}' input '{tensor.name}' has unsupported type "
                f"{model_config_pb2.DataType.Name(tensor.data_type)}"
            )
        inputs.append(TensorSpec(tensor.name, dtype, tuple(tensor.dims)))
    outputs = []
    for tensor in config.output:
        if tensor.data_type != model_config_pb2.TYPE_FP32:
            raise FailedPrecondition(
                f"model '{config.name}' output '{tensor.name}' must be TYPE_FP32, "
                f"not {model_config_pb2.DataType.Name(tensor.data_type)}"
            )
        outputs.append(TensorSpec(tensor.name, "float32", tuple(tensor.dims)))
    return tuple(inputs), tuple(outputs)


def latest_version(model_dir: Path, filename: str) -> tuple[str, Path]:
    """Triton's default version policy (latest 1): the highest numeric subdirectory holding `filename`."""
    candidates = list(model_dir.iterdir()) if model_dir.is_dir() else []
    versions = sorted(
        (int(p.name) for p in candidates if p.name.isdigit() and (p / filename).is_file()), reverse=True
    )
    if not versions:
        raise FailedPrecondition(
            f"no version of model '{model_dir.name}' has {filename} in {model_dir} "
            f"(expected {model_dir}/<version>/{filename})"
        )
    return str(versions[0]), model_dir / str(versions[0]) / filename
