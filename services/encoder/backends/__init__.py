"""Model runtime adapters behind one interface (base.EncoderBackend); settings pick one, nothing else
branches on it."""

from __future__ import annotations

from services.encoder.backends.base import EncoderBackend, TowerSpec
from services.encoder.settings import EncoderSettings


def image_model_name(settings: EncoderSettings) -> str:
    """The image tower to serve: the int8 variant is its own model, '<image_model>_int8'."""
    return f"{settings.image_model}_int8" if settings.image_variant == "int8" else settings.image_model


def make_backend(settings: EncoderSettings) -> EncoderBackend:
    image_model = image_model_name(settings)
    if settings.backend == "triton":
        from services.encoder.backends.triton import TritonBackend

        return TritonBackend(
            settings.triton_grpc_url, image_model, settings.text_model, settings.triton_request_batch
        )
    from services.encoder.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(
        settings.model_repository,
        image_model,
        settings.text_model,
        intra_op_threads=settings.ort_intra_op_threads,
        max_batch=settings.ort_max_batch,
        allow_spinning=settings.ort_allow_spinning,
    )


__all__ = ["EncoderBackend", "TowerSpec", "image_model_name", "make_backend"]
