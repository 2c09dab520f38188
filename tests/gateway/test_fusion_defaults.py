"""The gateway's fusion defaults: the caller's, else the model package card's, else the settings'."""

from __future__ import annotations

import json
from pathlib import Path

from services.gateway.domain import ModelRef
from services.gateway.fusion_defaults import FusionChooser, FusionDefaults, read_package_defaults
from services.gateway.search_flow import REPO_ROOT


def test_the_photo_package_card_gives_calibrated_defaults() -> None:
    card = json.loads((REPO_ROOT / "models/photo/package/package.json").read_text())
    found = read_package_defaults(REPO_ROOT / "models")
    text_query = card["fusion_defaults"]["text_query"]
    assert found[card["name"]] == FusionDefaults(
        text_query["hybrid_alpha"], text_query["fusion"], f"package {card['name']}"
    )
    assert found[card["name"]].fusion == "adaptive"


def test_caller_then_package_then_settings(tmp_path: Path) -> None:
    (tmp_path / "p/package").mkdir(parents=True)
    (tmp_path / "p/package/package.json").write_text(
        json.dumps(
            {"name": "pkg", "fusion_defaults": {"text_query": {"hybrid_alpha": 0.3, "fusion": "ranked"}}}
        )
    )
    (tmp_path / "bad/package").mkdir(parents=True)
    (tmp_path / "bad/package/package.json").write_text(
        json.dumps({"name": "bad", "fusion_defaults": {"text_query": {"hybrid_alpha": 3, "fusion": "max"}}})
    )
    chooser = FusionChooser(FusionDefaults(0.4, "adaptive", "settings"), read_package_defaults(tmp_path))
    assert set(chooser.by_package) == {"pkg"}  # unusable defaults are ignored (settings apply)
    assert chooser.choose(None, None, ModelRef("pkg", "1")) == (0.3, "ranked")
    assert chooser.choose(0.9, None, ModelRef("pkg", "1")) == (0.9, "ranked")
    assert chooser.choose(None, "adaptive", ModelRef("pkg", "1")) == (0.3, "adaptive")
    assert chooser.choose(None, None, ModelRef("other", "1")) == (0.4, "adaptive")
    assert chooser.choose(None, None, None) == (0.4, "adaptive")
