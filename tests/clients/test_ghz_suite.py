"""bench/ghz: the load suite's own logic, and one real (smoke-sized) ghz run against the contract fake.

No timing is asserted: only that the suite drives ghz correctly (protoset, metadata, data, bounds) and
summarises what ghz reports.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bench.ghz import run as ghz_run
from bench.ghz import workload
from tests.clients.fake_gateway import FakeGatewayServer

REPO = Path(__file__).resolve().parents[2]


def test_only_loopback_targets_are_accepted() -> None:
    for ok in ("127.0.0.1:50070", "127.1.2.3:1", "[::1]:50070", "localhost:50070"):
        ghz_run.check_loopback(ok)
    for bad in ("10.0.0.5:50070", "gateway.example.com:443", "0.0.0.0:50070"):
        with pytest.raises(SystemExit, match="loopback"):
            ghz_run.check_loopback(bad)


def test_summary_uses_nearest_rank_percentiles_over_the_expected_status() -> None:
    ms = 1_000_000
    details = [{"latency": (i + 1) * ms, "status": "OK", "error": ""} for i in range(100)]
    details += [{"latency": 500 * ms, "status": "Unavailable", "error": "connection refused"}] * 4
    report = {
        "count": 104,
        "rps": 52.0,
        "total": 2 * 10**9,
        "details": details,
        "errorDistribution": {"connection refused": 4},
    }
    s = ghz_run.summarise(report, "OK")
    assert (
        s["latency_ms"]["p50"] == 50.0 and s["latency_ms"]["p95"] == 95.0 and s["latency_ms"]["p99"] == 99.0
    )
    assert s["latency_all_ms"]["max"] == 500.0
    assert s["status_distribution"] == {"OK": 100, "UNAVAILABLE": 4}
    assert s["unexpected"] == 4 and s["error_distribution"] == {"connection refused": 4}


def test_unique_image_template_keeps_the_picture_and_changes_the_hash() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (31, 17), (200, 30, 30)).save(buf, "PNG")
    png = buf.getvalue()
    template = workload.unique_image_template(png)
    prefix = template.removesuffix("{{ .UUID | b64enc }}")
    assert prefix != template

    def render(uuid: str) -> bytes:  # what ghz's template + JSON decoding produce
        return base64.b64decode(prefix + base64.b64encode(uuid.encode()).decode(), validate=True)

    a, b = render("0f8fad5b-d9cb-469f-a165-70867728950e"), render("7c9e6679-7425-40de-944b-e07fc1f90ae7")
    assert hashlib.sha256(a).digest() != hashlib.sha256(b).digest()
    for data in (a, b):
        with Image.open(io.BytesIO(data)) as img:
            assert img.size == (31, 17) and img.getpixel((3, 3)) == (200, 30, 30)


@pytest.mark.skipif(not workload.MANIFEST.exists(), reason="no open image data: tools/models/fetch_data.py")
def test_smoke_run_against_the_contract_fake(tmp_path: Path) -> None:
    ghz = shutil.which("ghz") or str(
        Path(
            subprocess.run(
                [str(REPO / "scripts/install_tools.sh"), "--print-bin"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        / "ghz"
    )
    if not Path(ghz).exists():
        pytest.skip("ghz is not installed: scripts/install_tools.sh ghz")
    with FakeGatewayServer({"bench-key"}) as fake:
        rc = ghz_run.main(
            [
                "--gateway",
                fake.address,
                "--api-key",
                "bench-key",
                "--ghz",
                ghz,
                "--profile",
                "smoke",
                "--only",
                "gateway.*",
                "--out",
                str(tmp_path),
            ]
        )
        assert rc == 0
        summary = json.loads((tmp_path / "summary.json").read_text())
        by_name = {s["name"]: s for s in summary["scenarios"]}
        # Real images with per-call trailing bytes: every streamed image decoded and none was a duplicate.
        ingest = by_name["gateway.ingest"]
        assert ingest["status_distribution"] == {"OK": ingest["count"]}
        stored = fake.servicer.seen.ingested
        assert len(stored) == ingest["count"] * 4 == len({s.sha256 for s in stored})
        assert ingest["items_stored"] == f"{len(stored)}/{len(stored)}"
        assert by_name["gateway.get_asset"]["status_distribution"] == {
            "OK": by_name["gateway.get_asset"]["count"]
        }
        assert by_name["gateway.search_invalid"]["status_distribution"] == {
            "INVALID_ARGUMENT": by_name["gateway.search_invalid"]["count"]
        }
        assert by_name["gateway.search_text"]["count"] == 40 and by_name["gateway.health"]["count"] == 200
        assert set(fake.servicer.seen.authorization) == {"Bearer bench-key"}
        assert not fake.servicer.assets, "the run deletes what it ingested"
    assert summary["cleanup"] == {"gateway_deleted": len(stored)}
    raw = json.loads((tmp_path / "raw/gateway.ingest.json").read_text())
    assert raw["options"]["metadata"] == {"authorization": "<redacted>"}
    assert "sha256" in raw["options"]["data"]
    subprocess.run(
        [sys.executable, "-m", "bench.ghz.render", str(tmp_path), "--no-plots"], cwd=REPO, check=True
    )
    assert "`gateway.ingest`" in (tmp_path / "results.md").read_text()
