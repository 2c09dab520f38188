"""One tenant of the embedded index: records in SQLite (the source of truth), the usearch graph and
the tantivy inverted index derived from them (rebuilt when stale), and the filter columns.

Every write gets fresh internal slots (a monotonically increasing integer key shared by SQLite, usearch
and tantivy); the previous version of a replaced asset is retired only after the new one is in every
index, so a concurrent query sees the old or the new version, never neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import structlog
import tantivy
from usearch.index import Index

from services.search.backends.embedded.columns import Columns
from services.search.codec import doc_from_json, doc_to_json
from services.search.domain import KEYWORD_FIELDS, AssetDoc, AssetRecord

log = structlog.get_logger("search.embedded")

# Graphs are built by one thread: usearch's concurrent add() can leave a node stored but reached by no
# search at any ef (unum-cloud/USearch#735), i.e. an acknowledged asset the vector leg never finds.
# A graph snapshot is trusted only under a stamp naming this build; snapshots stamped before it (bare
# sequence numbers, built by concurrent adds) are rebuilt once from the records.
GRAPH_BUILD = "serial"


def _add_to_graph(graph: Index, keys: np.ndarray, vectors: np.ndarray) -> None:
    graph.add(keys, vectors, threads=1)


@dataclass(frozen=True, slots=True)
class HnswParams:
    connectivity: int
    ef_construction: int
    ef_search: int
    exact_cutoff: int
    # Scalar type of the vectors inside the graph: int8 (usearch quantises the unit vectors) inserts
    # and searches faster than f32; the graph only proposes candidates, which are re-ranked with exact
    # float32 cosine from the record vectors, so scores are exact and recall matches an f32 graph
    # (docs/SEARCH.md, "Design figures").
    graph_dtype: str


@dataclass(slots=True)
class NamedSpace:
    """One non-primary named vector of the tenant: slot-indexed vectors, which slots have one, and its
    graph (files `vectors.<name>.usearch` / `.seq`, kept fresh like the primary's)."""

    dim: int
    vectors: np.ndarray
    has: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    graph: Index | None = None

    def grow(self, need: int) -> None:
        if need > len(self.vectors):
            cap = max(need, 2 * len(self.vectors), 1024)
            grown = np.zeros((cap, self.dim), dtype=np.float32)
            grown[: len(self.vectors)] = self.vectors
            self.vectors = grown
            has = np.zeros(cap, dtype=bool)
            has[: len(self.has)] = self.has
            self.has = has


class TenantIndex:
    """One tenant's records, vector graphs (the primary's and one per other named vector), inverted
    index and filter columns."""

    def __init__(
        self, root: Path, dimension: int, hnsw: HnswParams, named: dict[str, int] | None = None
    ) -> None:
        self.root = root
        self.dim = dimension
        self.hnsw = hnsw
        self.write_lock = asyncio.Lock()
        root.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(root / "records.sqlite", check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsynced at every commit, so an acknowledged batch survives an OS crash or
        # power loss too (NORMAL only survives a process crash). One fsync per batch.
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS assets (slot INTEGER PRIMARY KEY, asset_id TEXT NOT NULL UNIQUE,"
            " doc TEXT NOT NULL, vector BLOB NOT NULL)"
        )
        # The non-primary named vectors, one row per (slot, name); rows go with their slot's version.
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS named_vectors (slot INTEGER NOT NULL, name TEXT NOT NULL,"
            " vector BLOB NOT NULL, PRIMARY KEY (slot, name))"
        )
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self.db_lock = threading.Lock()
        self.columns = Columns()
        self.docs: dict[int, AssetDoc] = {}
        self.slot_of: dict[str, int] = {}
        self.vectors = np.zeros((0, dimension), dtype=np.float32)
        self.named = {n: NamedSpace(d, np.zeros((0, d), dtype=np.float32)) for n, d in (named or {}).items()}
        self.next_slot = int(self._meta("next_slot", "0"))
        self.seq = int(self._meta("seq", "0"))
        self._load_records()
        self.graph = self._open_graph()
        for name in self.named:
            self._open_named_graph(name)
        self.schema = self._schema()
        self.keyword = self._open_keyword()
        self.writer = self.keyword.writer(heap_size=64_000_000, num_threads=1)

    # -- persistence --

    def _meta(self, key: str, default: str) -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else default

    def _grow_vectors(self, need: int) -> None:
        if need > len(self.vectors):
            cap = max(need, 2 * len(self.vectors), 1024)
            grown = np.zeros((cap, self.dim), dtype=np.float32)
            grown[: len(self.vectors)] = self.vectors
            self.vectors = grown

    def _load_records(self) -> None:
        rows = self.db.execute("SELECT slot, doc, vector FROM assets ORDER BY slot").fetchall()
        self._grow_vectors(self.next_slot)
        for slot, raw, blob in rows:
            doc = doc_from_json(raw)
            self.docs[slot] = doc
            self.slot_of[doc.asset_id] = slot
            self.columns.add(slot, doc)
            self.vectors[slot] = np.frombuffer(blob, dtype="<f4")
        for space in self.named.values():
            space.grow(self.next_slot)
        for slot, name, blob in self.db.execute("SELECT slot, name, vector FROM named_vectors"):
            space_ = self.named.get(name)
            if space_ is not None and slot in self.docs:
                space_.vectors[slot] = np.frombuffer(blob, dtype="<f4")
                space_.has[slot] = True

    def add_space(self, name: str, dimension: int) -> None:
        """Start storing a named vector the collection has just recorded (no asset has it yet)."""
        if name not in self.named:
            space = NamedSpace(dimension, np.zeros((0, dimension), dtype=np.float32))
            space.grow(self.next_slot)
            space.graph = self._new_graph(dimension)
            self.named[name] = space

    def _new_graph(self, dimension: int = 0) -> Index:
        return Index(
            ndim=dimension or self.dim,
            metric="cos",
            dtype=self.hnsw.graph_dtype,
            connectivity=self.hnsw.connectivity,
            expansion_add=self.hnsw.ef_construction,
            expansion_search=self.hnsw.ef_search,
        )

    def _open_graph(self) -> Index:
        keys = np.fromiter(self.docs.keys(), dtype=np.uint64, count=len(self.docs))
        return self._load_or_build("vectors", self.dim, keys, self.vectors)

    def _open_named_graph(self, name: str) -> None:
        space = self.named[name]
        keys = np.flatnonzero(space.has).astype(np.uint64)
        space.graph = self._load_or_build(f"vectors.{name}", space.dim, keys, space.vectors)

    def _load_or_build(self, stem: str, dimension: int, keys: np.ndarray, vectors: np.ndarray) -> Index:
        """The graph snapshot `<stem>.usearch` when it is as fresh as the records, else rebuilt."""
        path = self.root / f"{stem}.usearch"
        stamp = self.root / f"{stem}.seq"
        graph = self._new_graph(dimension)
        if path.exists() and stamp.exists() and stamp.read_text().strip() == self._graph_stamp():
            graph.load(str(path))  # takes the snapshot's dtype and degree
            graph.expansion_search = self.hnsw.ef_search  # type: ignore[misc]
            fresh = self._new_graph(dimension)
            same_shape = graph.dtype == fresh.dtype and graph.connectivity == fresh.connectivity
            if len(graph) == len(keys) and same_shape:
                return graph
            graph = fresh
        if len(keys):
            log.info(
                "rebuilding vector graph from records", tenant_dir=str(self.root), graph=stem, count=len(keys)
            )
            _add_to_graph(graph, keys, vectors[keys.astype(np.int64)])
        stamp.unlink(missing_ok=True)
        return graph

    def _graph_stems(self) -> list[str]:
        return ["vectors", *(f"vectors.{n}" for n in self.named)]

    def save_graph(self) -> None:
        self.graph.save(str(self.root / "vectors.usearch"))
        for name, space in self.named.items():
            assert space.graph is not None
            space.graph.save(str(self.root / f"vectors.{name}.usearch"))
        for stem in self._graph_stems():
            (self.root / f"{stem}.seq").write_text(self._graph_stamp())

    def _graph_stamp(self) -> str:
        return f"{self.seq} {GRAPH_BUILD}"

    def _schema(self) -> tantivy.Schema:
        sb = tantivy.SchemaBuilder()
        sb.add_unsigned_field("slot", stored=False, indexed=True, fast=True)
        for f in KEYWORD_FIELDS:
            sb.add_text_field(f, stored=False, tokenizer_name="default")
        return sb.build()

    def _open_keyword(self) -> tantivy.Index:
        kdir = self.root / "keyword"
        stamp = self.root / "keyword.seq"
        fresh = not (kdir.exists() and stamp.exists() and stamp.read_text().strip() == str(self.seq))
        if fresh:
            import shutil

            shutil.rmtree(kdir, ignore_errors=True)
            stamp.unlink(missing_ok=True)
        kdir.mkdir(parents=True, exist_ok=True)
        index = tantivy.Index(self.schema, path=str(kdir))
        if fresh and self.docs:
            log.info("rebuilding keyword index from records", tenant_dir=str(self.root), count=len(self.docs))
            writer = index.writer(heap_size=64_000_000, num_threads=1)
            for slot, doc in self.docs.items():
                writer.add_document(self._tdoc(slot, doc))
            writer.commit()
            writer.wait_merging_threads()
            stamp.write_text(str(self.seq))
        index.reload()
        return index

    @staticmethod
    def _tdoc(slot: int, doc: AssetDoc) -> tantivy.Document:
        d = tantivy.Document()
        d.add_unsigned("slot", slot)
        if doc.caption:
            d.add_text("caption", doc.caption)
        for t in doc.tags:
            d.add_text("tags", t)
        if doc.ocr_text:
            d.add_text("ocr_text", doc.ocr_text)
        return d

    # -- writes (the blocking parts run in a worker thread, the in-memory swap on the loop) --

    def write_blocking(
        self, records: list[AssetRecord], deletes: list[str]
    ) -> tuple[list[tuple[int, AssetRecord]], list[int]]:
        """Commit records and deletions to SQLite, then to the graph and the inverted index.

        Returns (new slot per record, retired slots); the caller swaps the in-memory views afterwards.
        """
        with self.db_lock:
            placed = []
            retired = [self.slot_of[a] for a in deletes if a in self.slot_of]
            replaced = [self.slot_of[r.doc.asset_id] for r in records if r.doc.asset_id in self.slot_of]
            slot = self.next_slot
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for rec in records:
                    assert rec.vector is not None
                    self.db.execute(
                        "INSERT OR REPLACE INTO assets (slot, asset_id, doc, vector) VALUES (?, ?, ?, ?)",
                        (slot, rec.doc.asset_id, doc_to_json(rec.doc), rec.vector.astype("<f4").tobytes()),
                    )
                    self.db.executemany(
                        "INSERT OR REPLACE INTO named_vectors (slot, name, vector) VALUES (?, ?, ?)",
                        [(slot, n, v.astype("<f4").tobytes()) for n, v in rec.named.items()],
                    )
                    placed.append((slot, rec))
                    slot += 1
                if deletes:
                    self.db.executemany("DELETE FROM assets WHERE asset_id = ?", [(a,) for a in deletes])
                if retired or replaced:
                    self.db.executemany(
                        "DELETE FROM named_vectors WHERE slot = ?", [(s,) for s in retired + replaced]
                    )
                seq = self.seq + 1
                self.db.executemany(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    [("next_slot", str(slot)), ("seq", str(seq))],
                )
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            # Durable from here: the indexes below are derived and rebuilt from SQLite if we crash.
            for stem in self._graph_stems():
                (self.root / f"{stem}.seq").unlink(missing_ok=True)
            (self.root / "keyword.seq").unlink(missing_ok=True)
            self.next_slot = slot
            self.seq = seq
            self._grow_vectors(slot)
            if placed:
                keys = np.asarray([s for s, _ in placed], dtype=np.uint64)
                vecs = np.stack([r.vector for _, r in placed]).astype(np.float32)  # type: ignore[misc]
                self.vectors[keys.astype(np.int64)] = vecs
                _add_to_graph(self.graph, keys, vecs)
                for name, space in self.named.items():
                    space.grow(slot)
                    with_name = [(s, r.named[name]) for s, r in placed if name in r.named]
                    if with_name:
                        nkeys = np.asarray([s for s, _ in with_name], dtype=np.uint64)
                        nvecs = np.stack([v for _, v in with_name]).astype(np.float32)
                        space.vectors[nkeys.astype(np.int64)] = nvecs
                        space.has[nkeys.astype(np.int64)] = True
                        assert space.graph is not None
                        _add_to_graph(space.graph, nkeys, nvecs)
                for s, rec in placed:
                    self.writer.add_document(self._tdoc(s, rec.doc))
            old = retired + [
                self.slot_of[r.doc.asset_id] for _, r in placed if r.doc.asset_id in self.slot_of
            ]
            for s in old:
                self.writer.delete_documents_by_term("slot", s)
            self.writer.commit()
            self.keyword.reload()
            (self.root / "keyword.seq").write_text(str(self.seq))
            return placed, old

    def apply(self, placed: list[tuple[int, AssetRecord]], retired: list[int]) -> None:
        """Swap the in-memory views to the committed state (event-loop thread)."""
        for slot, rec in placed:
            prev = self.slot_of.get(rec.doc.asset_id)
            self.docs[slot] = rec.doc
            self.slot_of[rec.doc.asset_id] = slot
            self.columns.add(slot, rec.doc)
            if prev is not None and prev != slot:
                self._retire(prev)
        for slot in retired:
            self._retire(slot)

    def _retire(self, slot: int) -> None:
        doc = self.docs.pop(slot, None)
        if doc is None:
            return
        if self.slot_of.get(doc.asset_id) == slot:
            del self.slot_of[doc.asset_id]
        self.columns.remove(slot, doc)
        with contextlib.suppress(Exception):  # already gone is fine
            self.graph.remove(slot)
        for space in self.named.values():
            if slot < len(space.has) and space.has[slot]:
                space.has[slot] = False
                with contextlib.suppress(Exception):
                    assert space.graph is not None
                    space.graph.remove(slot)

    # -- reads (event-loop thread) --

    def close(self) -> None:
        with self.db_lock:
            with contextlib.suppress(Exception):
                self.writer.wait_merging_threads()
            self.save_graph()
            self.db.close()
