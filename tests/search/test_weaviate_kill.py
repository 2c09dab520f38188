"""Acknowledged means findable: kill -9 Weaviate right after acknowledged writes (issue 17, F1).

The search service (real process) writes N assets into real Weaviate; as soon as the last write is
acknowledged Weaviate gets SIGKILL and is started again on the same data. Every acknowledged asset
must then be found by a near-vector query restricted to its id within a bounded time (the service's
repair watcher re-indexes what Weaviate's HNSW graph lost). Figures: docs/DURABILITY.md.

Run as a script to measure without the repair watcher (the "before" figure):
    .venv/bin/python -m tests.search.test_weaviate_kill --no-repair
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import os
import signal
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import weaviate
from imagesearch.v1 import search_pb2, search_pb2_grpc
from weaviate.classes.init import Auth
from weaviate.classes.query import Filter
from weaviate.exceptions import WeaviateBaseError

from devstack import Stack, StackInfo
from devstack.weaviate import weaviate_api_key
from services.search.backends.weaviate.repair import VectorIndexRepairer, raft_lifetime
from services.search.backends.weaviate.schema import VECTOR_NAME, object_uuid
from tests.search.conftest import weaviate_env
from tests.search.helpers import record, unit
from tests.service_process import ServiceProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
N_ASSETS = 320
BATCH = 8
FINDABLE_WITHIN_S = 60.0


def _write(address: str, tenant: str, vectors: dict[str, np.ndarray]) -> list[str]:
    """Upsert every asset (4 writers, BATCH per call); the ids whose write was acknowledged."""
    stub = search_pb2_grpc.SearchServiceStub(grpc.insecure_channel(address))
    ids = list(vectors)

    def send(batch: list[str]) -> list[str]:
        req = search_pb2.UpsertAssetsRequest(tenant=tenant, assets=[record(a, vectors[a]) for a in batch])
        resp = stub.UpsertAssets(req, timeout=60)
        return [a for a, r in zip(batch, resp.results, strict=True) if not r.HasField("error")]

    with cf.ThreadPoolExecutor(4) as pool:
        return [
            a
            for acked in pool.map(send, [ids[i : i + BATCH] for i in range(0, len(ids), BATCH)])
            for a in acked
        ]


def hnsw_wal_node_ids(data: bytes) -> set[int]:
    """Node ids with an AddNode record in a raw HNSW commit log of Weaviate 1.39
    (record layouts: vector/hnsw/compact/wal_writer.go). Raises on a torn or unknown record."""
    fixed = {0: 11, 1: 11, 2: 19, 4: 9, 5: 9, 6: 9, 7: 9, 8: 1, 9: 11}  # by commit type
    ids: set[int] = set()
    i = 0
    while i < len(data):
        kind = data[i]
        if kind == 0:
            ids.add(struct.unpack_from("<Q", data, i + 1)[0])
        if kind in fixed:
            size = fixed[kind]
        elif kind in (3, 10):  # ReplaceLinksAtLevel, AddLinksAtLevel: a uint16 count of uint64 targets
            size = 13 + 8 * struct.unpack_from("<H", data, i + 11)[0]
        else:
            raise ValueError(f"unknown record type {kind} at byte {i}")
        if i + size > len(data):
            raise ValueError(f"torn record at byte {i}")
        i += size
    return ids


def _kill(stack: Stack) -> None:
    pid = stack.status()["weaviate"].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)


def _kill_and_restart(stack: Stack) -> StackInfo:
    _kill(stack)
    stack.stop("weaviate")  # records the dead process as stopped; keeps the ports for start()
    return stack.start("weaviate")


def _unfindable(
    info: StackInfo, collection: str, tenant: str, vectors: dict[str, np.ndarray], ids: list[str]
) -> list[str]:
    client = weaviate.connect_to_local(
        host=info.host,
        port=info.weaviate_http_port or 0,
        grpc_port=info.weaviate_grpc_port or 0,
        auth_credentials=Auth.api_key(weaviate_api_key()),
    )
    try:
        col = client.collections.get(collection).with_tenant(tenant)
        out = []
        for a in ids:
            try:
                res = col.query.near_vector(
                    near_vector=vectors[a].tolist(),
                    target_vector=VECTOR_NAME,
                    filters=Filter.by_id().equal(object_uuid(tenant, a)),
                    limit=1,
                )
            except WeaviateBaseError:  # just restarted: the tenant's index may still be loading
                out.append(a)
                continue
            if not res.objects:
                out.append(a)
        return out
    finally:
        client.close()


def run_kill(stack: Stack, info: StackInfo, repair: bool, wait_s: float) -> tuple[int, int, list[str], float]:
    """(acknowledged, unfindable right after restart, unfindable at the end, seconds until all found)."""
    collection = f"Kill{uuid.uuid4().hex[:12]}"
    tenant = f"t{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng()
    vectors = {f"asset-{i}": unit(rng) for i in range(N_ASSETS)}
    env = {
        **weaviate_env(info, collection),
        "IMAGESEARCH_SEARCH_CACHE": "memory",
        "IMAGESEARCH_SEARCH_WEAVIATE_REPAIR_INTERVAL_S": "1" if repair else "0",
    }
    svc = ServiceProcess("services.search", env=env).start()
    try:
        acked = _write(svc.address, tenant, vectors)
        before = (info.weaviate_http_port, info.weaviate_grpc_port)
        info = _kill_and_restart(stack)
        t0 = time.monotonic()
        if (info.weaviate_http_port, info.weaviate_grpc_port) != before:
            # devstack had to move Weaviate to other ports (another process took one meanwhile): the
            # service is pointed at the new ones by a restart, whose start-up pass repairs instead.
            svc.stop()
            svc = ServiceProcess("services.search", env={**env, **weaviate_env(info, collection)}).start()
        first = _unfindable(info, collection, tenant, vectors, acked)
        missing = first
        while missing and time.monotonic() - t0 < wait_s:
            time.sleep(1.0)
            missing = _unfindable(info, collection, tenant, vectors, missing)
        return len(acked), len(first), missing, time.monotonic() - t0
    finally:
        svc.stop()


@pytest.fixture
def own_weaviate(tmp_path: Path) -> Iterator[tuple[Stack, StackInfo]]:
    """A Weaviate of this test's own (state under tmp_path): the kill and the restart, which may move
    it to other ports, must not touch the session's shared stack."""
    if os.environ.get("IMAGESEARCH_SKIP_STACK", "") not in ("", "0"):
        pytest.skip("IMAGESEARCH_SKIP_STACK is set")
    stack = Stack(tmp_path)
    info = stack.up(only="weaviate")
    try:
        yield stack, info
    finally:
        stack.down(only="weaviate", purge=True)


