"""Per-tenant objects (the ingest flow's batchers), made on first use and bounded in number.

Beyond `max_tenants`, the least recently used tenant's object is dropped; that tenant's next call
makes a fresh one. Work already handed to a dropped object still completes (its callers hold it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from cachetools import LRUCache

T = TypeVar("T")


class PerTenant(Generic[T]):
    def __init__(self, make: Callable[[str], T], max_tenants: int) -> None:
        self._make = make
        self._objects: LRUCache[str, T] = LRUCache(max_tenants)

    def __call__(self, tenant: str) -> T:
        obj = self._objects.get(tenant)
        if obj is None:
            obj = self._make(tenant)
            self._objects[tenant] = obj
        return obj

    def peek(self, tenant: str) -> T | None:
        """The tenant's object if it exists (nothing is made)."""
        return self._objects.get(tenant)

    def __len__(self) -> int:
        return len(self._objects)
