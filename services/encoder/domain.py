"""The encoder's domain types: items in, results out, and the model they were encoded with.

Plain dataclasses and numpy arrays; no gRPC or protobuf types (convert.py maps them to messages).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import numpy as np

from services.common.errors import DomainError
from services.encoder.preprocess import ImagePreprocessing
from services.encoder.settings import EncoderSettings


class ModelOutputError(DomainError):
    """The model produced an unusable vector (NaN, infinity or zero) for one item (INTERNAL, the
    DomainError default: nothing the caller can fix)."""


@dataclass(frozen=True)
class ImageItem:
    id: str
    data: bytes


@dataclass(frozen=True)
class TextItem:
    id: str
    text: str


@dataclass(frozen=True)
class ItemResult:
    """Exactly one of embedding (float32 [D], unit length: the primary vector) or error is set; `vectors`
    holds every named vector the tower produced (the primary one included), empty on error."""

    id: str
    embedding: np.ndarray | None = None
    error: DomainError | None = None
    truncated: bool = False
    vectors: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class EmbeddingModel:
    """Name and version of the model whose vectors these are (a change means re-indexing)."""

    name: str
    version: str


@dataclass(frozen=True)
class TextPreprocessing:
    tokenizer: str
    context_length: int
    lowercase: bool


@dataclass(frozen=True)
class VectorInfo:
    """One named vector of the served package."""

    name: str
    dimension: int
    from_image: bool
    from_text: bool
    primary: bool
    description: str


@dataclass(frozen=True)
class ModelInfo:
    model: EmbeddingModel
    dimension: int  # the primary vector's
    image: ImagePreprocessing
    text: TextPreprocessing
    runtime: str
    image_tower: str
    text_tower: str
    vectors: tuple[VectorInfo, ...] = ()
    primary_vector: str = ""


# Each limit's default is its setting's default (written once, in EncoderSettings).
_SETTINGS = EncoderSettings.model_fields


@dataclass(frozen=True)
class Limits:
    """What one call may carry, and how long backend calls may take when the caller set no deadline."""

    max_batch_images: int = _SETTINGS["max_batch_images"].default
    max_batch_texts: int = _SETTINGS["max_batch_texts"].default
    max_image_pixels: int = _SETTINGS["max_image_pixels"].default
    max_image_bytes: int = _SETTINGS["max_image_bytes"].default
    max_text_chars: int = _SETTINGS["max_text_chars"].default
    stream_max_in_flight: int = _SETTINGS["stream_max_in_flight"].default
    default_deadline_s: float = _SETTINGS["default_deadline_s"].default

    @classmethod
    def from_settings(cls, settings: EncoderSettings) -> Limits:
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})
