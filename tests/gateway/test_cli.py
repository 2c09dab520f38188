"""The CLI's pure parts: finding images, sidecar metadata, request building, result table."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from imagesearch.v1 import gateway_pb2

from services import cli


def args(**kw: object) -> argparse.Namespace:
    base = {"license": "CC0-1.0", "owner": "me", "source": ""}
    base.update(kw)
    return argparse.Namespace(**base)


def test_find_images_and_sidecars(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "lion.PNG").write_bytes(b"x")
    (tmp_path / "a" / "lion.txt").write_text("A lion.\nUn lion.\n")
    (tmp_path / "b.jpg").write_bytes(b"y")
    (tmp_path / "b.json").write_text(
        '{"caption": "bee", "tags": ["insect"], "license": "MIT", '
        '"license_expires_at": "2030-01-01T00:00:00+00:00", "popularity": 3}'
    )
    (tmp_path / "my_cat-photo.webp").write_bytes(b"z")
    (tmp_path / "notes.md").write_text("no")
    found = cli.find_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/lion.PNG", "b.jpg", "my_cat-photo.webp"]
    lion = cli.ingest_request(tmp_path, found[0], args())
    assert (lion.asset_id, lion.caption, lion.license.name, lion.owner) == (
        "a/lion.PNG",
        "A lion.",
        "CC0-1.0",
        "me",
    )
    assert lion.source == tmp_path.name and lion.image == b"x" and lion.uri.startswith("file://")
    bee = cli.ingest_request(tmp_path, found[1], args())
    assert (bee.caption, list(bee.tags), bee.license.name, bee.popularity) == ("bee", ["insect"], "MIT", 3.0)
    assert bee.license.expires_at.ToDatetime().year == 2030
    cat = cli.ingest_request(tmp_path, found[2], args(source="phone"))
    assert cat.caption == "my cat photo" and cat.source == "phone"


def test_result_table(capsys: pytest.CaptureFixture[str]) -> None:
    r = gateway_pb2.SearchResult(rerank_notes=["collapsed 1 near-duplicate(s): x (same content)"])
    r.asset.asset_id = "cats/tabby.jpg"
    r.asset.caption = "a tabby cat " * 20
    r.scores.final = 0.91
    r.scores.first_stage_rank = 3
    r.policy.reasons.extend(["tenant acme", "licence MIT allowed, no expiry"])
    cli.print_results([r], degraded=True, reasons=["encoder unavailable"], cached=False, verbose=True)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "DEGRADED: encoder unavailable"
    assert out[2].split()[:2] == ["1", "0.910"] and "cats/tabby.jpg" in out[2] and out[2].endswith("…")
    assert "rerank: collapsed 1" in out[3] and "policy: tenant acme; licence MIT" in out[4]


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["search", "--gateway", "127.0.0.1:1"]) == 2
    assert "give a query text" in capsys.readouterr().err
    assert cli.main(["ingest", str(tmp_path / "missing"), "--quiet"]) == 2
    assert cli.main(["ingest", str(tmp_path), "--quiet"]) == 1  # no images
