"""The one interface every model runtime adapter implements (Triton, ONNX Runtime in-process)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class TowerSpec:
    """What a runtime serves for one tower: tensors, limits and the model's own parameters."""

    model: str  # name in the model repository, e.g. "clip_image"
    version: str  # the version being served, e.g. "1"
    input_name: str
    input_dtype: str  # numpy dtype name: "uint8" for pixels, "int64" for token ids
    input_shape: tuple[int, ...]  # without the batch axis
    output_name: str
    max_batch_size: int
    dimension: int  # embedding width D
    parameters: Mapping[str, str] = field(default_factory=dict)  # config.pbtxt `parameters`


class EncoderBackend(Protocol):
    """Runs the two towers on ready-made input tensors. Adapters raise services.common.errors types:
    Unavailable (runtime down or model not loaded), DeadlineExceeded (timeout_s passed), or
    FailedPrecondition (the served model does not match the contract)."""

    runtime: str  # "triton" or "onnxruntime"

    async def describe(self) -> tuple[TowerSpec, TowerSpec]:
        """(image tower, text tower) as currently served."""
        ...

    async def encode_images(self, pixels: np.ndarray, timeout_s: float) -> np.ndarray:
        """uint8 [n, H, W, 3] -> float32 [n, D]; any n >= 1 (the adapter splits to its batch limit)."""
        ...

    async def encode_texts(self, input_ids: np.ndarray, timeout_s: float) -> np.ndarray:
        """int64 [n, context] -> float32 [n, D]; any n >= 1."""
        ...

    async def ready(self) -> bool:
        """Can both towers be run right now (at the version describe() reported)?"""
        ...

    async def close(self) -> None: ...