@pytest.mark.integration
def test_every_acknowledged_asset_is_findable_after_weaviate_kill9(
    own_weaviate: tuple[Stack, StackInfo],
) -> None:
    stack, info = own_weaviate
    acked, _first, missing, _took = run_kill(stack, info, repair=True, wait_s=FINDABLE_WITHIN_S)
    assert acked == N_ASSETS
    assert (
        missing == []
    ), f"{len(missing)} of {acked} acknowledged assets not findable {FINDABLE_WITHIN_S}s after restart"


def test_hnsw_wal_parser_reads_node_records_and_rejects_a_torn_tail() -> None:
    add_node = bytes([0]) + struct.pack("<QH", 7, 0)
    links = bytes([3]) + struct.pack("<QHH", 7, 0, 2) + struct.pack("<QQ", 1, 2)
    assert hnsw_wal_node_ids(add_node + links + bytes([1]) + struct.pack("<QH", 7, 0)) == {7}
    with pytest.raises(ValueError, match="torn"):
        hnsw_wal_node_ids(add_node + links[:-3])


def test_raft_lifetime_changes_with_the_term() -> None:
    def stats(term: str, first: int) -> dict[str, object]:
        return {"statistics": [{"name": "node1", "initialLastAppliedIndex": first, "raft": {"term": term}}]}

    assert raft_lifetime(stats("7", 20)) == raft_lifetime(stats("7", 20))
    assert raft_lifetime(stats("7", 20)) != raft_lifetime(stats("8", 25))
    assert raft_lifetime({"statistics": []}) is None
    assert raft_lifetime({}) is None


