"""Encoder settings (env prefix IMAGESEARCH_ENCODER_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.balancing import BackendAddress
from services.common.settings import ServiceSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


class EncoderSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="IMAGESEARCH_ENCODER_", extra="ignore", validate_default=True
    )

    backend: Literal["onnxruntime", "triton"] = Field(
        "onnxruntime",
        description=(
            "Model runtime: 'onnxruntime' runs the ONNX files of model_repository in-process (the embedded "
            "default); 'triton' calls Triton Inference Server at triton_grpc_url."
        ),
    )
    model_package: str = Field(
        "photo",
        description=(
            "The model package to serve: a directory holding package.json, or a name under models/ "
            "('photo': the photo-aware default, 'demo': the clip-art model). The package says the towers, "
            "tokenizer, preprocessing and named vectors."
        ),
    )
    models_dir: Path = Field(
        REPO_ROOT / "models", description="Where model_package names are looked up (<name>/package/)."
    )
    model_repository: Path = Field(
        REPO_ROOT / "triton_models",
        description=(
            "Triton model repository; a package tower without a file of its own is "
            "<triton_model>/<version>/model.onnx here (backend=onnxruntime loads it in-process)."
        ),
    )
    image_variant: Literal["fp32", "int8"] = Field(
        "fp32",
        description=(
            "int8 serves the package's 'int8' image tower variant (the demo package's: dynamic int8 "
            "quantization of the matrix multiplies, same embedding space) instead of its image tower."
        ),
    )
    triton_grpc_url: BackendAddress = Field(
        "127.0.0.1:8001",
        validation_alias=AliasChoices("IMAGESEARCH_ENCODER_TRITON_GRPC_URL", "IMAGESEARCH_TRITON_GRPC_URL"),
        description="Triton's gRPC host:port, or several Triton instances as ip:port,ip:port or "
        "dns:///name:port, balanced round robin (backend=triton; IMAGESEARCH_TRITON_GRPC_URL also works).",
    )
    triton_tls: bool = Field(
        False,
        description="backend=triton: dial Triton over mutual TLS, trusting only the suite CA and presenting "
        "this service's certificate from tls_dir (Triton started with --grpc-use-ssl --grpc-use-ssl-mutual "
        "and a suite certificate; docs/SECURITY.md).",
    )
    triton_request_batch: int = Field(
        8,
        ge=1,
        description=(
            "backend=triton: a batch is sent as concurrent requests of at most this many items, so "
            "Triton's dynamic batcher can interleave callers and keep its instance busy."
        ),
    )
    max_batch_images: int = Field(64, ge=1, description="Most images one EncodeImages call may carry.")
    max_batch_texts: int = Field(256, ge=1, description="Most texts one EncodeTexts call may carry.")
    max_image_pixels: int = Field(
        40_000_000,
        ge=1,
        description="Largest image accepted, in decoded pixels (width x height), checked before decoding.",
    )
    max_image_bytes: int = Field(
        20 * 1024 * 1024, ge=1, description="Largest encoded image accepted, in bytes (per item)."
    )
    max_text_chars: int = Field(2000, ge=1, description="Longest text accepted, in characters (per item).")
    decode_threads: int = Field(
        2, ge=1, description="Threads decoding and resizing images (Pillow releases the GIL while it works)."
    )
    budget_max_pixels_in_flight: int = Field(
        100_000_000,
        ge=0,
        description=(
            "Decoded pixels (width x height, from the headers) all calls of this process may decode at "
            "once; a call that does not fit waits up to budget_wait_s, then gets RESOURCE_EXHAUSTED with "
            "retry-after-ms. A call above the whole budget runs alone. 0 = unlimited."
        ),
    )
    budget_max_concurrent_calls: int = Field(
        16, ge=0, description="Calls decoding images at once in this process (0 = unlimited)."
    )
    budget_wait_s: float = Field(
        0.5, ge=0, description="Longest wait for the pixel budget before RESOURCE_EXHAUSTED."
    )
    budget_retry_after_s: float = Field(
        1.0, gt=0, description="The retry-after-ms a call refused by the pixel budget is told."
    )
    stream_max_in_flight: int = Field(
        64,
        ge=1,
        description="StreamEncodeImages: most images read ahead and in progress before reading pauses.",
    )
    ort_intra_op_threads: int = Field(
        2, ge=0, description="backend=onnxruntime: ONNX Runtime threads per tower (0 = one per core)."
    )
    ort_max_batch: int = Field(
        32,
        ge=1,
        description=(
            "backend=onnxruntime: most items one in-process run takes; concurrent calls are merged into runs "
            "of up to this size (in-process dynamic batching)."
        ),
    )
    ort_allow_spinning: bool = Field(
        False,
        description=(
            "backend=onnxruntime: let idle ONNX Runtime threads spin-wait for work (faster on dedicated "
            "cores; off leaves the cores to decoding and other processes)."
        ),
    )

    @model_validator(mode="after")
    def _triton_tls_needs_certificates(self) -> EncoderSettings:
        if self.triton_tls and self.tls_dir is None:
            raise ValueError("triton_tls needs tls_dir: the certificate directory it presents to Triton")
        return self
