"""The gateway core (search and ingest flows) over plain fakes of its backends (no network)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import re
import tempfile
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from imagesearch.v1 import common_pb2, gateway_pb2

from services.common.errors import (
    DomainError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from services.gateway import convert
from services.gateway.auth import Authenticator, Keyring, Principal
from services.gateway.backends.blobs.local import LocalBlobStore
from services.gateway.backends.calls import backend_error
from services.gateway.backends.errors import BackendError
from services.gateway.core import Gateway
from services.gateway.domain import (
    Encoded,
    EncodedBatch,
    IngestAck,
    IngestItem,
    IngestOutcome,
    ModelRef,
    RerankOptions,
    SearchQuery,
    TenantModels,
    TenantModelVersion,
)
from services.gateway.model_versions import ModelVersions
from services.gateway.paging import PageTokens
from services.gateway.policy import AuditLog, Policy
from services.gateway.server import GatewayServicer
from services.gateway.settings import GatewaySettings
from tests.gateway.fakes import (
    MODEL,
    TEXT_GREEN,
    UNSAFE_RED,
    FakeAnalyzer,
    FakeEncoder,
    FakeSearch,
    asset,
    concept,
    png,
    unit,
)

KEYS = Keyring(
    {
        "tenants": {"acme": {"safety_threshold": 0.5, "allowed_licenses": ["CC-BY-4.0", "CC0-1.0"]}},
        "api_keys": {
            "a": {"tenant": "acme", "subject": "alice", "roles": ["search", "ingest", "delete"]},
            "u": {"tenant": "acme", "subject": "ursula", "roles": ["search", "unsafe-content"]},
            "r": {"tenant": "acme", "subject": "reader", "roles": ["search"]},
            "g": {"tenant": "globex", "subject": "gus", "roles": ["admin"]},
        },
    },
    0.5,
)


def who(key: str) -> Principal:
    p = KEYS.lookup_key(key)
    assert p is not None
    return p


ALICE, URSULA, READER, GUS = who("a"), who("u"), who("r"), who("g")


class World:
    def __init__(
        self,
        leaky: bool = False,
        search: FakeSearch | None = None,
        blob_dir: Path | None = None,
        **settings: object,
    ) -> None:
        """`search`, `blob_dir`: another World's index and object store (a restarted gateway)."""
        # The object store is the real local-directory adapter, in a directory of its own.
        self.blob_dir = blob_dir or Path(tempfile.mkdtemp(prefix="gateway-core-blobs-"))
        self.encoder = FakeEncoder()
        self.search = search or FakeSearch(leaky=leaky)
        self.analyzer = FakeAnalyzer()
        self.audit: list[dict[str, object]] = []
        settings.setdefault("analysis_mode", "inline")  # deferred analysis has tests of its own
        config = GatewaySettings(
            ingest_batch_wait_ms=2.0,
            rerank_mmr_lambda=1.0,
            rerank_duplicate_threshold=0.99,
            **settings,  # type: ignore[arg-type]
        )
        self.blobs = LocalBlobStore(self.blob_dir)
        self.gw = Gateway(
            self.encoder,
            self.search,
            self.analyzer,
            self.blobs,
            Policy(AuditLog(self.audit.append)),
            PageTokens(),
            config,
        )

    def add(self, asset_id: str, words: str, tenant: str = "acme", **kw: object) -> None:
        self.search.put(
            asset(asset_id, tenant=tenant, caption=words, **kw), unit(sum(concept(w) for w in words.split()))
        )  # type: ignore[arg-type]


def ids(page) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.asset.asset_id for r in page.results]


@pytest.fixture
def world() -> World:
    w = World()
    w.add("cat", "cat sofa")
    w.add("dog", "dog park")
    w.add("car", "red car street")
    w.add("boat", "boat sea")
    w.add("globex-cat", "cat sofa", tenant="globex")
    return w


# --- search -----------------------------------------------------------------------------------


async def test_text_search_ranks_and_explains(world: World) -> None:
    page = await world.gw.search(ALICE, SearchQuery(text="cat", page_size=3))
    assert ids(page)[0] == "cat"
    top = page.results[0]
    assert top.scores.text_cosine > 0.5 and top.scores.first_stage_rank >= 1 and top.scores.final > 0
    assert top.policy_reasons[0] == "tenant acme" and "CC-BY-4.0 allowed" in top.policy_reasons[1]
    assert page.model == MODEL and not page.degraded
    spec = world.search.queries[-1]
    assert (
        spec.tenant == "acme"
        and spec.include_vectors
        and spec.limit == 100
        and spec.alpha == 0.4
        and spec.fusion == "adaptive"
    )  # settings: the fake model has no card
    assert "license_name" in repr(spec.filter) and "safety_score" in repr(spec.filter)


