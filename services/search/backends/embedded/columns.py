"""The embedded index's filter columns: numpy masks over slots answer every filter operator, and
each live asset's keyword tokens (with per-field totals) feed exact BM25 scoring."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import numpy as np

from services.search.codec import ts_us
from services.search.domain import KEYWORD_FIELDS, AssetDoc, tokenize
from services.search.filters import AllOf, AnyOf, Condition, FieldType, FilterNode, Not, Op, like_matches

_FIELD_INDEX = {f: i for i, f in enumerate(KEYWORD_FIELDS)}


def field_tokens(doc: AssetDoc, field: str) -> list[str]:
    if field == "tags":
        return [t for tag in doc.tags for t in tokenize(tag)]
    return tokenize(getattr(doc, field))


# ---- in-memory columns for filters -----------------------------------------------------------------

_STRING_FIELDS = (
    "asset_id",
    "uri",
    "caption",
    "owner",
    "source",
    "license_name",
    "content_sha256",
    "analysis_state",
)
_ARRAY_FIELDS = ("tags", "safety_labels")
_NUMBER_FIELDS = ("width", "height", "safety_score", "popularity")
_TIME_FIELDS = ("created_at", "updated_at", "license_expires_at")
_NULL_TIME = np.iinfo(np.int64).min


def _field_values(doc: AssetDoc, field: str) -> Any:
    if field == "safety_labels":
        return tuple(s.label for s in doc.safety_labels)
    return getattr(doc, field)


class Columns:
    """Slot-indexed columns answering filters with numpy boolean masks.

    Strings and arrays are kept as value -> set-of-slots maps (equality, IN, CONTAINS_*, LIKE over the
    distinct values); numbers and timestamps as numpy arrays (ranges). Only the event-loop thread
    mutates or reads them.
    """

    def __init__(self) -> None:
        self.capacity = 0
        self.alive = np.zeros(0, dtype=bool)
        self.numbers = {f: np.zeros(0, dtype=np.float64) for f in _NUMBER_FIELDS}
        self.times = {f: np.zeros(0, dtype=np.int64) for f in _TIME_FIELDS}
        self.values: dict[str, dict[str, set[int]]] = {f: {} for f in (*_STRING_FIELDS, *_ARRAY_FIELDS)}
        self.has_value: dict[str, np.ndarray] = {
            f: np.zeros(0, dtype=bool) for f in (*_STRING_FIELDS, *_ARRAY_FIELDS)
        }
        self.live = 0
        # Per keyword field: total tokens and number of live assets with a value (Weaviate's avgdl).
        self.token_sum = dict.fromkeys(KEYWORD_FIELDS, 0)
        self.token_docs = dict.fromkeys(KEYWORD_FIELDS, 0)
        # Tokens of each live asset's keyword fields (interned), for exact BM25 re-scoring.
        self.tokens: dict[int, tuple[tuple[str, ...], ...]] = {}

    def _count_tokens(self, slot: int, doc: AssetDoc, sign: int) -> None:
        if sign > 0:
            toks = tuple(tuple(sys.intern(t) for t in field_tokens(doc, f)) for f in KEYWORD_FIELDS)
            self.tokens[slot] = toks
        else:
            toks = self.tokens.pop(slot, ((),) * len(KEYWORD_FIELDS))
        for f, field_toks in zip(KEYWORD_FIELDS, toks, strict=True):
            if field_toks:
                self.token_sum[f] += sign * len(field_toks)
                self.token_docs[f] += sign

    def avgdl(self, field: str) -> float:
        return self.token_sum[field] / self.token_docs[field] if self.token_docs[field] else 1.0

    def _grow(self, need: int) -> None:
        if need <= self.capacity:
            return
        cap = max(need, self.capacity * 2, 1024)

        def grow(a: np.ndarray, fill: Any = 0) -> np.ndarray:
            out = np.full(cap, fill, dtype=a.dtype)
            out[: len(a)] = a
            return out

        self.alive = grow(self.alive, False)
        self.numbers = {f: grow(a) for f, a in self.numbers.items()}
        self.times = {f: grow(a, _NULL_TIME) for f, a in self.times.items()}
        self.has_value = {f: grow(a, False) for f, a in self.has_value.items()}
        self.capacity = cap

    def add(self, slot: int, doc: AssetDoc) -> None:
        self._grow(slot + 1)
        for f in _STRING_FIELDS:
            v = getattr(doc, f)
            if v:
                self.values[f].setdefault(v, set()).add(slot)
                self.has_value[f][slot] = True
        for f in _ARRAY_FIELDS:
            vs = set(_field_values(doc, f))
            for v in vs:
                self.values[f].setdefault(v, set()).add(slot)
            self.has_value[f][slot] = bool(vs)
        for f in _NUMBER_FIELDS:
            self.numbers[f][slot] = float(getattr(doc, f))
        for f in _TIME_FIELDS:
            us = ts_us(getattr(doc, f))
            self.times[f][slot] = _NULL_TIME if us is None else us
        self.alive[slot] = True
        self.live += 1
        self._count_tokens(slot, doc, +1)

    def remove(self, slot: int, doc: AssetDoc) -> None:
        for f in _STRING_FIELDS:
            v = getattr(doc, f)
            if v:
                self._discard(f, v, slot)
        for f in _ARRAY_FIELDS:
            for v in set(_field_values(doc, f)):
                self._discard(f, v, slot)
        for f in self.has_value:
            self.has_value[f][slot] = False
        if self.alive[slot]:
            self.alive[slot] = False
            self.live -= 1
            self._count_tokens(slot, doc, -1)

    def _discard(self, field: str, value: str, slot: int) -> None:
        slots = self.values[field].get(value)
        if slots is not None:
            slots.discard(slot)
            if not slots:
                del self.values[field][value]

    def _slots_mask(self, slots: Iterable[int]) -> np.ndarray:
        mask = np.zeros(self.capacity, dtype=bool)
        idx = np.fromiter(slots, dtype=np.int64)
        if len(idx):
            mask[idx] = True
        return mask

    def _union(self, field: str, values: Iterable[str]) -> np.ndarray:
        table = self.values[field]
        slots: set[int] = set()
        for v in values:
            slots |= table.get(v, set())
        return self._slots_mask(slots)

    def mask(self, node: FilterNode | None) -> np.ndarray:
        """Allowed live slots for a filter (all live slots for None)."""
        if node is None:
            return self.alive.copy()
        return self._eval(node) & self.alive

    def _eval(self, node: FilterNode) -> np.ndarray:
        if isinstance(node, AllOf):
            out = self._eval(node.children[0])
            for c in node.children[1:]:
                out &= self._eval(c)
            return out
        if isinstance(node, AnyOf):
            out = self._eval(node.children[0])
            for c in node.children[1:]:
                out |= self._eval(c)
            return out
        if isinstance(node, Not):
            return ~self._eval(node.child)
        return self._condition(node)

    def _condition(self, c: Condition) -> np.ndarray:
        ft = c.type
        if c.op is Op.IS_NULL:
            if ft in (FieldType.STRING, FieldType.STRING_ARRAY):
                has = self.has_value[c.field]
            else:
                has = self.times[c.field] != _NULL_TIME
            return ~has if c.value else has.copy()
        if ft in (FieldType.STRING, FieldType.STRING_ARRAY):
            if c.op in (Op.EQUAL, Op.IN, Op.CONTAINS_ANY):
                return self._union(c.field, (str(v) for v in c.values))
            if c.op is Op.NOT_EQUAL:
                return ~self._union(c.field, [str(c.value)])
            if c.op is Op.CONTAINS_ALL:
                out = np.ones(self.capacity, dtype=bool)
                for v in c.values:
                    out &= self._union(c.field, [str(v)])
                return out
            if c.op is Op.LIKE:
                pattern = str(c.value)
                return self._union(c.field, [v for v in self.values[c.field] if like_matches(pattern, v)])
            raise AssertionError(c.op)
        col: np.ndarray
        if ft is FieldType.TIMESTAMP:
            col = self.times[c.field]
            present = col != _NULL_TIME
            vals: list[Any] = [ts_us(v) for v in c.values]  # type: ignore[arg-type]
        else:
            col = self.numbers[c.field]
            present = np.ones(self.capacity, dtype=bool)
            vals = [float(v) for v in c.values]  # type: ignore[arg-type]
        v0 = vals[0]
        if c.op is Op.EQUAL:
            return present & (col == v0)
        if c.op is Op.NOT_EQUAL:
            return ~(present & (col == v0))
        if c.op is Op.IN:
            return present & np.isin(col, np.asarray(vals, dtype=col.dtype))
        if c.op is Op.GREATER_THAN:
            return present & (col > v0)
        if c.op is Op.GREATER_THAN_OR_EQUAL:
            return present & (col >= v0)
        if c.op is Op.LESS_THAN:
            return present & (col < v0)
        if c.op is Op.LESS_THAN_OR_EQUAL:
            return present & (col <= v0)
        raise AssertionError(c.op)
