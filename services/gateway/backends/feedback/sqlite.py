"""SQLite feedback store: one file in WAL mode, the embedded default.

One connection serves every call from a worker thread, behind a lock: SQLite allows one writer at a
time anyway, and a search's record plus an event's insert and counters are a few microseconds each.
`synchronous=NORMAL` in WAL mode survives a crash or kill of the gateway (what "durable" means here);
an operating-system crash may lose the last transactions (docs/GATEWAY.md).
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import ParamSpec, TypeVar

import structlog

from services.common.errors import Unavailable
from services.gateway.backends.feedback.base import PutResult
from services.gateway.domain import ArmTotals, FeedbackKind, SearchRecord, StoredFeedback

log = structlog.get_logger("gateway.feedback")

UNAVAILABLE = "the feedback store is unavailable; retry the events later (they are idempotent)"

P = ParamSpec("P")
R = TypeVar("R")

# Expired search records are swept every this many recorded searches.
_SWEEP_EVERY = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS searches (
  tenant TEXT NOT NULL, search_id TEXT NOT NULL, arm TEXT NOT NULL, ranks TEXT NOT NULL,
  expires_at REAL NOT NULL, clicked INTEGER NOT NULL DEFAULT 0, secret TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (tenant, search_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS searches_by_expiry ON searches (expires_at);
CREATE TABLE IF NOT EXISTS clicked_searches (
  tenant TEXT NOT NULL, search_id TEXT NOT NULL, expires_at REAL NOT NULL,
  PRIMARY KEY (tenant, search_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS clicked_searches_by_expiry ON clicked_searches (expires_at);
CREATE TABLE IF NOT EXISTS events (
  tenant TEXT NOT NULL, event_id TEXT NOT NULL, kind TEXT NOT NULL, search_id TEXT NOT NULL,
  asset_id TEXT NOT NULL, arm TEXT NOT NULL, rank INTEGER NOT NULL, dwell_ms INTEGER NOT NULL,
  rating INTEGER NOT NULL, occurred_at TEXT NOT NULL,
  PRIMARY KEY (tenant, event_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS arm_totals (
  arm TEXT PRIMARY KEY, searches INTEGER NOT NULL DEFAULT 0, clicked_searches INTEGER NOT NULL DEFAULT 0,
  clicks INTEGER NOT NULL DEFAULT 0, reciprocal_rank_sum REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS caller_clicks (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, caller TEXT NOT NULL,
  asset_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS caller_clicks_by_caller ON caller_clicks (tenant, caller, seq);
CREATE TABLE IF NOT EXISTS arm_events (
  arm TEXT NOT NULL, kind TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (arm, kind)
) WITHOUT ROWID;
"""


def _store_errors(step: Callable[P, R]) -> Callable[P, R]:
    """A failing database (disk full, file removed, locked past busy_timeout) is UNAVAILABLE to the
    caller, with the detail in the log."""

    @functools.wraps(step)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return step(*args, **kwargs)
        except sqlite3.Error as exc:
            log.warning("feedback store call failed", error=type(exc).__name__, detail=str(exc))
            raise Unavailable(UNAVAILABLE) from None

    return wrapped


