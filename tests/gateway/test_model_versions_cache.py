"""The gateway's view of a tenant's model versions: one read per burst (pure logic, a plain fake client)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.common.errors import Unavailable
from services.gateway.domain import ModelRef, TenantModels
from services.gateway.model_versions import ModelVersions

PHOTO = ModelRef("photo", "1")


class CountingSearch:
    """Answers GetModelVersions after a pause, counting the calls; fails while `failing` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.failing = False

    async def model_versions(self, tenant: str, coverage: bool = False) -> TenantModels:
        self.calls += 1
        await asyncio.sleep(0.05)
        if self.failing:
            raise Unavailable("search is down")
        return TenantModels((), PHOTO, None, 3)


def versions(search: CountingSearch, ttl_s: float = 60.0) -> ModelVersions:
    fake: Any = search
    return ModelVersions(fake, {}, ttl_s, max_tenants=8)


async def test_a_burst_of_callers_makes_one_read() -> None:
    search = CountingSearch()
    mv = versions(search)
    states = await asyncio.gather(*(mv.state("acme") for _ in range(20)))
    assert search.calls == 1
    assert all(s is not None and s.active == PHOTO for s in states)
    await mv.state("acme")  # cached
    assert search.calls == 1


async def test_a_failed_read_fails_the_burst_once_and_the_next_caller_reads_again() -> None:
    search = CountingSearch()
    search.failing = True
    mv = versions(search)
    results = await asyncio.gather(*(mv.state("acme") for _ in range(10)), return_exceptions=True)
    assert search.calls == 1
    assert all(isinstance(r, Unavailable) for r in results)
    search.failing = False
    state = await mv.state("acme")
    assert search.calls == 2 and state is not None and state.active == PHOTO


async def test_a_cancelled_first_caller_does_not_cancel_the_others() -> None:
    search = CountingSearch()
    mv = versions(search)
    first = asyncio.ensure_future(mv.state("acme"))
    others = [asyncio.ensure_future(mv.state("acme")) for _ in range(3)]
    await asyncio.sleep(0.01)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert all(s is not None and s.active == PHOTO for s in await asyncio.gather(*others))
    assert search.calls == 1


async def test_a_read_in_flight_at_a_change_does_not_bring_back_the_old_state() -> None:
    """An activation by this gateway (forget) while a read of the old state is in flight: the next
    caller reads again, and the old state is never cached (queries would use it for a TTL)."""
    search = CountingSearch()
    mv = versions(search)
    before = asyncio.ensure_future(mv.state("acme"))  # reads the state as it was
    await asyncio.sleep(0.01)
    mv.forget("acme")  # the change happened meanwhile
    newer = TenantModels((), ModelRef("photo", "2"), PHOTO, 3)

    async def changed(tenant: str, coverage: bool = False) -> TenantModels:
        search.calls += 1
        return newer

    search.model_versions = changed  # type: ignore[method-assign]
    after = await mv.state("acme")
    assert after is newer and search.calls == 2  # not the read in flight
    assert (await before).active == PHOTO  # its own caller still gets an answer
    assert await mv.state("acme") is newer and search.calls == 2  # the old state was not cached
