"""The one interface every model runtime adapter implements (Triton, ONNX Runtime in-process)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: "uint8" for pixels, "int64" for token ids, "float32" for vectors
    shape: tuple[int, ...]  # without the batch axis; -1 = any length


@dataclass(frozen=True)
class TowerSpec:
    """What a runtime serves for one tower: its tensors and batch limit."""

    model: str  # the runtime's name for it: a Triton model, or the ONNX file's
    version: str  # the runtime's version of it (Triton's version directory; the package's in-process)
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]  # shape[-1] is the vector's width as served
    max_batch_size: int


class EncoderBackend(Protocol):
    """Runs a model package's two towers on ready-made input tensors. Adapters raise
    services.common.errors types: Unavailable (runtime down or model not loaded), DeadlineExceeded
    (timeout_s passed), or FailedPrecondition (the served model does not match the package)."""

    runtime: str  # "triton" or "onnxruntime"

    async def describe(self) -> tuple[TowerSpec, TowerSpec]:
        """(image tower, text tower) as currently served."""
        ...

    async def encode_images(self, pixels: np.ndarray, timeout_s: float) -> dict[str, np.ndarray]:
        """uint8 [n, H, W, 3] -> float32 [n, D] per output tensor name; any n >= 1 (the adapter splits
        to its batch limit)."""
        ...

    async def encode_texts(self, inputs: Mapping[str, np.ndarray], timeout_s: float) -> dict[str, np.ndarray]:
        """The text tower's inputs by name (each [n, ...]) -> float32 [n, D] per output tensor name."""
        ...

    async def ready(self) -> bool:
        """Can both towers be run right now (at the version describe() reported)?"""
        ...

    async def close(self) -> None: ...