def inspect_wal(stack: Stack, info: StackInfo) -> None:
    """Write, SIGKILL, and count AddNode records in the shard's HNSW commit log before any restart."""
    collection = f"Kill{uuid.uuid4().hex[:12]}"
    tenant = f"t{uuid.uuid4().hex[:8]}"
    vectors = {f"asset-{i}": unit(np.random.default_rng()) for i in range(N_ASSETS)}
    env = {
        **weaviate_env(info, collection),
        "IMAGESEARCH_SEARCH_CACHE": "memory",
        "IMAGESEARCH_SEARCH_WEAVIATE_REPAIR_INTERVAL_S": "0",
    }
    with ServiceProcess("services.search", env=env) as svc:
        acked = _write(svc.address, tenant, vectors)
        _kill(stack)
    wal_dir = (
        REPO_ROOT / ".stack/data/weaviate" / collection.lower() / tenant / "vectors_image.hnsw.commitlog.d"
    )
    ids: set[int] = set()
    for f in sorted(wal_dir.iterdir()):
        if f.name.isdigit():  # raw files; snapshots and compacted segments have suffixes
            ids |= hnsw_wal_node_ids(f.read_bytes())
    print(
        f"acknowledged {len(acked)}; AddNode records on disk after SIGKILL: {len(ids)} "
        f"(highest node id {max(ids, default=-1)})"
    )
    stack.stop("weaviate")
    stack.start("weaviate")


def measure_pass(info: StackInfo, n: int, dim: int = 256) -> None:
    """Time one repair pass over a collection of n assets (nothing to repair: the checking cost)."""
    collection = f"Cost{uuid.uuid4().hex[:12]}"
    tenant = f"t{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng()
    env = {
        **weaviate_env(info, collection),
        "IMAGESEARCH_SEARCH_CACHE": "memory",
        "IMAGESEARCH_SEARCH_WEAVIATE_REPAIR_INTERVAL_S": "0",
    }
    with ServiceProcess("services.search", env=env) as svc:
        stub = search_pb2_grpc.SearchServiceStub(grpc.insecure_channel(svc.address))
        for i in range(0, n, 200):
            batch = [record(f"asset-{j}", unit(rng, dim)) for j in range(i, min(n, i + 200))]
            stub.UpsertAssets(search_pb2.UpsertAssetsRequest(tenant=tenant, assets=batch), timeout=120)

    async def one_pass() -> tuple[int, float]:
        repairer = VectorIndexRepairer(
            info.host,
            info.weaviate_http_port or 0,
            info.weaviate_grpc_port or 0,
            collection,
            500,
            30.0,
            api_key=weaviate_api_key(),
        )
        start = time.perf_counter()
        report = await repairer.repair_all()
        took = time.perf_counter() - start
        await repairer.close()
        return report.checked, took

    checked, took = asyncio.run(one_pass())
    print(f"repair pass over {checked} assets of {dim} dimensions: {took:.1f}s ({checked / took:.0f}/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-repair", action="store_true", help="turn the service's repair watcher off")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--wait-s", type=float, default=FINDABLE_WITHIN_S)
    parser.add_argument(
        "--inspect-wal", action="store_true", help="count the HNSW commit log's node records after SIGKILL"
    )
    parser.add_argument("--pass-cost", type=int, default=0, help="time one repair pass over this many assets")
    args = parser.parse_args()
    stack = Stack(REPO_ROOT)
    info = stack.up(only="redis,weaviate")
    if args.pass_cost:
        measure_pass(info, args.pass_cost)
        return
    if args.inspect_wal:
        for _ in range(args.runs):
            inspect_wal(stack, info)
            info = stack.info(only="redis,weaviate")
        return
    for run in range(args.runs):
        acked, first, missing, took = run_kill(stack, info, repair=not args.no_repair, wait_s=args.wait_s)
        info = stack.info(only="redis,weaviate")
        print(
            f"run {run + 1}: acknowledged {acked}; unfindable right after restart {first}; "
            f"unfindable after {took:.1f}s: {len(missing)}"
        )


if __name__ == "__main__":
    main()
