"""The Weaviate SearchBackend: client lifecycle, the guarded call (deadline + error mapping), the
collection and its model, tenants, writes and reads; queries are in query.py, the schema in schema.py."""

from __future__ import annotations

import asyncio
import json
import re
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
import httpx
import numpy as np
import structlog
import weaviate
import weaviate.classes as wvc
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential
from weaviate.classes.config import (
    Configure,
    ConsistencyLevel,
    DataType,
    Property,
    Tokenization,
    VectorDistances,
)
from weaviate.classes.query import Filter
from weaviate.classes.tenants import Tenant
from weaviate.config import AdditionalConfig, GrpcConfig, Timeout
from weaviate.exceptions import (
    UnexpectedStatusCodeError,
    WeaviateBaseError,
    WeaviateClosedClientError,
    WeaviateConnectionError,
    WeaviateGRPCUnavailableError,
    WeaviateInsertManyAllFailedError,
    WeaviateInvalidInputError,
    WeaviateQueryError,
    WeaviateTimeoutError,
)

from services.common.balancing import RECONNECT_OPTIONS
from services.common.context import remaining, request_id
from services.common.errors import FailedPrecondition, NotFound, Unavailable
from services.search.backends.weaviate.query import run_query
from services.search.backends.weaviate.schema import (
    ANALYSIS_STATE_PROPERTY,
    VECTOR_NAME,
    as_utc,
    collection_properties,
    doc_to_properties,
    object_uuid,
    properties_to_doc,
    weaviate_vector,
)
from services.search.domain import (
    BM25_B,
    BM25_K1,
    AssetRecord,
    CollectionInfo,
    Hit,
    ItemFailure,
    ModelRef,
    PendingAsset,
    QueryPlan,
    Stats,
    TenantModels,
)

log = structlog.get_logger("search.weaviate")

_TENANT_MISSING = re.compile(r"tenant not found|tenant .* not found|no tenant found", re.IGNORECASE)
_TOO_FEW_NODES = re.compile(r"not find enough weaviate nodes for replication", re.IGNORECASE)
# Weaviate answers again after a restart before it has loaded every collection's index: a query then
# fails "tried to browse non-existing index" for a few seconds. Retryable, like an unreachable Weaviate.
_LOADING = re.compile(r"non-existing index", re.IGNORECASE)
_UNREACHABLE = re.compile(
    r"UNAVAILABLE|connect|Connection refused|DEADLINE_EXCEEDED|timed? ?out|Socket closed", re.IGNORECASE
)
_CREDENTIALS = re.compile(r"UNAUTHENTICATED|PERMISSION_DENIED|unauthorized: invalid api key", re.IGNORECASE)
# Objects per page of a content-hash lookup.
_HASH_PAGE = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

T = TypeVar("T")


def api_key_auth(api_key: str | None) -> Any:
    """The client's credentials for Weaviate's API-key authentication; None: anonymous access."""
    return wvc.init.Auth.api_key(api_key) if api_key else None


def _credentials_refused(exc: BaseException, text: str) -> bool:
    """Weaviate turned the call away for its credentials (REST 401/403, gRPC UNAUTHENTICATED or
    PERMISSION_DENIED, or its gRPC API's "unauthorized: invalid api key"): a configuration error, not
    an outage to wait out."""
    if isinstance(exc, UnexpectedStatusCodeError):
        return exc.status_code in (401, 403)
    return _CREDENTIALS.search(text) is not None


class _ConnectionRefused(Exception):
    """The gRPC connection to Weaviate failed while a call was waiting on it."""


def _unreachable(what: str, exc: BaseException) -> Unavailable:
    """UNAVAILABLE for a call Weaviate could not take; the client's own words (exception types, gRPC
    status prefixes, addresses) are logged, not sent to the caller."""
    log.warning("weaviate unreachable", what=what, error=repr(exc)[:500])
    return Unavailable(f"weaviate is unreachable ({what}); retry later")


