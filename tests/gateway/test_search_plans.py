"""The remembered search plans (search_flow._Plan) never outlive what they were derived from: real
encoder, search and gateway processes.

An identical text search by the same principal reuses the validation and page-token binding of the
first one; asserted here: the repeated search is served (from the page cache) and stays exact when a
write lands, when the caller's policy changes (a narrower licence set: a gateway restarted with the
new keyring) and when its key is revoked; a denied or invalid request is refused every time, never
remembered. An audit line of every search is written, hits included.
"""

from __future__ import annotations

import copy
import io
import json
import zlib
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from imagesearch.v1 import common_pb2, gateway_pb2
from PIL import Image, ImageDraw

from services.gateway.auth import hash_secret, present_key
from tests.gateway.suite import KEYRING, Suite, missing_prerequisites
from tests.waiting import settled

QUERY = "a red apple"
KEY_ID, SECRET = "plans001", "plans-secret-0123456789"
KEY = [("authorization", f"Bearer {present_key(KEY_ID, SECRET)}")]
ALICE = [("authorization", "Bearer acme-alice")]


def _keyring(licenses: list[str], revoked: bool = False) -> str:
    ring: dict[str, Any] = copy.deepcopy(KEYRING)
    ring["api_keys"][KEY_ID] = {
        "hash": hash_secret(SECRET, log2_n=10),
        "tenant": "acme",
        "subject": "planner",
        "roles": ["search"],
        "allowed_licenses": licenses,
        **({"revoked_at": "2024-01-01T00:00:00Z"} if revoked else {}),
    }
    return json.dumps(ring)


def _image(asset_id: str) -> bytes:
    seed = zlib.crc32(asset_id.encode())
    img = Image.new("RGB", (160, 120), (seed % 256, (seed >> 8) % 256, (seed >> 16) % 256))
    ImageDraw.Draw(img).ellipse((30, 20, 130, 100), fill=(200, 20, 30))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _ingest(suite: Suite, asset_id: str, caption: str, license_name: str) -> None:
    req = gateway_pb2.IngestRequest(
        asset_id=asset_id,
        image=_image(asset_id),
        caption=caption,
        license=common_pb2.License(name=license_name),
    )
    acks = list(suite.gateway_stub().Ingest(iter([req]), metadata=ALICE, timeout=120))
    assert len(acks) == 1 and acks[0].asset_id == asset_id, acks
    assert acks[0].outcome in (gateway_pb2.INGEST_OUTCOME_CREATED, gateway_pb2.INGEST_OUTCOME_UPDATED), acks


def _search(suite: Suite, metadata: list[tuple[str, str]] = KEY, **fields: Any) -> Any:
    # Near-duplicate collapse off: the synthetic pictures differ only in their background colour.
    rerank = gateway_pb2.RerankOptions(duplicate_threshold=1.0)
    request = gateway_pb2.SearchRequest(text=QUERY, rerank=rerank, **fields)
    return suite.gateway_stub().Search(request, metadata=metadata, timeout=30)


def _ids(resp: Any) -> set[str]:
    return {r.asset.asset_id for r in resp.results}


def _audit(suite: Suite) -> list[dict[str, Any]]:
    path = suite.tmp / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def suite() -> Iterator[Suite]:
    why = missing_prerequisites()
    if why:
        pytest.skip(why)
    s = Suite("embedded")
    s.gateway_env = {
        "IMAGESEARCH_GATEWAY_API_KEYS_JSON": _keyring(["MIT", "CC0-1.0"]),
        "IMAGESEARCH_GATEWAY_AUDIT_LOG_PATH": str(s.tmp / "audit.jsonl"),
        "IMAGESEARCH_GATEWAY_AUDIT_FLUSH_INTERVAL_S": "0.05",
    }
    s.start()
    try:
        _ingest(s, "mit-1", f"{QUERY} on a plate", "MIT")
        _ingest(s, "cc0-1", f"{QUERY} in a bowl", "CC0-1.0")
        yield s
    finally:
        s.stop()


def _until_cached(suite: Suite) -> Any:
    for _ in range(20):
        resp = _search(suite)
        if resp.cached:
            return resp
    raise AssertionError("an identical search was never served from the page cache")


def test_a_remembered_search_sees_a_write_at_once_and_is_audited_every_time(suite: Suite) -> None:
    first = _until_cached(suite)
    assert {"mit-1", "cc0-1"} <= _ids(first)
    _ingest(suite, "mit-2", f"{QUERY} on a table", "MIT")
    after = _search(suite)  # the same request as the remembered one: the new generation wins
    assert not after.cached and "mit-2" in _ids(after)
    assert _until_cached(suite).results == after.results

    # Every search is audited, hits included: a role check and a result screen per call.
    before = sum(
        1
        for e in settled(lambda: _audit(suite), len)
        if e.get("who") == "planner" and e.get("why") == "results screened"
    )
    for _ in range(5):
        assert _search(suite).cached
    lines = [e for e in settled(lambda: _audit(suite), len) if e.get("who") == "planner"]
    screened = [e for e in lines if e.get("why") == "results screened"]
    assert len(screened) == before + 5
    assert sum(1 for e in lines if e.get("why") == "role 'search'") == len(screened)
    assert all(e["request_id"] for e in screened)


def test_a_denied_or_invalid_search_is_refused_every_time(suite: Suite) -> None:
    _until_cached(suite)
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as err:  # the role is checked per call, not remembered
            _search(suite, include_unsafe=True)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as err:
            _search(suite, alpha=2.0)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as err:  # a licence outside the key's policy
            _search(suite, licenses=["GPL-2.0-only"])
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_policy_change_or_a_revoked_key_is_never_served_from_a_remembered_search(suite: Suite) -> None:
    cached = _until_cached(suite)
    assert "mit-1" in _ids(cached)
    token_before = cached.next_page_token or _search(suite, page_size=1).next_page_token

    # The key's licences narrowed (a new keyring): the MIT assets are gone from the very first search,
    # and a page token bound to the old policy no longer verifies.
    suite.restart_gateway(env={"IMAGESEARCH_GATEWAY_API_KEYS_JSON": _keyring(["CC0-1.0"])})
    narrowed = _search(suite)
    assert "cc0-1" in _ids(narrowed) and not {"mit-1", "mit-2"} & _ids(narrowed)
    assert _until_cached(suite).results == narrowed.results
    assert token_before
    with pytest.raises(grpc.RpcError) as err:
        _search(suite, page_size=1, page_token=token_before)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # The key revoked: refused, however often the identical search was served before.
    suite.restart_gateway(env={"IMAGESEARCH_GATEWAY_API_KEYS_JSON": _keyring(["CC0-1.0"], revoked=True)})
    with pytest.raises(grpc.RpcError) as err:
        _search(suite)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in (err.value.details() or "")
