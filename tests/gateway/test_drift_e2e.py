"""Drift on the real gateway (encoder, search and gateway processes; embedded defaults and the real
stack): the query drift score read from the gateway's /metrics stays near 0 for more queries of the
reference's family, rises for another in-domain family, rises clearly for a deliberately shifted
(off-domain) query mix, and is back near 0 once a new reference is taken with `imagesearch drift
reference`. Also: taking a reference needs the admin role, and the reference is a file on disk.
"""

from __future__ import annotations

import copy
import json
import random
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from imagesearch.v1 import common_pb2, gateway_pb2
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.suite import KEYRING, MANIFEST, Suite, missing_prerequisites, open_data_sample

ALICE = [("authorization", "Bearer acme-alice")]
ADMIN_KEY = "acme-admin"
ADMIN = [("authorization", f"Bearer {ADMIN_KEY}")]
QUERIES_PER_PHASE = 40

# Off-domain text for the shifted mix: the index and the reference queries are clip art and emoji.
_SHIFT_WORDS = (
    "quarterly revenue forecast ledger invoice audit compliance kubernetes eviction policy latency "
    "mortgage refinance escrow actuarial tariff subpoena arbitration firmware checksum dividend "
    "procurement spreadsheet amortisation jurisdiction telemetry payroll"
).split()


def _captions(prefix: str) -> list[str]:
    rows = [json.loads(line) for line in MANIFEST.read_text().splitlines() if line.strip()]
    return sorted({r["caption"] for r in rows if r["caption"].lower().startswith(prefix)})


def _shifted(n: int, rng: random.Random) -> list[str]:
    return [" ".join(rng.sample(_SHIFT_WORDS, 4)) for _ in range(n)]


@pytest.fixture(scope="module", params=["embedded", pytest.param("stack", marks=pytest.mark.integration)])
def suite(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Suite, Path]]:
    why = missing_prerequisites()
    if why:
        pytest.skip(why)
    stack = request.getfixturevalue("stack") if request.param == "stack" else None
    keyring: dict[str, Any] = copy.deepcopy(KEYRING)
    keyring["api_keys"][ADMIN_KEY] = {"tenant": "acme", "subject": "ada", "roles": ["admin"]}
    references = tmp_path_factory.mktemp("drift-references")
    env = {
        "IMAGESEARCH_GATEWAY_API_KEYS_JSON": json.dumps(keyring),
        "IMAGESEARCH_GATEWAY_DRIFT_REFERENCE_DIR": str(references),
        # A phase of 40 queries is four half-lives: the running statistics follow the phase.
        "IMAGESEARCH_GATEWAY_DRIFT_HALF_LIFE": "10",
        "IMAGESEARCH_GATEWAY_DRIFT_MIN_SAMPLES": "100000",  # references only when the test takes them
        "IMAGESEARCH_GATEWAY_SAFETY_ENABLED": "false",  # analysis is not what this test is about
        "IMAGESEARCH_GATEWAY_OCR_ENABLED": "false",
    }
    s = Suite(request.param, stack, gateway_env=env).start()
    try:
        sample = open_data_sample()
        s.ingest_all_created(
            (
                gateway_pb2.IngestRequest(
                    asset_id=i.asset_id,
                    image=i.data,
                    caption=i.caption,
                    license=common_pb2.License(name=i.license),
                )
                for i in sample
            ),
            ALICE,
        )
        yield s, references
    finally:
        s.stop()


def _search_all(suite: Suite, queries: list[str]) -> None:
    stub = suite.gateway_stub()
    for q in queries:
        resp = stub.Search(gateway_pb2.SearchRequest(text=q, page_size=5), metadata=ALICE, timeout=30)
        assert not resp.degraded, resp.degraded_reasons


def _drift(suite: Suite, stream: str = "query") -> dict[str, float]:
    """The acme tenant's gateway_drift_* gauges of `stream`, by metric name."""
    assert suite.gateway is not None
    url = f"http://127.0.0.1:{suite.gateway.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name.startswith("gateway_drift_")
                and sample.labels.get("tenant") == "acme"
                and sample.labels.get("stream") == stream
            ):
                out[sample.name.removeprefix("gateway_drift_")] = sample.value
    return out


def test_taking_a_reference_needs_the_admin_role(suite: tuple[Suite, Path]) -> None:
    stub = suite[0].gateway_stub()
    with pytest.raises(grpc.RpcError) as err:
        stub.TakeDriftReference(gateway_pb2.TakeDriftReferenceRequest(), metadata=ALICE, timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "admin" in (err.value.details() or "")


def test_drift_reacts_to_a_shifted_query_mix(
    suite: tuple[Suite, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from services import cli

    s, references = suite
    assert s.gateway is not None
    rng = random.Random(11)
    flags = _captions("flag of")
    rng.shuffle(flags)
    faces = _captions("face ") + _captions("smiling") + _captions("grinning")
    rng.shuffle(faces)
    assert len(flags) >= 2 * QUERIES_PER_PHASE and len(faces) >= QUERIES_PER_PHASE

    # The images ingested form the image stream; the reference queries are flags.
    _search_all(s, flags[:QUERIES_PER_PHASE])
    resp = s.gateway_stub().TakeDriftReference(
        gateway_pb2.TakeDriftReferenceRequest(), metadata=ADMIN, timeout=10
    )
    kinds = {st.kind: st for st in resp.streams}
    assert set(kinds) == {gateway_pb2.DRIFT_STREAM_KIND_IMAGE, gateway_pb2.DRIFT_STREAM_KIND_QUERY}
    assert kinds[gateway_pb2.DRIFT_STREAM_KIND_QUERY].samples == QUERIES_PER_PHASE
    assert not kinds[gateway_pb2.DRIFT_STREAM_KIND_QUERY].HasField("drift_score")  # the first reference
    assert len(list(references.rglob("*.json"))) == 1
    assert _drift(s)["score"] == pytest.approx(0.0, abs=1e-6)

    _search_all(s, flags[QUERIES_PER_PHASE : 2 * QUERIES_PER_PHASE])
    same = _drift(s)
    _search_all(s, faces[:QUERIES_PER_PHASE])
    family = _drift(s)
    _search_all(s, _shifted(QUERIES_PER_PHASE, rng))
    shifted = _drift(s)

    common = ["--gateway", s.gateway.address, "--api-key", ADMIN_KEY]
    assert cli.main(["drift", "reference", *common]) == 0
    out = capsys.readouterr().out
    assert "query: 160 samples, drift before: " in out, out
    _search_all(s, _shifted(QUERIES_PER_PHASE // 2, rng))
    after = _drift(s)

    scores = [round(x["score"], 3) for x in (same, family, shifted, after)]
    print(
        f"drift score: same family {scores[0]}, other family {scores[1]}, shifted {scores[2]}, "
        f"after a new reference {scores[3]}"
    )
    assert same["score"] < 0.1, scores
    assert shifted["score"] > 0.3 and shifted["score"] > 3 * same["score"], scores
    assert family["score"] > 3 * same["score"], scores
    assert after["score"] < 0.1, scores
    assert shifted["centroid_shift"] > same["centroid_shift"]
