"""The bounded CI version of `make chaos` (tools/chaos, docs/CHAOS.md): one run each of kill -9 of Weaviate,
the search service and the encoder in the middle of an ingest stream with searches under load, on the real
stack. Every acknowledged item must be stored and findable (vector and keyword) exactly once, FAILED must
mean not stored, UNCERTAIN must be safe to resend, searches must fail fast during the outage, and the suite
must serve normally within 10 s of the component's return."""

from __future__ import annotations

from typing import Any

import pytest

from devstack import REPO_ROOT, Stack, StackInfo
from tools.chaos.harness import RunConfig, run_once

pytestmark = pytest.mark.integration

FAILING_SEARCH_P99_MS = 250.0
RECOVERY_S = 10.0


def chaos(stack: StackInfo, component: str, seed: int) -> dict[str, Any]:
    config = RunConfig(component=component, items=60, outage_s=2.0, run_deadline_s=150.0, seed=seed)
    return run_once(Stack(REPO_ROOT), stack, config)


@pytest.mark.parametrize(("component", "seed"), [("weaviate", 101), ("search", 102), ("encoder", 103)])
def test_kill_mid_ingest_loses_and_duplicates_nothing(stack: StackInfo, component: str, seed: int) -> None:
    result = chaos(stack, component, seed)
    summary = {k: v for k, v in result.items() if k not in ("config",)}
    assert result["killed"], summary
    # The client resends what failed for a passing reason: every item ends acknowledged.
    assert result["acknowledged"] == result["sent"], summary
    assert result["lost"] == 0, summary
    assert result["duplicated"] == 0, summary
    assert result["failed_but_stored"] == 0, summary
    assert result["uncertain_resend_not_stored_once"] == 0, summary
    assert result["recovery_s"] is not None and result["recovery_s"] <= RECOVERY_S, summary
    outage = result["outage_searches"]
    assert outage["count"] > 0, summary
    failing_p99 = outage["failing_p99_ms"]
    assert failing_p99 is None or failing_p99 <= FAILING_SEARCH_P99_MS, summary
    assert set(outage["codes"]) <= {"OK", "UNAVAILABLE"}, summary