class SqliteFeedbackStore:
    name = "sqlite"

    def __init__(self, path: Path, recent_clicks_kept: int = 50) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.recent_clicks_kept = recent_clicks_kept
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(searches)")}
        if "secret" not in columns:  # a file written before search records were shared by pages
            self._db.execute("ALTER TABLE searches ADD COLUMN secret TEXT NOT NULL DEFAULT ''")
        self._recorded = 0

    async def record_searches(
        self, records: Sequence[SearchRecord], ttl_s: float, served: Mapping[str, int]
    ) -> None:
        await asyncio.to_thread(self._record_searches, records, ttl_s, served)

    @_store_errors
    def _record_searches(
        self, records: Sequence[SearchRecord], ttl_s: float, served: Mapping[str, int]
    ) -> None:
        now = time.time()
        with self._lock, self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO searches (tenant, search_id, arm, ranks, expires_at, secret) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(r.tenant, r.search_id, r.arm, json.dumps(r.ranks), now + ttl_s, r.secret) for r in records],
            )
            self._db.executemany(
                "INSERT INTO arm_totals (arm, searches) VALUES (?, ?) "
                "ON CONFLICT (arm) DO UPDATE SET searches = searches + excluded.searches",
                [(arm, n) for arm, n in served.items() if n],
            )
            before = self._recorded
            self._recorded += len(records)
            if before // _SWEEP_EVERY != self._recorded // _SWEEP_EVERY:
                self._db.execute("DELETE FROM searches WHERE expires_at < ?", (now,))
                self._db.execute("DELETE FROM clicked_searches WHERE expires_at < ?", (now,))

    async def get_search(self, tenant: str, key: str) -> SearchRecord | None:
        return await asyncio.to_thread(self._get_search, tenant, key)

    @_store_errors
    def _get_search(self, tenant: str, key: str) -> SearchRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT arm, ranks, secret FROM searches "
                "WHERE tenant = ? AND search_id = ? AND expires_at >= ?",
                (tenant, key, time.time()),
            ).fetchone()
        if row is None:
            return None
        ranks = {str(k): int(v) for k, v in json.loads(row[1]).items()}
        return SearchRecord(key, tenant, row[0], ranks, row[2])

    async def put(self, event: StoredFeedback, search_ttl_s: float) -> PutResult:
        return await asyncio.to_thread(self._put, event, search_ttl_s)

    @_store_errors
    def _put(self, e: StoredFeedback, search_ttl_s: float) -> PutResult:
        with self._lock, self._transaction():
            inserted = self._db.execute(
                "INSERT OR IGNORE INTO events (tenant, event_id, kind, search_id, asset_id, arm, rank, "
                "dwell_ms, rating, occurred_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    e.tenant,
                    e.event_id,
                    e.kind.value,
                    e.search_id,
                    e.asset_id,
                    e.arm,
                    e.rank,
                    e.dwell_ms,
                    e.rating,
                    e.occurred_at.isoformat(),
                ),  # fmt: skip
            ).rowcount
            if not inserted:
                return PutResult(recorded=False)
            self._db.execute(
                "INSERT INTO arm_events (arm, kind, n) VALUES (?, ?, 1) "
                "ON CONFLICT (arm, kind) DO UPDATE SET n = n + 1",
                (e.arm, e.kind.value),
            )
            if e.kind is not FeedbackKind.CLICK:
                return PutResult(recorded=True)
            now = time.time()
            self._db.execute(  # an expired marker is not a click of this search (sweeps are lazy)
                "DELETE FROM clicked_searches WHERE tenant = ? AND search_id = ? AND expires_at < ?",
                (e.tenant, e.search_id, now),
            )
            first = self._db.execute(
                "INSERT OR IGNORE INTO clicked_searches (tenant, search_id, expires_at) VALUES (?, ?, ?)",
                (e.tenant, e.search_id, now + search_ttl_s),
            ).rowcount
            self._db.execute(
                "INSERT INTO arm_totals (arm, clicks, clicked_searches, reciprocal_rank_sum) "
                "VALUES (?, 1, ?, ?) ON CONFLICT (arm) DO UPDATE SET clicks = clicks + 1, "
                "clicked_searches = clicked_searches + excluded.clicked_searches, "
                "reciprocal_rank_sum = reciprocal_rank_sum + excluded.reciprocal_rank_sum",
                (e.arm, first, 1.0 / e.rank),
            )
            if e.caller:
                self._remember_click(e)
            return PutResult(recorded=True, first_click=bool(first))

    def _remember_click(self, e: StoredFeedback) -> None:
        """Append to the caller's recent clicks and drop what falls beyond the bound (in _put's
        transaction)."""
        self._db.execute(
            "INSERT INTO caller_clicks (tenant, caller, asset_id) VALUES (?, ?, ?)",
            (e.tenant, e.caller, e.asset_id),
        )
        self._db.execute(
            "DELETE FROM caller_clicks WHERE tenant = ? AND caller = ? AND seq <= ("
            "SELECT seq FROM caller_clicks WHERE tenant = ? AND caller = ? ORDER BY seq DESC "
            "LIMIT 1 OFFSET ?)",
            (e.tenant, e.caller, e.tenant, e.caller, self.recent_clicks_kept),
        )

    async def recent_clicks(self, tenant: str, caller: str) -> list[str]:
        return await asyncio.to_thread(self._recent_clicks, tenant, caller)

    @_store_errors
    def _recent_clicks(self, tenant: str, caller: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT asset_id FROM caller_clicks WHERE tenant = ? AND caller = ? ORDER BY seq DESC",
                (tenant, caller),
            ).fetchall()
        return list(dict.fromkeys(str(r[0]) for r in rows))

    async def arm_totals(self) -> dict[str, ArmTotals]:
        return await asyncio.to_thread(self._arm_totals)

    @_store_errors
    def _arm_totals(self) -> dict[str, ArmTotals]:
        with self._lock:
            rows = self._db.execute(
                "SELECT arm, searches, clicked_searches, clicks, reciprocal_rank_sum FROM arm_totals"
            ).fetchall()
            kinds = self._db.execute("SELECT arm, kind, n FROM arm_events").fetchall()
        events: dict[str, dict[str, int]] = {}
        for arm, kind, n in kinds:
            events.setdefault(arm, {})[kind] = int(n)
        out = {
            arm: ArmTotals(int(s), int(cs), int(c), float(rr), events.get(arm, {}))
            for arm, s, cs, c, rr in rows
        }
        for arm, counts in events.items():
            out.setdefault(arm, ArmTotals(events=counts))
        return out

    async def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        with self._lock:
            self._db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