async def test_image_and_text_plus_image_search(world: World) -> None:
    page = await world.gw.search(ALICE, SearchQuery(image=png("dog park")))
    assert ids(page)[0] == "dog"
    assert page.results[0].scores.image_cosine > 0.9 and page.results[0].scores.text_cosine == 0
    assert world.search.queries[-1].alpha == 1.0 and world.search.queries[-1].text == ""
    both = await world.gw.search(ALICE, SearchQuery(text="red car", image=png("car street")))
    assert ids(both)[0] == "car"
    assert both.results[0].scores.text_cosine > 0 and both.results[0].scores.image_cosine > 0


async def test_query_vectors_are_cached_per_text(world: World) -> None:
    await world.gw.search(ALICE, SearchQuery(text="cat"))
    await world.gw.search(ALICE, SearchQuery(text="cat"))
    assert world.encoder.text_calls == 1


async def test_repeated_search_is_served_from_the_page_cache(world: World) -> None:
    first = await world.gw.search(ALICE, SearchQuery(text="cat", page_size=3))
    again = await world.gw.search(ALICE, SearchQuery(text="cat", page_size=3))
    assert not first.cached and again.cached
    assert ids(again) == ids(first) and len(world.search.queries) == 1  # no first stage on the hit
    assert [r.scores for r in again.results] == [r.scores for r in first.results]
    # Every input that shapes the page is in the key: another page size, alpha, or caller misses.
    await world.gw.search(ALICE, SearchQuery(text="cat", page_size=2))
    await world.gw.search(ALICE, SearchQuery(text="cat", page_size=3, alpha=0.5))
    other = await world.gw.search(URSULA, SearchQuery(text="cat", page_size=3, include_unsafe=True))
    assert not other.cached and len(world.search.queries) == 4
    similar = [await world.gw.search_similar(ALICE, SearchQuery(similar_to="cat")) for _ in range(2)]
    assert [p.cached for p in similar] == [False, True] and ids(similar[0]) == ids(similar[1])


async def test_a_write_invalidates_cached_pages(world: World) -> None:
    await world.gw.search(ALICE, SearchQuery(text="cat"))
    world.add("kitten", "cat kitten")  # any write advances the tenant's index generation
    page = await world.gw.search(ALICE, SearchQuery(text="cat"))
    assert not page.cached and "kitten" in ids(page)
    await world.gw.delete_asset(ALICE, "kitten")
    page = await world.gw.search(ALICE, SearchQuery(text="cat"))
    assert not page.cached and "kitten" not in ids(page)


class ActiveVersion:
    """GetModelVersions of a tenant whose active version the test sets."""

    def __init__(self, active: ModelRef) -> None:
        self.active = active

    async def model_versions(self, tenant: str, coverage: bool = False) -> TenantModels:
        versions = tuple(TenantModelVersion(m, True, m == self.active) for m in (OLD, NEW))
        return TenantModels(versions, self.active, None, 4)


class EncoderOf(FakeEncoder):
    """The fake encoder, answering as the encoder of `model`."""

    def __init__(self, model: ModelRef) -> None:
        super().__init__()
        self.model = model

    async def encode_texts(self, texts: Sequence[str]) -> EncodedBatch:
        return dataclasses.replace(await super().encode_texts(texts), model=self.model)


OLD, NEW = ModelRef("photo", "1"), ModelRef("photo", "2")


async def test_a_page_of_the_old_active_version_is_not_served_after_an_activation(world: World) -> None:
    """A search that read the old active version just before an activation (which advanced the
    generation) keeps its page under the new generation: that page must not answer once the gateway
    knows of the new version (it did, until the next write)."""
    versions = ActiveVersion(OLD)
    world.gw.models = world.gw.search_flow.models = ModelVersions(
        cast(Any, versions), {OLD: EncoderOf(OLD), NEW: EncoderOf(NEW)}, ttl_s=60.0, max_tenants=8
    )
    assert (await world.gw.search(ALICE, SearchQuery(text="cat"))).model == OLD  # reads the state once
    world.search.generation += 1  # the activation at the search service; this gateway's view is old
    versions.active = NEW
    stale = await world.gw.search(ALICE, SearchQuery(text="cat"))
    assert stale.model == OLD and not stale.cached  # kept under the new generation
    world.gw.models.forget("acme")  # the view expires (or this gateway made the change)
    page = await world.gw.search(ALICE, SearchQuery(text="cat"))
    assert page.model == NEW and not page.cached
    assert (await world.gw.search(ALICE, SearchQuery(text="cat"))).cached  # and the new one is kept


