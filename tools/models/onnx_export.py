"""One ONNX export path for every tower (demo and OpenCLIP): torch.onnx.export with a dynamic batch,
then the embedding output's width pinned to its real size.

The legacy exporter marks every output dimension it cannot prove constant as symbolic; the embedding
width is constant, and Triton's config (`dims: [ 256 ]`) and the encoder's model info read it, so it is
written into the graph instead of being patched afterwards. torch is imported lazily (optional extra).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OPSET = 17


def export_tower(
    module: Any,
    example: tuple[Any, ...],
    path: Path,
    input_name: str,
    *,
    producer: str,
    metadata: dict[str, Any] | None = None,
) -> int:
    """Export `module` (eval mode) to `path`; returns the embedding width written into the graph."""
    import onnx
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    with torch.no_grad():
        width = int(module(*example).shape[-1])
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=[input_name],
            output_names=["embedding"],
            dynamic_axes={input_name: {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    m = onnx.load(str(path))
    (out,) = [o for o in m.graph.output if o.name == "embedding"]
    dims = out.type.tensor_type.shape.dim
    if len(dims) != 2:
        raise ValueError(f"{path}: embedding output has rank {len(dims)}, expected [batch, width]")
    dims[1].Clear()
    dims[1].dim_value = width
    for key, value in (metadata or {}).items():
        prop = m.metadata_props.add()
        prop.key, prop.value = key, value if isinstance(value, str) else json.dumps(value)
    m.producer_name = producer
    onnx.checker.check_model(m, full_check=True)  # full_check: shape inference agrees with the pin
    onnx.save(m, str(path))
    return width
