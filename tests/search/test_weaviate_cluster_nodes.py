"""kill -9 of the nodes tests/search/test_weaviate_cluster.py does not kill: node 0 (the one the others
joined the gossip ring through, and often the Raft leader) and node 1 (issue 20, part 1).

The scenario is bench/weaviate_cluster.py's (which prints the figures in docs/SCALING.md): the search
service (real process, replication factor 3, QUORUM writes and reads, talking to a surviving node) takes
an upsert stream and searches; the node gets SIGKILL and is restarted on its ports and data. Checked:
every acknowledged asset is the top hit for its own vector and for its own keyword, no search fails
during the outage, and the restarted node itself holds every acknowledged asset again (a consistency-ONE
read through it, which reads its own copy) within the limit. Held means stored: an asset the victim
returns by id but its id filter does not find is held and reported (`victim_unfilterable`; its vector
index loses the last writes before a kill -9 the same way, F1 in docs/DURABILITY.md, and async
replication, comparing object stores, cannot see either). CI at stop 28 once saw the filter miss 14
assets written at the kill for 90 s; whether they were stored was not recorded then, and 3 local runs
did not repeat it. Async replication runs every 5 s here.
The node status API's object count is not waited for: Weaviate refreshes it lazily, about a minute
behind the data (node 0's xfail of stop 25 was that lag; the copy itself catches up about 10 s after
the restart: docs/SCALING.md).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.weaviate_cluster import run_outage
from devstack.weaviate import weaviate_binary
from devstack.weaviate_cluster import WeaviateCluster
from services.search.backends.weaviate import Replication

CATCH_UP_LIMIT_S = 90.0
FAST_CATCH_UP = {
    "IMAGESEARCH_SEARCH_WEAVIATE_ASYNC_REPLICATION_FREQUENCY_S": "5",
    "IMAGESEARCH_SEARCH_WEAVIATE_ASYNC_REPLICATION_DELAY_S": "5",
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeaviateCluster]:
    if not weaviate_binary().is_file():
        pytest.skip("Weaviate is not built: `python -m devstack prepare` (make test does it)")
    with WeaviateCluster(tmp_path_factory.mktemp("weaviate-cluster"), nodes=3) as c:
        yield c


@pytest.mark.integration
@pytest.mark.parametrize("victim", [0, 1])
def test_kill_9_of_node_loses_nothing_and_the_node_catches_up(cluster: WeaviateCluster, victim: int) -> None:
    report = run_outage(
        cluster,
        victim,
        warmup_s=4.0,
        outage_s=8.0,
        after_s=2.0,
        catch_up_timeout_s=CATCH_UP_LIMIT_S,
        await_node_status=False,  # trails the data by about a minute (bench/weaviate_cluster.py)
        extra_env=FAST_CATCH_UP,
    )
    print(report.line())
    assert report.acknowledged > 0
    assert report.lost_vector == [], f"not found by their vector: {report.lost_vector[:10]}"
    assert report.lost_keyword == [], f"not found by their keyword: {report.lost_keyword[:10]}"
    assert report.searches_during > 0
    assert report.failed_during == 0, report.line()
    assert report.catch_up_s is not None, (
        f"node{victim} still misses {report.victim_missing_at_end} acknowledged assets "
        f"{CATCH_UP_LIMIT_S:.0f}s after it was ready: {report.line()}"
    )


def test_async_replication_timing_reaches_the_collection_config_in_milliseconds() -> None:
    config = Replication(factor=3, async_enabled=True, async_frequency_s=5, async_delay_s=2).config()
    assert (config.factor, config.asyncEnabled) == (3, True)
    assert (config.asyncConfig.frequency, config.asyncConfig.propagationDelay) == (5000, 2000)
    # A single copy has nothing to compare with: no timing is sent.
    assert Replication(factor=1, async_enabled=True).config().asyncConfig is None