async def test_a_remembered_search_plan_is_never_anothers_policy_nor_a_stale_page(world: World) -> None:
    """An identical search by the same principal reuses its validated plan (one entry however often it
    runs); the same key with another policy (narrower licences) is another principal: its page token
    binding differs and the old policy's pages and tokens are not served to it; a write shows at once."""
    world.add("cc0-cat", "cat kitten", license_name="CC0-1.0")
    first = await world.gw.search(ALICE, SearchQuery(text="cat", page_size=1))
    for _ in range(3):
        again = await world.gw.search(ALICE, SearchQuery(text="cat", page_size=1))
        assert again.cached and ids(again) == ids(first)
    plans = world.gw.search_flow._plans
    assert plans is not None and len(plans) == 1
    assert first.next_page_token

    narrowed = dataclasses.replace(ALICE, allowed_licenses=frozenset({"CC0-1.0"}))
    page = await world.gw.search(narrowed, SearchQuery(text="cat", page_size=1))
    assert not page.cached and ids(page) == ["cc0-cat"] and len(plans) == 2
    with pytest.raises(InvalidArgument, match="different query or caller"):
        token = first.next_page_token
        await world.gw.search(narrowed, SearchQuery(text="cat", page_size=1, page_token=token))

    world.add("cat-2", "cat sofa cat", license_name="CC0-1.0")  # a write: the next identical search sees it
    page = await world.gw.search(narrowed, SearchQuery(text="cat", page_size=5))
    assert not page.cached and set(ids(page)) == {"cc0-cat", "cat-2"}


async def test_a_remembered_plan_is_remade_when_the_policy_gives_the_principal_another_visibility(
    world: World,
) -> None:
    """Should the visibility of an unchanged principal change (a policy change inside the gateway), the
    remembered plan's page binding is not reused: a page token of the old visibility is refused and the
    old visibility's cached page is not served."""
    world.add("cc0-cat", "cat kitten", license_name="CC0-1.0")
    first = await world.gw.search(ALICE, SearchQuery(text="cat", page_size=1))
    assert first.next_page_token
    assert (await world.gw.search(ALICE, SearchQuery(text="cat", page_size=1))).cached
    policy = world.gw.search_flow.policy
    visibility = policy.visibility

    def cc0_only(principal: Any, action: str, **kw: Any) -> Any:
        return visibility(principal, action, **{**kw, "requested_licenses": ("CC0-1.0",)})

    policy.visibility = cc0_only  # type: ignore[method-assign]
    page = await world.gw.search(ALICE, SearchQuery(text="cat", page_size=1))
    assert not page.cached and ids(page) == ["cc0-cat"]
    with pytest.raises(InvalidArgument, match="different query or caller"):
        await world.gw.search(ALICE, SearchQuery(text="cat", page_size=1, page_token=first.next_page_token))


async def test_search_plans_can_be_turned_off() -> None:
    w = World(search_plan_entries=0)
    w.add("cat", "cat sofa")
    pages = [await w.gw.search(ALICE, SearchQuery(text="cat")) for _ in range(2)]
    assert w.gw.search_flow._plans is None and ids(pages[0]) == ids(pages[1]) == ["cat"]


async def test_no_page_cache_without_a_consistent_generation(world: World) -> None:
    async def unknown(tenant: str) -> int | None:
        return None  # e.g. Redis unreachable: the search service cannot vouch for its generation

    world.search.index_generation = unknown  # type: ignore[method-assign]
    pages = [await world.gw.search(ALICE, SearchQuery(text="cat")) for _ in range(2)]
    assert not any(p.cached for p in pages) and len(world.search.queries) == 2


async def test_cached_pages_are_rescreened_and_degraded_pages_not_kept(world: World) -> None:
    world.add("soon", "cat soon", expires=dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    first = await world.gw.search(ALICE, SearchQuery(text="cat soon"))
    assert "soon" in ids(first)
    # The licence lapses without a write (time passes): the hit is re-screened and recomputed.
    world.search.store[("acme", "soon")].asset.license_expires_at = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    for r in first.results:
        if r.asset.asset_id == "soon":
            r.asset.license_expires_at = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    again = await world.gw.search(ALICE, SearchQuery(text="cat soon"))
    assert not again.cached and "soon" not in ids(again)
    world.encoder.available = False
    degraded = await world.gw.search(ALICE, SearchQuery(text="dog"))
    world.encoder.available = True
    healthy = await world.gw.search(ALICE, SearchQuery(text="dog"))
    assert degraded.degraded and not healthy.degraded and not healthy.cached


async def test_cached_more_like_this_still_hides_a_source_that_became_invisible(world: World) -> None:
    world.add("kitten", "cat sofa small")
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.5)
    world.search.store[("acme", "cat")].asset.license_expires_at = expires
    first = await world.gw.search_similar(ALICE, SearchQuery(similar_to="cat"))
    assert ids(first)[0] == "kitten"
    await asyncio.sleep(0.6)  # the source's licence lapses with no write: its page is still cached
    with pytest.raises(NotFound):
        await world.gw.search_similar(ALICE, SearchQuery(similar_to="cat"))


