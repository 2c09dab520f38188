"""FAILED means not stored, under a kill -9 of the search service mid-Ingest-stream (issue 17, F5).

Real encoder (onnxruntime), search service on real Weaviate, gateway. Part way through one Ingest
stream the search service gets SIGKILL. Then, reading Weaviate directly: every item acknowledged
CREATED is stored, no item acknowledged FAILED is stored, and items acknowledged UNCERTAIN (the
index did not confirm the write) may be either.
"""

from __future__ import annotations

import json
import signal
import threading
import uuid
from collections.abc import Iterator

import grpc
import pytest
import weaviate
from imagesearch.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from weaviate.classes.init import Auth

from devstack import StackInfo
from devstack.weaviate import weaviate_api_key
from services.search.backends.weaviate.schema import object_uuid
from tests.gateway.suite import KEYRING, TOKEN_SECRET, missing_prerequisites
from tests.gateway.test_e2e import text_image
from tests.search.conftest import weaviate_env
from tests.service_process import ServiceProcess

N_ITEMS = 160
KILL_AFTER_ACKS = 24
TENANT = "acme"
ALICE = [("authorization", "Bearer acme-alice")]
OUT = gateway_pb2.IngestOutcome


@pytest.mark.integration
def test_search_kill_mid_stream_never_acks_failed_for_a_stored_item(search_stack: StackInfo) -> None:
    if why := missing_prerequisites():
        pytest.skip(why)
    collection = f"Sk{uuid.uuid4().hex[:12]}"
    encoder = ServiceProcess("services.encoder", {"IMAGESEARCH_ENCODER_BACKEND": "onnxruntime"}).start(120)
    search = ServiceProcess(
        "services.search", {**weaviate_env(search_stack, collection), "IMAGESEARCH_SEARCH_CACHE": "memory"}
    ).start(120)
    gateway = ServiceProcess(
        "services.gateway",
        {
            "IMAGESEARCH_GATEWAY_ENCODER_ADDRESS": encoder.address,
            "IMAGESEARCH_GATEWAY_SEARCH_ADDRESS": search.address,
            "IMAGESEARCH_GATEWAY_API_KEYS_JSON": json.dumps(KEYRING),
            "IMAGESEARCH_GATEWAY_TOKEN_SECRET": TOKEN_SECRET,
            "IMAGESEARCH_GATEWAY_SAFETY_ENABLED": "false",
            "IMAGESEARCH_GATEWAY_OCR_ENABLED": "false",
        },
    ).start(120)
    try:
        images = {f"k{i:04d}": text_image(f"KILL {i}") for i in range(N_ITEMS)}
        killed = threading.Event()

        def requests() -> Iterator[gateway_pb2.IngestRequest]:
            for asset_id, data in images.items():
                yield gateway_pb2.IngestRequest(
                    asset_id=asset_id, image=data, caption=asset_id, license=common_pb2.License(name="MIT")
                )

        acks: dict[str, gateway_pb2.IngestResponse] = {}
        with grpc.insecure_channel(gateway.address) as ch:
            stub = gateway_pb2_grpc.GatewayServiceStub(ch)
            for ack in stub.Ingest(requests(), metadata=ALICE, timeout=300):
                acks[ack.asset_id] = ack
                if len(acks) == KILL_AFTER_ACKS and not killed.is_set():
                    assert search.proc is not None
                    search.proc.send_signal(signal.SIGKILL)
                    killed.set()
        assert len(acks) == N_ITEMS
        by_outcome: dict[int, list[str]] = {}
        for a in acks.values():
            by_outcome.setdefault(a.outcome, []).append(a.asset_id)

        client = weaviate.connect_to_local(
            host=search_stack.host,
            port=search_stack.weaviate_http_port or 0,
            grpc_port=search_stack.weaviate_grpc_port or 0,
            auth_credentials=Auth.api_key(weaviate_api_key()),
        )
        try:
            col = client.collections.get(collection).with_tenant(TENANT)

            def stored(asset_id: str) -> bool:
                return col.query.fetch_object_by_id(object_uuid(TENANT, asset_id)) is not None

            created = by_outcome.get(OUT.INGEST_OUTCOME_CREATED, [])
            failed = by_outcome.get(OUT.INGEST_OUTCOME_FAILED, [])
            uncertain = by_outcome.get(OUT.INGEST_OUTCOME_UNCERTAIN, [])
            assert len(created) >= KILL_AFTER_ACKS - 1
            assert uncertain, f"the kill landed after the stream: {sorted(by_outcome)}"
            assert [a for a in created if not stored(a)] == []
            assert [a for a in failed if stored(a)] == []
            for a in uncertain:
                message = acks[a].error.message
                assert "did not confirm the write" in message and "re-sending is safe" in message
        finally:
            client.close()
    finally:
        gateway.stop()
        search.stop()
        encoder.stop()
