"""Model version names as callers and settings spell them: `name:version` or `name@version`."""

from __future__ import annotations

from services.common.errors import InvalidArgument
from services.gateway.domain import ModelRef


def parse_model(text: str) -> ModelRef:
    """`name:version` or `name@version` (the CLI's spelling) -> ModelRef; INVALID_ARGUMENT otherwise."""
    for sep in ("@", ":"):
        name, found, version = text.rpartition(sep)
        if found and name and version:
            return ModelRef(name, version)
    raise InvalidArgument(f"model version {text[:80]!r} must be NAME@VERSION (or NAME:VERSION)")


def check_model(model: ModelRef, what: str = "model") -> ModelRef:
    if not model.name or not model.version:
        raise InvalidArgument(f"{what} needs a name and a version")
    if len(model.name) > 128 or len(model.version) > 128:
        raise InvalidArgument(f"{what}: name and version are at most 128 characters each")
    return model
