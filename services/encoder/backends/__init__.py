"""Model runtime adapters behind one interface (base.EncoderBackend); settings pick one, nothing else
branches on it."""

from __future__ import annotations

from services.common import tls
from services.encoder.backends.base import EncoderBackend, TowerSpec
from services.encoder.package import ModelPackage, load_package
from services.encoder.settings import EncoderSettings


def package_from_settings(settings: EncoderSettings) -> ModelPackage:
    """The model package the settings select (with the int8 image tower when image_variant says so)."""
    return load_package(
        settings.model_package,
        settings.models_dir,
        settings.model_repository,
        variant="" if settings.image_variant == "fp32" else settings.image_variant,
    )


def make_backend(settings: EncoderSettings, package: ModelPackage) -> EncoderBackend:
    if settings.backend == "triton":
        from services.encoder.backends.triton import TritonBackend

        files = tls.cert_files(settings, "encoder") if settings.triton_tls else None
        return TritonBackend(settings.triton_grpc_url, package, settings.triton_request_batch, files)
    from services.encoder.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(
        package,
        intra_op_threads=settings.ort_intra_op_threads,
        max_batch=settings.ort_max_batch,
        allow_spinning=settings.ort_allow_spinning,
    )


__all__ = ["EncoderBackend", "TowerSpec", "make_backend", "package_from_settings"]