def _rejected(reason: str, asset_id: str = "") -> ItemFailure:
    """One object Weaviate refused. Input it calls invalid is the caller's to fix; anything else is
    worth a retry. Weaviate's message (its class and property names) is logged with the request id."""
    log.warning("weaviate rejected an object", asset_id=asset_id, reason=reason[:500])
    if "invalid" in reason.lower():
        return ItemFailure(
            3,
            "the index refused one of the asset's values; check them against common.proto "
            f"(details in the search service log, request id {request_id()})",
        )
    return ItemFailure(14, "the index could not store the asset now; retry")


@dataclass(frozen=True)
class Replication:
    """How the collection lives on a Weaviate cluster: copies of each tenant's shard (set when the
    collection is created) and the consistency level of every write and read."""

    factor: int = 1
    async_enabled: bool = False
    write_consistency: str = "QUORUM"
    read_consistency: str = "QUORUM"
    async_frequency_s: float = 30.0
    async_delay_s: float = 30.0

    def config(self) -> Any:
        """The collection's replication config (async replication only with copies to compare)."""
        if not (self.async_enabled and self.factor > 1):
            return Configure.replication(factor=self.factor, async_enabled=self.async_enabled)
        return Configure.replication(
            factor=self.factor,
            async_enabled=True,
            async_config=Configure.Replication.async_config(  # Weaviate takes milliseconds
                frequency=int(self.async_frequency_s * 1000),
                frequency_while_propagating=min(5000, int(self.async_frequency_s * 1000)),
                propagation_delay=int(self.async_delay_s * 1000),
            ),
        )


