"""The vector index repair pass's logic, with plain fakes for Weaviate (the real thing runs in
tests/search/test_weaviate_kill.py)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.search.backends.weaviate.repair import RepairReport, VectorIndexRepairer


class ScriptedRepairer(VectorIndexRepairer):
    """Weaviate's lifetime tokens come from a script; repair_all records its calls."""

    def __init__(self, lifetimes: list[str | None], failing_passes: int = 0) -> None:
        super().__init__("127.0.0.1", 1, 1, "Col", chunk=10, timeout_s=1.0)
        self.lifetimes = lifetimes
        self.failing_passes = failing_passes
        self.passes: list[str | None] = []

    async def lifetime(self) -> str | None:
        if not self.lifetimes:
            raise asyncio.CancelledError
        self.current = self.lifetimes.pop(0)
        return self.current

    async def repair_all(self) -> RepairReport:
        self.passes.append(self.current)
        if self.failing_passes:
            self.failing_passes -= 1
            raise ConnectionError("Weaviate went away mid-pass")
        return RepairReport(checked=3)


async def test_one_pass_per_weaviate_lifetime_and_none_while_it_is_down() -> None:
    r = ScriptedRepairer([None, "t7", "t7", None, "t7", "t8", "t8"])
    with pytest.raises(asyncio.CancelledError):
        await r.watch(0)
    assert r.passes == ["t7", "t8"]


async def test_a_failed_pass_is_retried_for_the_same_lifetime() -> None:
    r = ScriptedRepairer(["t7", "t7", "t7", "t7"], failing_passes=2)
    with pytest.raises(asyncio.CancelledError):
        await r.watch(0)
    assert r.passes == ["t7", "t7", "t7"]


@dataclass
class Obj:
    uuid: str
    vector: dict[str, list[float]]
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class Result:
    objects: list[Obj]


class FakeQuery:
    def __init__(self, indexed: dict[str, set[str]]) -> None:
        self.indexed = indexed  # vector name -> uuids with a graph node

    async def near_vector(self, near_vector: Any, target_vector: str, filters: Any, limit: int) -> Result:
        wanted = set(filters.value)
        return Result([Obj(u, {}) for u in sorted(wanted & self.indexed.get(target_vector, set()))][:limit])


class FakeCollection:
    def __init__(self, indexed: dict[str, set[str]]) -> None:
        self.query = FakeQuery(indexed)


async def test_unfindable_checks_every_named_vector() -> None:
    a, b, c, d = (str(uuid.UUID(int=i)) for i in range(4))
    col = FakeCollection({"image": {a, b}, "text": {a}})
    objects = [
        Obj(a, {"image": [1.0], "text": [1.0]}),
        Obj(b, {"image": [1.0], "text": [1.0]}),  # its text node is lost
        Obj(c, {"image": [1.0]}),  # its only node is lost
        Obj(d, {}),  # no vector: nothing to find
    ]
    r = VectorIndexRepairer("127.0.0.1", 1, 1, "Col", chunk=10, timeout_s=1.0)
    missing = await r._unfindable(col, objects)
    assert sorted(o.uuid for o in missing) == sorted([b, c])
