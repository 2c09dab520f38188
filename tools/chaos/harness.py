"""One fault-injection run: the whole suite on the real stack, an ingest stream and searches under load,
kill -9 of one component mid-stream, its restart, then an audit of every acknowledged item.

The suite is real processes (tests/gateway/suite.py, mode "stack": encoder on Triton, search on Weaviate
with the Redis cache) over the devstack components of this clone. Each run uses a fresh Weaviate
collection, so an earlier run cannot satisfy the audit. Every wait is bounded; a run that overruns its
deadline stops streaming and audits what it has.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from imagesearch.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, search_pb2, search_pb2_grpc
from PIL import Image

from devstack import REPO_ROOT, Stack, StackInfo
from services.gateway.settings import GatewaySettings
from tests.gateway.suite import Suite
from tests.service_process import ServiceProcess

STACK_COMPONENTS = ("weaviate", "redis", "triton")
SERVICE_COMPONENTS = ("search", "encoder", "gateway")
COMPONENTS = STACK_COMPONENTS + SERVICE_COMPONENTS
TENANT = "acme"
# How long an acknowledged item may take to become findable after the killed component is back.
FINDABLE_WITHIN_S = 20.0
METADATA = (("authorization", "Bearer acme-alice"),)
ACKNOWLEDGED = {
    gateway_pb2.INGEST_OUTCOME_CREATED,
    gateway_pb2.INGEST_OUTCOME_UPDATED,
    gateway_pb2.INGEST_OUTCOME_UNCHANGED,
    gateway_pb2.INGEST_OUTCOME_DUPLICATE,
}
# Item error codes a client resends after a pause: UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
# ABORTED.
RETRYABLE_ITEM_CODES = {14, 4, 8, 10}
STORED_ON_RESEND = {
    gateway_pb2.INGEST_OUTCOME_CREATED,
    gateway_pb2.INGEST_OUTCOME_UPDATED,
    gateway_pb2.INGEST_OUTCOME_UNCHANGED,
}


@dataclass
class RunConfig:
    component: str
    items: int = 150
    stream_batch: int = 10  # items per Ingest stream; an interrupted stream's unanswered items are resent
    kill_at_fraction: float = 0.3  # kill once this share of the items is answered
    outage_s: float = 3.0  # how long the component stays dead
    search_threads: int = 2
    search_deadline_s: float = 2.0  # the deadline a client gives one search
    run_deadline_s: float = 240.0  # the whole run, audit included
    recovery_wait_s: float = 30.0  # longest wait for the first good search after the restart
    resend_window_s: float = (
        30.0  # how long the client keeps resending items that failed for a passing reason
    )
    seed: int = 0


@dataclass
class Item:
    asset_id: str
    token: str  # unique caption word, for the keyword check
    image: bytes

    def request(self) -> gateway_pb2.IngestRequest:
        return gateway_pb2.IngestRequest(
            asset_id=self.asset_id,
            image=self.image,
            caption=f"chaos item {self.token}",
            license=common_pb2.License(name="MIT"),
            source="chaos",
        )


@dataclass
class SearchSample:
    started: float
    latency_s: float
    code: str  # "OK" or the gRPC status name
    degraded: bool


@dataclass
class Timeline:
    kill: float | None = None
    restart_begin: float | None = None
    restarted: float | None = None  # the component answers again


def make_items(n: int, seed: int) -> list[Item]:
    """Small distinct PNGs (random colour blocks), distinct ids and caption words."""
    rng = np.random.default_rng(seed)
    run = f"{seed:x}{random.Random(seed).getrandbits(24):06x}"
    items = []
    for i in range(n):
        blocks = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(blocks).resize((64, 64), Image.Resampling.NEAREST)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        token = f"kw{run}x{i:04d}"
        items.append(Item(asset_id=f"chaos-{run}-{i:04d}", token=token, image=buf.getvalue()))
    return items


def _name(outcome: int) -> str:
    return gateway_pb2.IngestOutcome.Name(outcome).removeprefix("INGEST_OUTCOME_")


def _p(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class ChaosRun:
    def __init__(self, stack: Stack, info: StackInfo, config: RunConfig) -> None:
        if config.component not in COMPONENTS:
            raise ValueError(f"component must be one of {', '.join(COMPONENTS)}")
        self.stack, self.info, self.cfg = stack, info, config
        self.retry = GatewaySettings()
        self.items = make_items(config.items, config.seed)
        self.by_id = {it.asset_id: it for it in self.items}
        self.outcomes: dict[str, gateway_pb2.IngestResponse] = {}
        self.stream_errors: Counter[str] = Counter()
        self.searches: list[SearchSample] = []
        self.timeline = Timeline()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.suite: Suite | None = None
        self.channels: dict[str, grpc.Channel] = {}
        self.ingest_recovered: float | None = None
        self.resend_rounds = 0
        self.t0 = time.monotonic()
        self.deadline = self.t0 + config.run_deadline_s

    # --- plumbing -----------------------------------------------------------------------------------
    def _left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def _channel(self, address: str) -> grpc.Channel:
        """One channel per address for the whole run: a restarted service keeps its port, so the
        channel reconnects the way a long-lived client's would."""
        with self.lock:
            if address not in self.channels:
                self.channels[address] = grpc.insecure_channel(
                    address,
                    options=[
                        ("grpc.max_receive_message_length", 64 << 20),
                        ("grpc.initial_reconnect_backoff_ms", 100),
                        ("grpc.max_reconnect_backoff_ms", 1000),
                    ],
                )
            return self.channels[address]

    def _gateway(self) -> gateway_pb2_grpc.GatewayServiceStub:
        assert self.suite is not None and self.suite.gateway is not None
        return gateway_pb2_grpc.GatewayServiceStub(self._channel(self.suite.gateway.address))

    def _search(self) -> search_pb2_grpc.SearchServiceStub:
        assert self.suite is not None and self.suite.search is not None
        return search_pb2_grpc.SearchServiceStub(self._channel(self.suite.search.address))

    def _backoff(self, attempt: int) -> float:
        base = self.retry.retry_initial_backoff_s * (2**attempt)
        return random.uniform(0, min(self.retry.retry_max_backoff_s, base))

    # --- the fault ----------------------------------------------------------------------------------
    def _kill(self) -> None:
        name = self.cfg.component
        assert self.suite is not None
        if name in STACK_COMPONENTS:
            pid = self.stack.status()[name].pid
            assert pid is not None, f"{name} is not running"
            os.kill(pid, signal.SIGKILL)
        else:
            proc: ServiceProcess = getattr(self.suite, name)
            assert proc.proc is not None
            proc.proc.kill()
            proc.proc.wait(10)

    def _restart(self) -> None:
        name = self.cfg.component
        assert self.suite is not None
        if name in STACK_COMPONENTS:
            self.stack.stop(name)  # reaps the killed process and its group (Triton's stubs); keeps ports
            self.stack.start(name)
            return
        old: ServiceProcess = getattr(self.suite, name)
        new = ServiceProcess(old.module, env=old.env)  # old.env pins the same ports
        new.port, new.metrics_port = old.port, old.metrics_port
        new.start(timeout_s=min(120.0, self._left()))
        setattr(self.suite, name, new)

    def _fault(self, answered: Callable[[], int]) -> None:
        kill_at = max(1, int(self.cfg.items * self.cfg.kill_at_fraction))
        while answered() < kill_at and not self.stop.is_set() and self._left() > 0:
            time.sleep(0.02)
        if self.stop.is_set() or self._left() <= 0:
            return
        self.timeline.kill = time.monotonic()
        self._kill()
        self.stop.wait(self.cfg.outage_s)
        self.timeline.restart_begin = time.monotonic()
        self._restart()
        self.timeline.restarted = time.monotonic()

    # --- load ---------------------------------------------------------------------------------------
    def _search_loop(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set() and self._left() > 0:
            done = list(self.outcomes)[:200]
            word = self.by_id[rng.choice(done)].token if done else "chaos"
            request = gateway_pb2.SearchRequest(text=f"item {word}", page_size=5)
            started = time.monotonic()
            try:
                resp = self._gateway().Search(request, metadata=METADATA, timeout=self.cfg.search_deadline_s)
                sample = SearchSample(started, time.monotonic() - started, "OK", resp.degraded)
            except grpc.RpcError as exc:
                sample = SearchSample(started, time.monotonic() - started, exc.code().name, False)
            with self.lock:
                self.searches.append(sample)
            self.stop.wait(0.05)

    def _ingest(self, items: list[Item], record: dict[str, gateway_pb2.IngestResponse]) -> None:
        """Streams `items` in batches; a broken stream's unanswered items are resent with backoff, the
        way a client holding the items would, until answered or out of attempts or time."""
        pending = list(items)
        attempts: Counter[str] = Counter()
        max_attempts = 50  # spans a restart of any component with the backoff below
        failures = 0
        while pending and self._left() > 5:
            batch = pending[: self.cfg.stream_batch]
            for it in batch:
                attempts[it.asset_id] += 1
            try:
                responses = self._gateway().Ingest(
                    iter([it.request() for it in batch]), metadata=METADATA, timeout=min(30.0, self._left())
                )
                for resp in responses:
                    record[resp.asset_id] = resp
                failures = 0
            except grpc.RpcError as exc:
                self.stream_errors[exc.code().name] += 1
                failures += 1
                time.sleep(max(self._backoff(min(failures, 6)), 0.05 * min(failures, 10)))
            pending = [
                it for it in pending if it.asset_id not in record and attempts[it.asset_id] < max_attempts
            ]

    # --- the run ------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.suite = Suite("stack", self.info).start()
        try:
            return self._run()
        finally:
            self.stop.set()
            for channel in self.channels.values():
                channel.close()
            self.suite.stop()
            if self.cfg.component in STACK_COMPONENTS and self.stack.status()[self.cfg.component].pid is None:
                self.stack.start(self.cfg.component)

    def _run(self) -> dict[str, Any]:
        threads = [
            threading.Thread(target=self._search_loop, args=(self.cfg.seed * 100 + i,), daemon=True)
            for i in range(self.cfg.search_threads)
        ]
        fault = threading.Thread(target=self._fault, args=(lambda: len(self.outcomes),), daemon=True)
        for t in (*threads, fault):
            t.start()
        self._ingest(self.items, self.outcomes)
        fault.join(timeout=max(1.0, self._left()))
        recovery_s = self._wait_recovery()
        self.stop.set()
        for t in threads:
            t.join(timeout=self.cfg.search_deadline_s + 1)
        audit = self._audit()
        return self._report(recovery_s, audit)

    def _wait_recovery(self) -> float | None:
        """Seconds from the component answering again to the first good (not degraded) search."""
        if self.timeline.restarted is None:
            return None
        end = min(self.deadline, self.timeline.restarted + self.cfg.recovery_wait_s)
        while time.monotonic() < end:
            with self.lock:
                good = [
                    s for s in self.searches
                    if s.started >= self.timeline.restarted and s.code == "OK" and not s.degraded
                ]  # fmt: skip
            if good:
                return good[0].started + good[0].latency_s - self.timeline.restarted
            time.sleep(0.05)
        return None

    def _stored(self, ids: list[str]) -> dict[str, search_pb2.GetAssetsResponse]:
        found: dict[str, Any] = {}
        for i in range(0, len(ids), 100):
            chunk = ids[i : i + 100]
            resp = self._retrying(
                lambda c=chunk: self._search().GetAssets(
                    search_pb2.GetAssetsRequest(tenant=TENANT, asset_ids=c, include_vectors=True), timeout=10
                )
            )
            for rec in resp.assets:
                if rec.asset.asset_id in found:
                    found.setdefault("__repeated__", []).append(rec.asset.asset_id)
                found[rec.asset.asset_id] = rec
        return found

    def _retrying(self, call: Callable[[], Any]) -> Any:
        for attempt in range(20):
            try:
                return call()
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                if attempt == 19:
                    raise
                time.sleep(0.25)
        raise AssertionError("unreachable")

    def _unfindable(self, records: list[search_pb2.AssetRecord]) -> tuple[list[str], list[str]]:
        """Ids not found by their own vector, and ids not found by their caption's unique word."""
        by_vector, by_word = [], []
        for rec in records:
            vec_ok, word_ok = self._findable(rec)
            if not vec_ok:
                by_vector.append(rec.asset.asset_id)
            if not word_ok:
                by_word.append(rec.asset.asset_id)
        return by_vector, by_word

    def _findable(self, rec: search_pb2.AssetRecord) -> tuple[bool, bool]:
        asset_id = rec.asset.asset_id
        only_this = common_pb2.Filter(
            condition=common_pb2.Condition(
                field="asset_id",
                operator=common_pb2.FILTER_OPERATOR_EQUAL,
                value=common_pb2.Value(string_value=asset_id),
            )
        )
        by_vector = self._retrying(
            lambda: self._search().Query(
                search_pb2.QueryRequest(
                    tenant=TENANT, vector=rec.image_embedding, filter=only_this, limit=1, skip_cache=True
                ),
                timeout=10,
            )
        )
        by_word = self._retrying(
            lambda: self._search().Query(
                search_pb2.QueryRequest(
                    tenant=TENANT, text=self.by_id[asset_id].token, alpha=0.0, limit=5, skip_cache=True
                ),
                timeout=10,
            )
        )
        return (
            any(h.asset.asset_id == asset_id for h in by_vector.hits),
            any(h.asset.asset_id == asset_id for h in by_word.hits),
        )

    def _resend(self, ids: list[str]) -> dict[str, gateway_pb2.IngestResponse]:
        """Resend until nothing fails for a passing reason, with backoff, for at most resend_window_s:
        what a client with the items at hand does. Records when the first resent item was stored."""
        answers: dict[str, gateway_pb2.IngestResponse] = {}
        todo, rounds = list(ids), 0
        end = min(self.deadline - 5, time.monotonic() + self.cfg.resend_window_s)
        while todo and time.monotonic() < end:
            rounds += 1
            got: dict[str, gateway_pb2.IngestResponse] = {}
            self._ingest([self.by_id[a] for a in todo], got)
            answers.update(got)
            if self.ingest_recovered is None and any(r.outcome in STORED_ON_RESEND for r in got.values()):
                self.ingest_recovered = time.monotonic()
            todo = [
                a for a in todo
                if a not in got or (
                    got[a].outcome == gateway_pb2.INGEST_OUTCOME_FAILED
                    and got[a].error.code in RETRYABLE_ITEM_CODES
                )
            ]  # fmt: skip
            if todo:
                time.sleep(min(1.0, 0.1 * 2**rounds))
        self.resend_rounds = rounds
        return answers

    def _audit(self) -> dict[str, Any]:
        first = {aid: r for aid, r in self.outcomes.items()}
        failed = sorted(a for a, r in first.items() if r.outcome == gateway_pb2.INGEST_OUTCOME_FAILED)
        uncertain = sorted(a for a, r in first.items() if r.outcome == gateway_pb2.INGEST_OUTCOME_UNCERTAIN)
        # FAILED promises "nothing stored": check that before anything is resent.
        before = self._stored(failed) if failed else {}
        before.pop("__repeated__", None)
        failed_but_stored = [a for a in failed if a in before]
        # A client resends what failed for a passing reason, and UNCERTAIN promises "maybe stored, safe
        # to resend": resend both once the suite is back; an UNCERTAIN item must then land exactly once.
        retryable = [a for a in failed if first[a].error.code in RETRYABLE_ITEM_CODES]
        resend = self._resend([*retryable, *uncertain])
        uncertain_bad = [a for a in uncertain if a not in resend or resend[a].outcome not in STORED_ON_RESEND]
        final = {**{a: r.outcome for a, r in first.items()}, **{a: r.outcome for a, r in resend.items()}}
        acked = sorted(a for a, o in final.items() if o in ACKNOWLEDGED)
        stored = self._stored(sorted(self.by_id))
        repeated = stored.pop("__repeated__", [])
        uncertain_bad += [a for a in uncertain if a not in stored and a not in uncertain_bad]
        not_stored = [a for a in acked if a not in stored]
        unfindable_vector, unfindable_keyword = self._unfindable([stored[a] for a in acked if a in stored])
        # The search service repairs vector-index entries Weaviate lost in a kill -9 in the background
        # (docs/DURABILITY.md): "findable" is judged after a bounded wait, and the wait is reported.
        waited_s, start = 0.0, time.monotonic()
        while (unfindable_vector or unfindable_keyword) and time.monotonic() - start < FINDABLE_WITHIN_S:
            time.sleep(1.0)
            unfindable_vector, unfindable_keyword = self._unfindable(
                [stored[a] for a in sorted({*unfindable_vector, *unfindable_keyword})]
            )
            waited_s = time.monotonic() - start
        hashes = sorted({rec.asset.content_sha256 for rec in stored.values()})
        duplicated: list[str] = list(repeated)
        for i in range(0, len(hashes), 100):
            resp = self._retrying(
                lambda c=hashes[i : i + 100]: self._search().FindByContentHash(
                    search_pb2.FindByContentHashRequest(tenant=TENANT, content_sha256=c), timeout=10
                )
            )
            duplicated += [m.content_sha256 for m in resp.matches if len(m.asset_ids) > 1]
        lost = sorted(set(not_stored) | set(unfindable_vector) | set(unfindable_keyword))
        return {
            "sent": len(self.items),
            "answered": len(first),
            "unanswered": len(self.items) - len(final),
            "outcomes": dict(Counter(_name(r.outcome) for r in first.values())),
            "failed_codes": dict(Counter(first[a].error.code for a in failed)),
            "resent": len(resend),
            "resend_rounds": self.resend_rounds,
            "ingest_recovery_s": (
                None
                if self.ingest_recovered is None or self.timeline.restarted is None
                else self.ingest_recovered - self.timeline.restarted
            ),
            "resent_outcomes": dict(Counter(_name(r.outcome) for r in resend.values())),
            "acknowledged": len(acked),
            "stored": sum(1 for a in acked if a in stored),
            "findable": len(acked) - len(lost),
            "lost": len(lost),
            "lost_not_stored": len(not_stored),
            "lost_not_in_vector_index": len(unfindable_vector),
            "lost_not_in_keyword_index": len(unfindable_keyword),
            "findable_wait_s": round(waited_s, 2),
            "duplicated": len(duplicated),
            "failed": len(failed),
            "failed_but_stored": len(failed_but_stored),
            "uncertain": len(uncertain),
            "uncertain_resend_not_stored_once": len(uncertain_bad),
            "stream_errors": dict(self.stream_errors),
            "examples": {
                "lost": lost[:5],
                "failed_but_stored": failed_but_stored[:5],
                "duplicated": duplicated[:5],
            },
        }

    def _report(self, recovery_s: float | None, audit: dict[str, Any]) -> dict[str, Any]:
        tl = self.timeline
        outage = [
            s for s in self.searches
            if tl.kill is not None and tl.restarted is not None and tl.kill <= s.started < tl.restarted
        ]  # fmt: skip
        failing = [s.latency_s * 1000 for s in outage if s.code != "OK"]
        return {
            "component": self.cfg.component,
            "config": self.cfg.__dict__,
            "killed": tl.kill is not None,
            "outage_s": None if tl.kill is None or tl.restarted is None else tl.restarted - tl.kill,
            "restart_s": None
            if tl.restart_begin is None or tl.restarted is None
            else tl.restarted - tl.restart_begin,
            "recovery_s": recovery_s,
            "searches": len(self.searches),
            "outage_searches": {
                "count": len(outage),
                "codes": dict(Counter(s.code for s in outage)),
                "degraded": sum(1 for s in outage if s.code == "OK" and s.degraded),
                "p50_ms": _p([s.latency_s * 1000 for s in outage], 50),
                "p99_ms": _p([s.latency_s * 1000 for s in outage], 99),
                "failing_p99_ms": _p(failing, 99),
            },
            **audit,
            "wall_s": time.monotonic() - self.t0,
        }


@contextlib.contextmanager
def real_stack() -> Iterator[tuple[Stack, StackInfo]]:
    """This clone's devstack (components already running are reused; those started here are stopped)."""
    manager = Stack(REPO_ROOT)
    info = manager.up()
    try:
        yield manager, info
    finally:
        manager.down(only=info.started)


def run_once(stack: Stack, info: StackInfo, config: RunConfig) -> dict[str, Any]:
    return ChaosRun(stack, info, config).run()


__all__ = ["COMPONENTS", "ChaosRun", "RunConfig", "real_stack", "run_once"]
