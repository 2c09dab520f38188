"""The bounded CI version of `make chaos` (tools/chaos, docs/CHAOS.md): one run each of kill -9 of Weaviate,
the search service and the encoder in the middle of an ingest stream with searches under load, on the real
stack. Every acknowledged item must be stored and findable (vector and keyword) exactly once, FAILED must
mean not stored, UNCERTAIN must be safe to resend, searches must fail fast during the outage, and the suite
must serve normally within 10 s of the component's return.

One run per component (a module-scoped fixture); each test asserts one promise of it, so a known defect
is marked on exactly its own assertion.
"""

from __future__ import annotations

from typing import Any

import pytest

from devstack import REPO_ROOT, Stack, StackInfo
from tools.chaos.harness import RunConfig, run_once

pytestmark = pytest.mark.integration

COMPONENTS = {"weaviate": 101, "search": 102, "encoder": 103}  # component -> seed
FAILING_SEARCH_P99_MS = 250.0
RECOVERY_S = 10.0


@pytest.fixture(scope="module", params=list(COMPONENTS))
def run(request: pytest.FixtureRequest, stack: StackInfo) -> dict[str, Any]:
    component = request.param
    config = RunConfig(
        component=component, items=80, outage_s=2.0, run_deadline_s=150.0, seed=COMPONENTS[component]
    )
    return run_once(Stack(REPO_ROOT), stack, config)


def brief(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "config"}


def test_every_item_ends_acknowledged_and_stored_once(run: dict[str, Any]) -> None:
    assert run["killed"], brief(run)
    # The client resends what failed for a passing reason: every item ends acknowledged.
    assert run["acknowledged"] == run["sent"], brief(run)
    assert run["lost_not_stored"] == 0, brief(run)
    assert run["duplicated"] == 0, brief(run)


def test_acknowledged_items_are_found_by_keyword(run: dict[str, Any]) -> None:
    assert run["lost_not_in_keyword_index"] == 0, brief(run)


def test_acknowledged_items_are_found_by_vector(run: dict[str, Any]) -> None:
    assert run["lost_not_in_vector_index"] == 0, brief(run)


def test_failed_means_not_stored(run: dict[str, Any]) -> None:
    assert run["failed_but_stored"] == 0, brief(run)


def test_uncertain_is_safe_to_resend(run: dict[str, Any]) -> None:
    assert run["uncertain_resend_not_stored_once"] == 0, brief(run)


def test_searches_fail_fast_during_the_outage_and_recover_within_10_s(run: dict[str, Any]) -> None:
    outage = run["outage_searches"]
    assert outage["count"] > 0, brief(run)
    assert set(outage["codes"]) <= {"OK", "UNAVAILABLE"}, brief(run)
    failing_p99 = outage["failing_p99_ms"]
    assert failing_p99 is None or failing_p99 <= FAILING_SEARCH_P99_MS, brief(run)
    assert run["recovery_s"] is not None and run["recovery_s"] <= RECOVERY_S, brief(run)
