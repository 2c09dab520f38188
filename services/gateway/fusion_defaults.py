"""Which alpha and fusion a search runs with: the caller's, else the model package's calibrated
defaults (`fusion_defaults.text_query` in its package.json, recorded in its model card), else the
gateway's settings.

The package is the one the encoder reports for the query's embedding (its model name), so the
defaults follow the collection's model; a package without fusion defaults falls back to settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import structlog

from services.gateway.domain import FUSIONS, ModelRef

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class FusionDefaults:
    alpha: float
    fusion: str  # one of domain.FUSIONS
    source: str  # where they come from, for logs and docs: "package NAME" or "settings"


def read_package_defaults(models_dir: Path) -> dict[str, FusionDefaults]:
    """{package name: its text-query fusion defaults} for every package.json under `models_dir`."""
    found: dict[str, FusionDefaults] = {}
    for manifest in sorted(models_dir.glob("*/package/package.json")):
        try:
            card = json.loads(manifest.read_text())
            text_query = card.get("fusion_defaults", {}).get("text_query", {})
            alpha = float(text_query["hybrid_alpha"])
            fusion = str(text_query.get("fusion", "adaptive"))
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            continue  # no (usable) defaults: the settings apply to this package
        if fusion not in FUSIONS or not 0.0 <= alpha <= 1.0:
            log.warning("package_fusion_defaults_ignored", manifest=str(manifest), alpha=alpha, fusion=fusion)
            continue
        found[str(card["name"])] = FusionDefaults(alpha, fusion, f"package {card['name']}")
    return found


class FusionChooser:
    """The alpha and fusion of one text query, from the caller, the package or the settings."""

    def __init__(self, settings_default: FusionDefaults, by_package: dict[str, FusionDefaults]) -> None:
        self.settings_default = settings_default
        self.by_package = by_package

    def defaults_for(self, model: ModelRef | None) -> FusionDefaults:
        if model is not None and model.name in self.by_package:
            return self.by_package[model.name]
        return self.settings_default

    def choose(self, alpha: float | None, fusion: str | None, model: ModelRef | None) -> tuple[float, str]:
        base = self.defaults_for(model)
        return (base.alpha if alpha is None else alpha), (base.fusion if fusion is None else fusion)