class WeaviateBackend:
    name = "weaviate"

    def __init__(
        self,
        host: str,
        http_port: int,
        grpc_port: int,
        collection: str,
        timeout_s: float,
        write_timeout_s: float,
        hnsw: dict[str, int],
        expected_model: ModelRef | None = None,
        expected_dimension: int = 0,
        replication: Replication | None = None,
        api_key: str | None = None,
    ) -> None:
        self._host, self._http_port, self._grpc_port = host, http_port, grpc_port
        self._api_key = api_key
        replication = replication or Replication()
        self._replication = replication
        self._write_level = ConsistencyLevel(replication.write_consistency)
        self._read_level = ConsistencyLevel(replication.read_consistency)
        self._name = collection
        self._timeout_s = timeout_s
        self._write_timeout_s = write_timeout_s
        self._hnsw = hnsw
        self._expected = (expected_model, expected_dimension)
        self._client: weaviate.WeaviateAsyncClient | None = None
        self._info = CollectionInfo(None, 0)
        self._known_tenants: set[str] = set()
        self._tenant_lock = asyncio.Lock()
        self._schema_lock = asyncio.Lock()
        self._collection_ready = False
        self._models_ready = False

    # ---- lifecycle -------------------------------------------------------------------------------

    def _new_client(self) -> weaviate.WeaviateAsyncClient:
        t = max(1, int(self._timeout_s))
        return weaviate.use_async_with_custom(
            http_host=self._host,
            http_port=self._http_port,
            http_secure=False,
            grpc_host=self._host,
            grpc_port=self._grpc_port,
            grpc_secure=False,
            auth_credentials=api_key_auth(self._api_key),
            additional_config=AdditionalConfig(
                timeout=Timeout(init=t, query=t, insert=max(t, int(self._write_timeout_s))),
                grpc_config=GrpcConfig(channel_options=RECONNECT_OPTIONS),
            ),
            skip_init_checks=True,
        )

    async def start(self) -> None:
        self._client = self._new_client()
        try:
            await self._ensure_collection()
        except Unavailable as exc:
            # The service starts anyway (health reports NOT_SERVING); the collection is made on first use.
            log.warning("weaviate not reachable at start", error=exc.message)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def ready(self) -> bool:
        if self._client is None:
            return False
        try:
            if not self._client.is_connected():
                await self._client.connect()
            ok = bool(await self._client.is_ready())
            if ok and not self._collection_ready:
                await self._ensure_collection()
            return ok
        except Exception:
            return False

    async def _call(self, fn: Callable[[], Awaitable[T]], what: str, write: bool = False) -> T:
        """Run one Weaviate call under the caller's deadline, mapping failures to domain errors."""
        assert self._client is not None
        timeout = remaining(self._write_timeout_s if write else self._timeout_s)
        try:
            if not self._client.is_connected():
                await asyncio.wait_for(self._client.connect(), timeout)
            return await self._unless_refused(fn(), timeout)
        except _ConnectionRefused as exc:
            raise _unreachable(what, exc) from exc
        except (TimeoutError, WeaviateTimeoutError) as exc:
            raise Unavailable(f"weaviate did not answer {what} within {timeout:.1f}s") from exc
        except (
            WeaviateConnectionError,
            WeaviateGRPCUnavailableError,
            WeaviateClosedClientError,
            OSError,
            # The client passes some REST failures on raw (a Weaviate killed mid-request: "Server
            # disconnected without sending a response" while reading the collection's configuration).
            httpx.TransportError,
        ) as exc:
            raise _unreachable(what, exc) from exc
        except (WeaviateQueryError, UnexpectedStatusCodeError, WeaviateBaseError) as exc:
            text = str(exc)
            if _credentials_refused(exc, text):
                log.error("weaviate refused this service's credentials", what=what, error=text[:300])
                raise FailedPrecondition(
                    "weaviate refused this service's credentials; set IMAGESEARCH_SEARCH_WEAVIATE_API_KEY "
                    "to a key it allows"
                ) from exc
            if _TENANT_MISSING.search(text):
                raise NotFound("tenant has no assets (it is created by its first upsert)") from exc
            if _UNREACHABLE.search(text):
                raise _unreachable(what, exc) from exc
            if _LOADING.search(text):
                raise Unavailable(f"weaviate is still loading the collection ({what}); retry later") from exc
            raise

    async def _unless_refused(self, call: Awaitable[T], limit_s: float) -> T:
        """Await `call` for at most `limit_s`, but give up at once when the gRPC connection fails.

        The client retries a gRPC call that failed UNAVAILABLE after 1, 2, 4... seconds, with no
        setting to turn that off, so a refused connection would only surface as a timeout at the
        caller's deadline (DEADLINE_EXCEEDED, and no time left for the caller to retry elsewhere).
        The channel's connectivity state says it first: TRANSIENT_FAILURE is a failed connection
        attempt (refused, reset, unreachable), not a slow answer.
        """
        task = asyncio.ensure_future(call)
        refused = asyncio.ensure_future(self._connection_failed())
        try:
            done, _ = await asyncio.wait({task, refused}, timeout=limit_s, return_when=FIRST_COMPLETED)
        finally:
            for waiter in (task, refused):
                if not waiter.done():
                    waiter.cancel()
            await asyncio.gather(task, refused, return_exceptions=True)
        if task in done:
            return task.result()
        if refused in done:
            raise _ConnectionRefused("the gRPC channel to weaviate is in TRANSIENT_FAILURE")
        raise TimeoutError

    async def _connection_failed(self) -> None:
        """Return when the client's gRPC channel reports a failed connection (never, if it has none)."""
        # The client does not expose its channel; it is only read here, for its connectivity state.
        channel = getattr(getattr(self._client, "_connection", None), "_grpc_channel", None)
        if not isinstance(channel, grpc.aio.Channel):
            await asyncio.Event().wait()
            return
        state = channel.get_state(try_to_connect=False)
        while state is not grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            await channel.wait_for_state_change(state)
            state = channel.get_state(try_to_connect=False)

    async def _ensure_collection(self) -> None:
        async with self._schema_lock:
            if self._collection_ready:
                return
            assert self._client is not None
            client = self._client

            async def ensure() -> None:
                if not await client.collections.exists(self._name):
                    try:
                        await client.collections.create(
                            self._name,
                            description=json.dumps({"imagesearch": {}}),
                            properties=collection_properties(),
                            vector_config=[self._vector_config(VECTOR_NAME)],
                            multi_tenancy_config=Configure.multi_tenancy(
                                enabled=True, auto_tenant_creation=False, auto_tenant_activation=True
                            ),
                            replication_config=self._replication.config(),
                            inverted_index_config=Configure.inverted_index(
                                bm25_k1=BM25_K1,
                                bm25_b=BM25_B,
                                index_null_state=True,
                                stopwords_preset=wvc.config.StopwordsPreset.NONE,
                            ),
                        )
                    except UnexpectedStatusCodeError as exc:
                        if _TOO_FEW_NODES.search(str(exc)):
                            log.error("weaviate has too few nodes for the replication factor", error=str(exc))
                            raise FailedPrecondition(
                                "the Weaviate cluster has fewer nodes than IMAGESEARCH_SEARCH_WEAVIATE_"
                                f"REPLICATION_FACTOR ({self._replication.factor}): lower it or add nodes"
                            ) from None
                        if "already exists" not in str(exc):
                            raise
                await self._add_analysis_state(client)
                await self._load_info()

            await self._call(ensure, "collection setup")
            self._collection_ready = True
        model, dim = self._expected
        if model is not None and dim and self._info.model is None:
            await self.set_collection_model(model, dim)

    async def _add_analysis_state(self, client: weaviate.WeaviateAsyncClient) -> None:
        """A collection made before analysis states gets the property (its objects have no value:
        analysed)."""
        col = client.collections.get(self._name)
        if any(p.name == ANALYSIS_STATE_PROPERTY.name for p in (await col.config.get()).properties):
            return
        try:
            await col.config.add_property(ANALYSIS_STATE_PROPERTY)
        except (UnexpectedStatusCodeError, WeaviateInvalidInputError) as exc:
            if "already exists" not in str(exc):
                raise
        log.info("analysis_state property added to the collection", collection=self._name)

    async def _load_info(self) -> None:
        assert self._client is not None
        cfg = await self._client.collections.get(self._name).config.get()
        try:
            meta = json.loads(cfg.description or "{}").get("imagesearch", {})
        except ValueError:
            meta = {}
        if meta.get("model"):
            self._info = CollectionInfo(
                ModelRef(meta["model"]["name"], meta["model"]["version"]),
                int(meta["dimension"]),
                {str(n): int(d) for n, d in meta.get("named", {}).items()},
                {ModelRef(v["name"], v["version"]): str(v["slot"]) for v in meta.get("versions", [])},
            )

    def _vector_config(self, name: str) -> Any:
        return Configure.Vectors.self_provided(
            name=name,
            vector_index_config=Configure.VectorIndex.hnsw(
                distance_metric=VectorDistances.COSINE,
                max_connections=self._hnsw["max_connections"],
                ef_construction=self._hnsw["ef_construction"],
                ef=self._hnsw["ef"],
            ),
        )

    async def _write_info(self, info: CollectionInfo) -> None:
        """The collection's description records the model, the primary's dimension and the other named
        vectors' dimensions (a description written before named vectors has none)."""
        assert self._client is not None and info.model is not None
        desc = {
            "imagesearch": {
                "model": {"name": info.model.name, "version": info.model.version},
                "dimension": info.dimension,
                "named": info.named,
                "versions": [
                    {"name": m.name, "version": m.version, "slot": slot} for m, slot in info.versions.items()
                ],
            }
        }
        await self._client.collections.get(self._name).config.update(description=json.dumps(desc))
        await self._load_info()

    def _collection(self, tenant: str, write: bool = False) -> Any:
        """One tenant's view of the collection, at the write or the read consistency level."""
        assert self._client is not None
        level = self._write_level if write else self._read_level
        return self._client.collections.get(self._name).with_tenant(tenant).with_consistency_level(level)

    # ---- collection model ------------------------------------------------------------------------

    async def collection_info(self, refresh: bool = False) -> CollectionInfo:
        if not self._collection_ready:
            await self._ensure_collection()
        elif refresh:
            await self._call(self._load_info, "collection info")
        return self._info

    async def set_collection_model(self, model: ModelRef, dimension: int) -> CollectionInfo:
        async def update() -> None:
            await self._load_info()  # another replica may have recorded one meanwhile
            if self._info.model is None:
                await self._write_info(CollectionInfo(model, dimension))

        async with self._schema_lock:
            await self._call(update, "collection model update")
        return self._info

    async def add_named_vectors(self, dimensions: dict[str, int]) -> CollectionInfo:
        assert self._client is not None
        col = self._client.collections.get(self._name)

        async def update() -> None:
            await self._load_info()  # another replica may have added some meanwhile
            new = {n: d for n, d in dimensions.items() if n not in self._info.named}
            if not new:
                return
            existing = set((await col.config.get()).vector_config or {})
            for name in new:
                if weaviate_vector(name) not in existing:
                    try:
                        await col.config.add_vector(vector_config=self._vector_config(weaviate_vector(name)))
                    except (UnexpectedStatusCodeError, WeaviateInvalidInputError) as exc:
                        if "already exists" not in str(exc):
                            raise
            await self._write_info(replace(self._info, named={**self._info.named, **new}))

        async with self._schema_lock:
            await self._call(update, "named vector setup")
        return self._info

    async def register_model_version(self, model: ModelRef) -> CollectionInfo:
        async def update() -> None:
            await self._load_info()  # another replica may have registered it meanwhile
            if self._info.slot_of(model) is None:
                slot = f"m{len(self._info.versions) + 2}"
                await self._write_info(replace(self._info, versions={**self._info.versions, model: slot}))

        async with self._schema_lock:
            await self._call(update, "model version registration")
        return self._info

    # ---- tenants' model-version state (a small collection beside the assets) ----------------------

    async def _models_collection(self) -> Any:
        assert self._client is not None
        client, name = self._client, self._name + "Models"
        if not self._models_ready:

            async def ensure() -> None:
                if not await client.collections.exists(name):
                    try:
                        await client.collections.create(
                            name,
                            properties=[
                                Property(
                                    name="tenant", data_type=DataType.TEXT, tokenization=Tokenization.FIELD
                                ),
                                Property(
                                    name="state_json",
                                    data_type=DataType.TEXT,
                                    index_searchable=False,
                                    index_filterable=False,
                                ),
                            ],
                            vector_config=Configure.Vectors.self_provided(),
                            replication_config=self._replication.config(),
                        )
                    except UnexpectedStatusCodeError as exc:
                        if "already exists" not in str(exc):
                            raise
                # A new collection's shard is created after the schema change is acknowledged: until it
                # is, reads fail "non-existing index". Wait here, within the call's deadline, rather than
                # failing the first readers (a gateway's circuit opened on a burst of such answers).
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception(lambda exc: bool(_LOADING.search(str(exc)))),
                    wait=wait_exponential(multiplier=0.02, max=0.5),
                    stop=stop_after_delay(self._timeout_s),
                    reraise=True,
                ):
                    with attempt:
                        await client.collections.get(name).query.fetch_objects(limit=1)

            await self._call(ensure, "model state setup")
            self._models_ready = True
        return client.collections.get(name)

    async def load_tenant_models(self, tenant: str) -> TenantModels:
        col = (await self._models_collection()).with_consistency_level(self._read_level)
        key = object_uuid("models", tenant)
        obj = await self._call(lambda: col.query.fetch_object_by_id(key), "model state")
        if obj is None:
            return TenantModels()
        return TenantModels.from_json(json.loads(obj.properties["state_json"]))

    async def save_tenant_models(self, tenant: str, state: TenantModels) -> None:
        """One object per tenant, replaced whole in one write (atomic: a reader sees the old or the
        new state), at the write consistency level."""
        col = (await self._models_collection()).with_consistency_level(self._write_level)
        obj = wvc.data.DataObject(
            properties={"tenant": tenant, "state_json": json.dumps(state.to_json())},
            uuid=object_uuid("models", tenant),
        )
        result = await self._call(lambda: col.data.insert_many([obj]), "model state update", write=True)
        if result.errors:
            log.error("model state not stored", tenant=tenant, error=str(result.errors)[:500])
            raise Unavailable("the model version state could not be stored; retry")

    # ---- tenants ---------------------------------------------------------------------------------

    async def tenant_exists(self, tenant: str) -> bool:
        if tenant in self._known_tenants:
            return True
        assert self._client is not None
        client = self._client

        async def get() -> bool:
            found = await client.collections.get(self._name).tenants.get_by_name(tenant)
            return found is not None

        if await self._call(get, "tenant lookup"):
            self._known_tenants.add(tenant)
            return True
        return False

    async def _ensure_tenant(self, tenant: str) -> None:
        if tenant in self._known_tenants:
            return
        async with self._tenant_lock:
            if await self.tenant_exists(tenant):
                return
            assert self._client is not None
            client = self._client

            async def create() -> None:
                try:
                    await client.collections.get(self._name).tenants.create([Tenant(name=tenant)])
                except UnexpectedStatusCodeError as exc:
                    if "already exists" not in str(exc):
                        raise

            await self._call(create, "tenant creation")
            self._known_tenants.add(tenant)

    # ---- writes ----------------------------------------------------------------------------------

    async def upsert(self, tenant: str, records: list[AssetRecord]) -> list[ItemFailure | None]:
        await self._ensure_tenant(tenant)
        objects = [
            wvc.data.DataObject(
                properties=doc_to_properties(r.doc),
                vector={
                    VECTOR_NAME: r.vector.astype(np.float32).tolist(),  # type: ignore[union-attr]
                    **{weaviate_vector(n): v.astype(np.float32).tolist() for n, v in r.named.items()},
                },
                uuid=object_uuid(tenant, r.doc.asset_id),
            )
            for r in records
        ]
        col = self._collection(tenant, write=True)

        async def insert() -> Any:
            # One gRPC BatchObjects call for the whole batch, with a result per object. The client
            # raises instead of returning results when every object failed; that is still a per-item
            # outcome (each item gets the reasons), not a failed call.
            try:
                return await col.data.insert_many(objects)
            except WeaviateInsertManyAllFailedError as exc:
                return exc

        result = await self._call(insert, "batch upsert", write=True)
        if isinstance(result, WeaviateInsertManyAllFailedError):
            text = str(result)
            if _TENANT_MISSING.search(text):
                raise NotFound(f"tenant '{tenant}' has no assets (it is created by its first upsert)")
            return [_rejected(text)] * len(records)
        out: list[ItemFailure | None] = [None] * len(records)
        for index, err in result.errors.items():
            # A rejected object is not written (Weaviate validates an object before storing it).
            out[index] = _rejected(err.message, records[index].doc.asset_id)
        return out

    async def delete(self, tenant: str, asset_ids: list[str]) -> list[bool]:
        if not await self.tenant_exists(tenant):
            raise NotFound(f"tenant '{tenant}' has no assets (it is created by its first upsert)")
        col = self._collection(tenant, write=True)
        ids = [object_uuid(tenant, a) for a in asset_ids]
        result = await self._call(
            lambda: col.data.delete_many(where=Filter.by_id().contains_any(ids), verbose=True),
            "delete",
            write=True,
        )
        deleted = {str(o.uuid) for o in (result.objects or []) if o.successful}
        return [str(u) in deleted for u in ids]

    async def get(self, tenant: str, asset_ids: list[str], include_vectors: bool) -> list[AssetRecord | None]:
        col = self._collection(tenant)
        ids = [object_uuid(tenant, a) for a in asset_ids]
        named = list((await self.collection_info()).named)
        names = [VECTOR_NAME, *(weaviate_vector(n) for n in named)]
        res = await self._call(
            lambda: col.query.fetch_objects(
                filters=Filter.by_id().contains_any(ids),
                limit=len(ids),
                include_vector=names if include_vectors else False,
            ),
            "get",
        )
        found = {str(o.uuid): o for o in res.objects}
        out: list[AssetRecord | None] = []
        for u in ids:
            o = found.get(str(u))
            if o is None:
                out.append(None)
                continue
            vec = np.asarray(o.vector[VECTOR_NAME], dtype=np.float32) if include_vectors else None
            stored = (o.vector or {}) if include_vectors else {}
            others = {
                n: np.asarray(stored[weaviate_vector(n)], dtype=np.float32)
                for n in named
                if weaviate_vector(n) in stored
            }
            out.append(AssetRecord(properties_to_doc(o.properties), vec, others))
        return out

    async def scan(
        self, tenant: str, after: str, limit: int, include_vectors: bool
    ) -> tuple[list[AssetRecord], str]:
        """A page in object-id order (Weaviate's cursor); the vectors are always read, since which
        named vectors an object has says which model versions it holds."""
        col = self._collection(tenant)
        named = list((await self.collection_info()).named)
        names = [VECTOR_NAME, *(weaviate_vector(n) for n in named)]
        res = await self._call(
            lambda: col.query.fetch_objects(limit=limit, after=after or None, include_vector=names),
            "scan",
        )
        out = []
        for o in res.objects:
            stored = o.vector or {}
            others = {
                n: np.asarray(stored[weaviate_vector(n)], dtype=np.float32)
                for n in named
                if weaviate_vector(n) in stored
            }
            vec = np.asarray(stored[VECTOR_NAME], dtype=np.float32) if VECTOR_NAME in stored else None
            out.append(AssetRecord(properties_to_doc(o.properties), vec, others))
        token = str(res.objects[-1].uuid) if len(res.objects) == limit else ""
        return out, token

    async def find_by_content_hash(self, tenant: str, digests: list[str]) -> dict[str, set[str]]:
        col = self._collection(tenant)
        where = Filter.by_property("content_sha256").contains_any(digests)
        found: dict[str, set[str]] = {}
        offset = 0
        while True:  # pages, because one digest may be held by many assets
            page = await self._call(
                lambda o=offset: col.query.fetch_objects(  # type: ignore[misc]
                    filters=where,
                    limit=_HASH_PAGE,
                    offset=o,
                    return_properties=["asset_id", "content_sha256"],
                ),
                "content hash lookup",
            )
            for o in page.objects:
                found.setdefault(o.properties["content_sha256"], set()).add(o.properties["asset_id"])
            if len(page.objects) < _HASH_PAGE:
                return found
            offset += _HASH_PAGE

    async def assets_in_state(self, tenant: str | None, state: str, limit: int) -> list[PendingAsset]:
        assert self._client is not None
        client = self._client
        if tenant is not None:
            names = [tenant]
        else:
            found = await self._call(lambda: client.collections.get(self._name).tenants.get(), "tenant list")
            names = sorted(found)
        out: list[PendingAsset] = []
        for name in names:
            if len(out) >= limit:
                break
            col, room = self._collection(name), limit - len(out)
            page = await self._call(
                lambda c=col, n=room: c.query.fetch_objects(  # type: ignore[misc]
                    filters=Filter.by_property("analysis_state").equal(state),
                    limit=n,
                    return_properties=["asset_id", "content_sha256", "updated_at"],
                ),
                "analysis state lookup",
            )
            items = [
                PendingAsset(
                    name,
                    o.properties["asset_id"],
                    o.properties.get("content_sha256") or "",
                    as_utc(o.properties.get("updated_at")),
                )
                for o in page.objects
            ]
            items.sort(key=lambda p: (p.updated_at or _EPOCH, p.asset_id))
            out += items
        return out

    # ---- queries ---------------------------------------------------------------------------------

    async def query(self, tenant: str, plan: QueryPlan) -> list[Hit]:
        return await run_query(self._call, self._collection(tenant), plan)

    async def stats(self, tenant: str | None) -> Stats:
        assert self._client is not None
        info = await self.collection_info()
        if tenant is not None:
            if not await self.tenant_exists(tenant):
                raise NotFound(f"tenant '{tenant}' has no assets (it is created by its first upsert)")
            col = self._collection(tenant)
            agg = await self._call(lambda: col.aggregate.over_all(total_count=True), "count")
            return Stats(int(agg.total_count or 0), info.model, info.dimension)
        client = self._client
        tenants = await self._call(lambda: client.collections.get(self._name).tenants.get(), "tenant list")
        total = 0
        for name in tenants:
            col = self._collection(name)
            agg = await self._call(lambda c=col: c.aggregate.over_all(total_count=True), "count")  # type: ignore[misc]
            total += int(agg.total_count or 0)
        return Stats(total, info.model, info.dimension)