async def test_more_like_this_excludes_the_source_and_other_tenants(world: World) -> None:
    world.add("kitten", "cat sofa small")
    page = await world.gw.search_similar(ALICE, SearchQuery(similar_to="cat"))
    assert ids(page)[0] == "kitten" and "cat" not in ids(page) and "globex-cat" not in ids(page)
    with pytest.raises(NotFound):
        await world.gw.search_similar(ALICE, SearchQuery(similar_to="globex-cat"))


async def test_tenant_isolation_holds_even_if_the_backend_leaks() -> None:
    w = World(leaky=True)
    w.add("cat", "cat")
    w.add("globex-cat", "cat globex", tenant="globex")
    w.add("gpl-cat", "cat gpl", license_name="GPL")
    w.add("nsfw-cat", "cat nsfw", safety=0.9)
    w.add("old-cat", "cat old", expires=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    for rerank_opts in (RerankOptions(), RerankOptions(disable=True)):
        page = await w.gw.search(ALICE, SearchQuery(text="cat", rerank=rerank_opts))
        assert ids(page) == ["cat"]
    denied = {e.get("asset_id") for e in w.audit if e["decision"] == "deny"}
    assert {"globex-cat", "gpl-cat", "nsfw-cat", "old-cat"} <= denied
    page = await w.gw.search_similar(ALICE, SearchQuery(similar_to="cat"))
    assert ids(page) == []
    with pytest.raises(NotFound):
        await w.gw.get_asset(ALICE, "globex-cat")  # the leaky store returns it only for its tenant


async def test_licence_expiry_and_safety_are_filtered(world: World) -> None:
    # distinct words: identical embeddings would collapse as near-duplicates
    world.add("gpl", "cat gpl", license_name="GPL")
    world.add("expired", "cat expired", expires=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    world.add("later", "cat later", expires=dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    world.add("nsfw", "cat nsfw", safety=0.8)
    page = await world.gw.search(ALICE, SearchQuery(text="cat"))
    assert {"gpl", "expired", "nsfw"}.isdisjoint(ids(page)) and "later" in ids(page)
    with pytest.raises(PermissionDenied):
        await world.gw.search(ALICE, SearchQuery(text="cat", include_unsafe=True))
    opted_in = await world.gw.search(URSULA, SearchQuery(text="cat", include_unsafe=True))
    assert "nsfw" in ids(opted_in)
    narrowed = await world.gw.search(ALICE, SearchQuery(text="cat", licenses=("CC0-1.0",)))
    assert ids(narrowed) == []
    with pytest.raises(NotFound):
        await world.gw.get_asset(ALICE, "nsfw")
    asset_, reasons = await world.gw.get_asset(ALICE, "cat")
    assert asset_.asset_id == "cat" and reasons[0] == "tenant acme"


async def test_encoder_down_degrades_text_search_to_keywords(world: World) -> None:
    world.encoder.available = False
    page = await world.gw.search(ALICE, SearchQuery(text="dog"))
    assert page.degraded and "keyword-only" in page.degraded_reasons[0]
    assert ids(page) == ["dog"]
    assert world.search.queries[-1].alpha == 0.0 and world.search.queries[-1].vector is None
    both = await world.gw.search(ALICE, SearchQuery(text="dog", image=png("dog")))
    assert both.degraded and "the example image was ignored" in both.degraded_reasons
    with pytest.raises(Unavailable, match="image search needs the encoder"):
        await world.gw.search(ALICE, SearchQuery(image=png("dog")))


async def test_pagination_is_complete_and_bound_to_the_query(world: World) -> None:
    for i in range(7):
        world.add(f"cat{i}", f"cat number{i}")
    for opts in (RerankOptions(), RerankOptions(disable=True)):
        seen: list[str] = []
        token = ""
        for _ in range(10):
            page = await world.gw.search(
                ALICE, SearchQuery(text="cat", page_size=3, page_token=token, rerank=opts)
            )
            seen += ids(page)
            token = page.next_page_token
            if not token:
                break
        assert len(seen) == len(set(seen)) and {f"cat{i}" for i in range(7)} | {"cat"} <= set(seen)
    first = await world.gw.search(ALICE, SearchQuery(text="cat", page_size=2))
    with pytest.raises(InvalidArgument, match="different query"):
        await world.gw.search(ALICE, SearchQuery(text="dog", page_size=2, page_token=first.next_page_token))
    with pytest.raises(InvalidArgument, match="different query"):
        await world.gw.search(GUS, SearchQuery(text="cat", page_size=2, page_token=first.next_page_token))


async def test_bad_search_requests(world: World) -> None:
    for q, msg in [
        (SearchQuery(), "query text"),
        (SearchQuery(text="x", page_size=101), "page_size"),
        (SearchQuery(text="x", alpha=1.5), "alpha"),
        (SearchQuery(text="x", rerank=RerankOptions(mmr_lambda=2)), "mmr_lambda"),
        (SearchQuery(text="x", rerank=RerankOptions(candidate_window=5000)), "candidate_window"),
        (SearchQuery(image=b"not an image"), "not a readable image"),
    ]:
        with pytest.raises(InvalidArgument, match=msg):
            await world.gw.search(ALICE, q)


def _in_list(n: int) -> common_pb2.Filter:
    values = common_pb2.ValueList(values=[common_pb2.Value(string_value=f"v{i}") for i in range(n)])
    return common_pb2.Filter(
        condition=common_pb2.Condition(field="owner", operator=common_pb2.FILTER_OPERATOR_IN, values=values)
    )


def _all_of(n: int) -> common_pb2.Filter:
    """An AND of n - 1 single conditions: n nodes."""
    one = common_pb2.Filter(
        condition=common_pb2.Condition(
            field="owner", operator=common_pb2.FILTER_OPERATOR_EQUAL, value=common_pb2.Value(string_value="x")
        )
    )
    return common_pb2.Filter(all_of=common_pb2.FilterList(filters=[one] * (n - 1)))


async def test_every_size_cap_applies_at_the_gateway_before_any_backend_call() -> None:
    from services.gateway.limits import MAX_FILTER_NODES, MAX_FILTER_VALUES, MAX_LIST_VALUES

    w = World(ingest_max_bytes=1000)
    w.add("cat", "cat")
    # IN / CONTAINS lists: refused as the filter is read, before any value is converted
    with pytest.raises(InvalidArgument, match=f"takes at most {MAX_LIST_VALUES} values, got 100000"):
        convert.filter_from_pb(_in_list(100_000))
    assert convert.filter_from_pb(_in_list(MAX_LIST_VALUES)) is not None
    # all of a filter's lists together
    full_lists = common_pb2.Filter(all_of=common_pb2.FilterList(filters=[_in_list(MAX_LIST_VALUES)] * 8))
    assert convert.filter_from_pb(full_lists) is not None
    full_lists.all_of.filters.append(_in_list(1))
    with pytest.raises(InvalidArgument, match=f"more than {MAX_FILTER_VALUES} values in all"):
        convert.filter_from_pb(full_lists)
    # node count: the caller's filter, then with the policy's own conditions added
    with pytest.raises(InvalidArgument, match=f"more than {MAX_FILTER_NODES} nodes"):
        convert.filter_from_pb(_all_of(MAX_FILTER_NODES + 1))
    at_cap = convert.filter_from_pb(_all_of(MAX_FILTER_NODES))
    with pytest.raises(InvalidArgument, match="policy's own conditions"):
        await w.gw.search(ALICE, SearchQuery(text="cat", filter=at_cap))
    with pytest.raises(InvalidArgument, match="policy's own conditions"):
        await w.gw.search_similar(ALICE, SearchQuery(similar_to="cat", filter=at_cap))
    # licence names become an IN list too
    many = tuple(f"L{i}" for i in range(MAX_LIST_VALUES + 1))
    with pytest.raises(InvalidArgument, match="licenses takes at most"):
        await w.gw.search(GUS, SearchQuery(text="cat", licenses=many))
    # image bytes, before hashing or decoding
    with pytest.raises(ResourceExhausted, match="byte cap"):
        await w.gw.search(ALICE, SearchQuery(image=b"\x89PNG" + b"0" * 2000))
    # rerank options, before the query is encoded
    with pytest.raises(InvalidArgument, match="candidate_window must be 1-1000"):
        await w.gw.search(ALICE, SearchQuery(text="cat", rerank=RerankOptions(candidate_window=5000)))
    # asset ids
    long_id = "x" * 257
    for call in (w.gw.get_asset, w.gw.delete_asset):
        with pytest.raises(InvalidArgument, match="asset_id must be 1-256"):
            await call(ALICE, long_id)
    with pytest.raises(InvalidArgument, match="asset_id must be 1-256"):
        await w.gw.search_similar(ALICE, SearchQuery(similar_to=long_id))
    assert w.search.queries == [] and w.encoder.image_calls == [] and w.encoder.text_calls == 0


async def test_delete_asset(world: World) -> None:
    await world.gw.delete_asset(ALICE, "cat")
    with pytest.raises(NotFound):
        await world.gw.delete_asset(ALICE, "cat")
    with pytest.raises(PermissionDenied):
        await world.gw.delete_asset(READER, "dog")
    with pytest.raises(NotFound):
        await world.gw.delete_asset(ALICE, "globex-cat")
    assert ("globex", "globex-cat") in world.search.store


# --- ingest -----------------------------------------------------------------------------------


def item(asset_id: str, words: str, color: tuple[int, int, int] = (9, 9, 9), **kw: object) -> IngestItem:
    fields: dict[str, object] = {"caption": words, "license_name": "CC-BY-4.0", **kw}
    return IngestItem(asset_id=asset_id, image=png(words, color), **fields)  # type: ignore[arg-type]


async def stream(items: Iterable[IngestItem]) -> AsyncIterator[IngestItem]:
    for it in items:
        yield it


async def run_ingest(w: World, items: list[IngestItem], who: Principal = ALICE) -> dict[str, IngestAck]:
    acks: dict[str, IngestAck] = {}
    async for ack in w.gw.ingest(who, stream(items)):
        if ack.outcome in (IngestOutcome.CREATED, IngestOutcome.UPDATED):
            # acknowledged only after the store confirmed it
            assert (who.tenant, ack.asset_id) in w.search.store
        acks[ack.asset_id] = ack
    assert len(acks) == len({i.asset_id for i in items})
    return acks


async def test_ingest_outcomes_and_idempotent_retry() -> None:
    w = World()
    items = [item(f"img{i}", f"thing{i} object") for i in range(20)]
    acks = await run_ingest(w, items)
    assert {a.outcome for a in acks.values()} == {IngestOutcome.CREATED}
    assert max(w.encoder.image_calls) > 1  # concurrent items were batched into one EncodeImages
    stored = w.search.store[("acme", "img3")].asset
    assert stored.content_sha256 == acks["img3"].content_sha256 and stored.width == 32
    assert stored.embedding_model == MODEL and stored.created_at is not None
    encoded = sum(w.encoder.image_calls)

    again = await run_ingest(w, items)  # a client retrying the whole stream
    assert {a.outcome for a in again.values()} == {IngestOutcome.UNCHANGED}
    assert sum(w.encoder.image_calls) == encoded and len(w.search.store) == 20

    changed = await run_ingest(w, [item("img3", "thing3 object", tags=("new",))])
    assert changed["img3"].outcome is IngestOutcome.UPDATED
    assert sum(w.encoder.image_calls) == encoded  # same bytes: no re-encode
    assert w.search.store[("acme", "img3")].asset.tags == ["new"]
    assert w.search.store[("acme", "img3")].asset.created_at == stored.created_at

    new_bytes = await run_ingest(w, [item("img3", "thing3 object", color=(1, 2, 3))])
    assert new_bytes["img3"].outcome is IngestOutcome.UPDATED and sum(w.encoder.image_calls) == encoded + 1


async def test_duplicates_by_content_hash() -> None:
    w = World()
    await run_ingest(w, [item("orig", "cat")])
    acks = await run_ingest(w, [item("copy", "cat")])
    assert acks["copy"].outcome is IngestOutcome.DUPLICATE and acks["copy"].duplicate_of == "orig"
    assert ("acme", "copy") not in w.search.store
    # Same bytes twice in one stream, in flight together: exactly one is stored.
    both = await run_ingest(w, [item("x1", "zebra"), item("x2", "zebra")])
    outcomes = sorted(a.outcome.name for a in both.values())
    assert outcomes == ["CREATED", "DUPLICATE"]
    # Another tenant may store the same bytes.
    other = await run_ingest(w, [item("orig", "cat")], who=GUS)
    assert other["orig"].outcome is IngestOutcome.CREATED


async def test_a_duplicate_never_names_an_asset_the_caller_cannot_see() -> None:
    mine = item("mine", "cat")
    sha = hashlib.sha256(mine.image).hexdigest()
    hidden_kinds = {
        "gpl": {"license_name": "GPL"},
        "unsafe": {"safety": 0.9},
        "expired": {"expires": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)},
    }
    for hidden_id, kw in hidden_kinds.items():
        w = World()
        w.search.put(asset(hidden_id, sha=sha, **kw), concept("cat"))  # type: ignore[arg-type]
        with pytest.raises(NotFound):
            await w.gw.get_asset(ALICE, hidden_id)
        acks = await run_ingest(w, [mine])
        # As if the hidden holder did not exist: stored as the caller's own asset.
        assert acks["mine"].outcome is IngestOutcome.CREATED and acks["mine"].duplicate_of == "", hidden_id
        assert ("acme", "mine") in w.search.store
        assert any(e.get("asset_id") == hidden_id and e["decision"] == "deny" for e in w.audit)
        again = await run_ingest(w, [item("again", "cat")])  # a holder the caller sees is named
        assert again["again"].outcome is IngestOutcome.DUPLICATE and again["again"].duplicate_of == "mine"


async def test_a_concurrent_same_bytes_item_hidden_from_the_caller_is_not_named() -> None:
    w = World()
    wide = Principal("wide", "acme", frozenset({"ingest"}), 0.5, None, "api-key")  # every licence
    analyze = w.analyzer.analyze
    analysing = asyncio.Event()

    async def slow_analysis(rgb: object) -> object:
        analysing.set()
        await asyncio.sleep(0.1)
        return await analyze(rgb)  # type: ignore[arg-type]

    w.analyzer.analyze = slow_analysis  # type: ignore[method-assign, assignment]
    first = asyncio.ensure_future(run_ingest(w, [item("gpl-cat", "cat", license_name="GPL")], who=wide))
    await asyncio.wait_for(analysing.wait(), 10)  # the wide caller's item holds the claim on the bytes
    assert w.gw.ingest_flow._sha_claims
    acks = await run_ingest(w, [item("mine", "cat"), item("mine-too", "cat")])
    await first
    # Never the hidden copy; and of the caller's own two, exactly one is stored.
    assert sorted(a.outcome.name for a in acks.values()) == ["CREATED", "DUPLICATE"]
    assert {a.duplicate_of for a in acks.values()} <= {"", "mine", "mine-too"}
    assert sum(aid in ("mine", "mine-too") for _, aid in w.search.store) == 1


async def test_one_bad_item_fails_only_itself() -> None:
    w = World()
    w.search.fail_upsert_ids.add("rejected")
    items = [
        item("good1", "a"),
        IngestItem(asset_id="garbage", image=b"\x00\x01 not an image", license_name="CC0-1.0"),
        item("nolicence", "b", license_name=""),
        IngestItem(asset_id="unencodable", image=_plain_png(), license_name="CC0-1.0"),
        item("", "c"),
        item("rejected", "d"),
        item("good2", "e"),
    ]
    acks = await run_ingest(w, items)
    assert acks["good1"].outcome is acks["good2"].outcome is IngestOutcome.CREATED
    assert (acks["garbage"].error_code, acks["nolicence"].error_code, acks[""].error_code) == (3, 3, 3)
    assert "not a readable image" in acks["garbage"].error_message
    assert (
        acks["unencodable"].outcome is IngestOutcome.FAILED
        and "encoder rejected" in acks["unencodable"].error_message
    )
    assert (
        acks["rejected"].outcome is IngestOutcome.FAILED and "did not store" in acks["rejected"].error_message
    )
    assert set(k for _, k in w.search.store) == {"good1", "good2"}


def _wire(asset_id: str, words: str, **kw: object) -> IngestItem:
    """An item as the servicer gets it: through convert, from the request message."""
    req = gateway_pb2.IngestRequest(
        asset_id=asset_id, image=png(words), caption=words, license=common_pb2.License(name="CC0-1.0")
    )
    expires = kw.pop("expires", None)
    if expires is not None:
        req.license.expires_at.CopyFrom(expires)  # type: ignore[arg-type]
    for name, value in kw.items():
        setattr(req, name, value)
    return convert.ingest_item(req)  # never raises: a bad field fails only its item


async def test_out_of_range_expiry_or_popularity_fails_only_that_item() -> None:
    w = World()
    bad = {
        "year-10000": _wire("year-10000", "b1", expires=Timestamp(seconds=253402300800)),
        "far-past": _wire("far-past", "b2", expires=Timestamp(seconds=-(10**12))),
        "nanos-high": _wire("nanos-high", "b3", expires=Timestamp(seconds=1, nanos=1_000_000_000)),
        "nanos-negative": _wire("nanos-negative", "b4", expires=Timestamp(seconds=1, nanos=-1)),
        "nan": _wire("nan", "b5", popularity=float("nan")),
        "inf": _wire("inf", "b6", popularity=float("inf")),
        "negative": _wire("negative", "b7", popularity=-1.0),
    }
    good = [
        _wire("ok1", "g1"),
        _wire("ok2", "g2", expires=Timestamp(seconds=253402300799, nanos=999_999_999), popularity=3.5),
    ]
    acks = await run_ingest(w, [good[0], *bad.values(), good[1]])
    assert acks["ok1"].outcome is acks["ok2"].outcome is IngestOutcome.CREATED
    for name in bad:
        assert acks[name].outcome is IngestOutcome.FAILED and acks[name].error_code == 3, name
    assert "license.expires_at is not a valid timestamp" in acks["year-10000"].error_message
    assert "nanos=-1" in acks["nanos-negative"].error_message
    assert "popularity must be a finite number >= 0" in acks["nan"].error_message
    assert set(k for _, k in w.search.store) == {"ok1", "ok2"}
    stored = w.search.store[("acme", "ok2")].asset
    assert stored.license_expires_at is not None and stored.license_expires_at.year == 9999
    again = await run_ingest(w, good)  # the exact expiry round-trips: a retry changes nothing
    assert {a.outcome for a in again.values()} == {IngestOutcome.UNCHANGED}


class _Context:
    """Just enough of a grpc.aio.ServicerContext for the servicer: the caller's metadata."""

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [("authorization", "Bearer a")]


async def test_caller_messages_name_no_exception_class_library_or_backend() -> None:
    w = World()
    class_name = re.compile(r"[A-Z][a-z]+(Error|Exception)")

    async def encoder_says(images: list[bytes]) -> EncodedBatch:  # the encoder's wording, as it was
        why = "image header is corrupt: UnidentifiedImageError: cannot identify image file <_io.BytesIO>"
        return EncodedBatch(MODEL, [Encoded(None, 3, why) for _ in images])

    def refused() -> grpc.aio.AioRpcError:
        details = (
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
            "ConnectionRefusedError"
        )
        return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, None, None, details=details)

    async def search_down(*args: object, **kw: object) -> None:
        raise backend_error("search", refused())

    w.encoder.encode_images = encoder_says  # type: ignore[method-assign, assignment]
    acks = await run_ingest(w, [item("corrupt", "x")])
    assert acks["corrupt"].error_message == "encoder rejected the image: image header is corrupt"
    del w.encoder.encode_images  # the fake's own again
    w.search.upsert = search_down  # type: ignore[method-assign, assignment]
    w.search.query = search_down  # type: ignore[method-assign, assignment]
    acks = await run_ingest(w, [item("unstored", "y")])
    assert acks["unstored"].outcome is IngestOutcome.UNCERTAIN and acks["unstored"].error_code == 14
    servicer = GatewayServicer(w.gw, Authenticator(KEYS, None), AuditLog(lambda e: None))
    with pytest.raises(DomainError) as err:
        await servicer.Search(gateway_pb2.SearchRequest(text="cat"), _Context())  # type: ignore[arg-type]
    assert err.value.code == grpc.StatusCode.UNAVAILABLE and not isinstance(err.value, BackendError)
    for message in (acks["unstored"].error_message, err.value.message):
        assert "unavailable" in message and not class_name.search(message), message
        assert "ipv4" not in message and not message.startswith("search:"), message


async def test_ingest_pixel_and_size_caps() -> None:
    w = World(ingest_max_pixels=32 * 32 - 1)
    acks = await run_ingest(w, [item("big", "x")])
    assert acks["big"].error_code == 8 and "pixel cap" in acks["big"].error_message
    w = World(ingest_max_bytes=10)
    acks = await run_ingest(w, [item("big", "x")])
    assert acks["big"].outcome is IngestOutcome.FAILED and "byte cap" in acks["big"].error_message


async def test_safety_and_ocr_at_ingest() -> None:
    w = World()
    acks = await run_ingest(
        w, [item("unsafe", "beach", color=UNSAFE_RED), item("sign", "road", color=TEXT_GREEN)]
    )
    assert acks["unsafe"].safety_labels[0].label == "FEMALE_BREAST_EXPOSED"
    assert w.search.store[("acme", "unsafe")].asset.safety_score == 0.9
    assert acks["sign"].ocr_text == "exit 42"
    page = await w.gw.search(ALICE, SearchQuery(text="beach"))
    assert "unsafe" not in ids(page)
    page = await w.gw.search(URSULA, SearchQuery(text="beach", include_unsafe=True))
    assert "unsafe" in ids(page)
    w.encoder.available = False
    page = await w.gw.search(ALICE, SearchQuery(text="exit"))
    assert ids(page) == ["sign"]  # the OCR text is keyword-searchable


async def test_ingest_needs_the_role_and_tags_the_callers_tenant() -> None:
    w = World()
    with pytest.raises(PermissionDenied):
        await run_ingest(w, [item("a", "b")], who=READER)
    await run_ingest(w, [item("a", "b")], who=GUS)
    assert ("globex", "a") in w.search.store and w.search.store[("globex", "a")].asset.tenant == "globex"


async def test_ingest_stream_is_bounded() -> None:
    w = World(ingest_max_in_flight=2)
    in_flight = 0
    peak = 0
    real = w.gw.ingest_flow.ingest_one

    async def counting(principal: Principal, it: IngestItem) -> IngestAck:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.001)
            return await real(principal, it)
        finally:
            in_flight -= 1

    w.gw.ingest_flow.ingest_one = counting  # type: ignore[method-assign]
    await run_ingest(w, [item(f"i{i}", f"w{i}") for i in range(8)])
    assert peak == 2


def _plain_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    return buf.getvalue()
