"""One embedded suite (encoder, search, gateway as real processes, internal hops over mutual TLS as
`make run` runs them) for the whole tests/hostile package, seeded with acme's seed assets and globex's
secret (tests/hostile/corpus.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from imagesearch.v1 import gateway_pb2

from tests.gateway.suite import MODEL_FILES, Suite
from tests.hostile import corpus


@pytest.fixture(scope="session")
def hostile_suite(suite_certs: Path) -> Iterator[Suite]:
    absent = [str(p) for p in MODEL_FILES if not p.exists()]
    if absent:
        pytest.fail(f"the demo model is not built ({', '.join(absent)}); see tools/models/README.md")
    suite = Suite("embedded", tls_dir=suite_certs).start()
    try:
        gw = suite.gateway_stub()
        acks = list(gw.Ingest(iter(corpus.SEEDS), metadata=corpus.ALICE, timeout=120))
        acks += list(gw.Ingest(iter([corpus.SECRET]), metadata=corpus.GUS, timeout=120))
        created = gateway_pb2.IngestOutcome.INGEST_OUTCOME_CREATED
        assert [a.outcome for a in acks] == [created] * (len(corpus.SEEDS) + 1), acks
        yield suite
    finally:
        suite.stop()
