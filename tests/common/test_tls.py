"""Mutual TLS on the internal hops and per-method authorisation of internal callers (issue 17, S1/S2).

Real processes on 127.0.0.1: the embedded suite (encoder, search, gateway) with a certificate directory
made by `services.common.certs`. Internal services refuse a handshake without a suite certificate,
authorise callers by the identity in it, and pick up a rotated server certificate without a restart.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from imagesearch.v1 import encoder_pb2, encoder_pb2_grpc, gateway_pb2, search_pb2, search_pb2_grpc

from devstack.redis import ensure_redis_server
from services.common import certs, healthcheck
from services.common.authz import AuthorizationInterceptor, CallerPolicy
from services.common.errors import PermissionDenied, Unauthenticated
from services.common.interceptors import ServerInterceptor
from services.common.settings import DEFAULT_ALLOWED_CALLERS
from services.common.tls import CertFiles, ReloadingServerConfig, client_credentials, peer_identity
from tests.gateway.suite import MODEL_FILES, Suite
from tests.hostile import corpus
from tests.service_process import ServiceProcess, free_port

# ---- the certificate tool and the policy (pure logic) ----------------------------------------------


def test_init_is_idempotent_and_reissues_what_another_ca_signed(tmp_path: Path) -> None:
    assert certs.init(tmp_path) == list(certs.DEFAULT_IDENTITIES)
    ca_before = (tmp_path / "ca.crt").read_bytes()
    gateway_before = (tmp_path / "gateway.crt").read_bytes()
    assert certs.init(tmp_path) == []  # everything valid: kept
    assert (tmp_path / "ca.crt").read_bytes() == ca_before
    assert (tmp_path / "gateway.crt").read_bytes() == gateway_before

    foreign = tmp_path / "foreign"
    certs.issue(foreign, "gateway")
    (tmp_path / "gateway.crt").write_bytes((foreign / "gateway.crt").read_bytes())
    assert certs.init(tmp_path) == ["gateway"]

    cert = x509.load_pem_x509_certificate((tmp_path / "gateway.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://imagesearch/gateway"]
    assert {"localhost", "gateway"} <= set(sans.get_values_for_type(x509.DNSName))
    assert (tmp_path / "gateway.key").stat().st_mode & 0o077 == 0


def test_default_policy_lets_only_the_gateway_at_tenant_data() -> None:
    policy = CallerPolicy(DEFAULT_ALLOWED_CALLERS)
    policy.check("/imagesearch.v1.SearchService/UpsertAssets", "gateway")
    policy.check("/imagesearch.v1.EncoderService/EncodeImages", "gateway")
    policy.check("/grpc.health.v1.Health/Check", "operator")
    with pytest.raises(PermissionDenied, match="identity encoder may not call SearchService/UpsertAssets"):
        policy.check("/imagesearch.v1.SearchService/UpsertAssets", "encoder")
    with pytest.raises(PermissionDenied, match="identity operator may not call EncoderService/EncodeTexts"):
        policy.check("/imagesearch.v1.EncoderService/EncodeTexts", "operator")
    with pytest.raises(PermissionDenied):  # a service nobody listed
        policy.check("/imagesearch.v1.GatewayService/Search", "gateway")
    with pytest.raises(Unauthenticated):
        policy.check("/grpc.health.v1.Health/Check", None)
    # the exact method wins over the service's wildcard
    narrow = CallerPolicy({**DEFAULT_ALLOWED_CALLERS, "imagesearch.v1.SearchService/GetStats": ["operator"]})
    narrow.check("/imagesearch.v1.SearchService/GetStats", "operator")
    with pytest.raises(PermissionDenied):
        narrow.check("/imagesearch.v1.SearchService/GetStats", "gateway")


def test_each_method_is_checked_and_wrapped_once_not_per_call() -> None:
    """The authorisation interceptor hands back the same checked handler for every call of a method,
    so the plumbing's interceptor outside it wraps each method once (a new handler per call made both
    rebuild their wrappers on every call of an internal service under mutual TLS); a servicer handler
    that changes is wrapped anew."""

    async def behaviour(request: object, ctx: object) -> None:
        return None

    handlers = [grpc.unary_unary_rpc_method_handler(behaviour) for _ in range(2)]
    serving = handlers[0]

    class Details(grpc.HandlerCallDetails):
        method = "/imagesearch.v1.SearchService/Query"
        invocation_metadata = ()

    async def lookup(details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return serving

    authz = AuthorizationInterceptor(CallerPolicy(DEFAULT_ALLOWED_CALLERS))
    plumbing = ServerInterceptor()

    async def inner(details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return await authz.intercept_service(lookup, details)

    async def calls(n: int) -> list[grpc.RpcMethodHandler]:
        return [await plumbing.intercept_service(inner, Details()) for _ in range(n)]

    first = asyncio.run(calls(3))
    assert first[0] is not serving and all(h is first[0] for h in first)
    serving = handlers[1]
    second = asyncio.run(calls(2))
    assert second[0] is not first[0] and second[1] is second[0]


def test_peer_identity_prefers_the_spiffe_uri() -> None:
    ctx = {
        "x509_subject_alternative_name": [b"localhost", b"spiffe://imagesearch/gateway"],
        "x509_common_name": [b"x"],
    }
    assert peer_identity(ctx) == "gateway"
    assert peer_identity({"x509_common_name": [b"bench"]}) == "bench"
    assert peer_identity({"transport_security_type": [b"insecure"]}) is None


# ---- real processes --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert_dir(suite_certs: Path) -> Path:
    return suite_certs


@pytest.fixture(scope="module")
def tls_suite(cert_dir: Path) -> Iterator[Suite]:
    absent = [str(p) for p in MODEL_FILES if not p.exists()]
    if absent:
        pytest.fail(f"the demo model is not built ({', '.join(absent)}); see tools/models/README.md")
    suite = Suite("embedded", tls_dir=cert_dir).start()
    try:
        yield suite
    finally:
        suite.stop()


def _internal(suite: Suite) -> list[tuple[str, str]]:
    assert suite.search is not None and suite.encoder is not None
    return [("search", suite.search.address), ("encoder", suite.encoder.address)]


def _health(channel: grpc.Channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_plaintext_callers_are_refused(tls_suite: Suite) -> None:
    for name, address in _internal(tls_suite):
        with grpc.insecure_channel(address) as channel:
            with pytest.raises(grpc.RpcError) as err:
                search_pb2_grpc.SearchServiceStub(channel).GetStats(
                    search_pb2.GetStatsRequest(tenant="acme"), timeout=5
                )
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, name
            with pytest.raises(grpc.RpcError) as err:
                encoder_pb2_grpc.EncoderServiceStub(channel).EncodeTexts(
                    encoder_pb2.EncodeTextsRequest(texts=[encoder_pb2.TextInput(text="a")]), timeout=5
                )
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, name


def test_a_certificate_from_another_ca_is_refused(tls_suite: Suite, tmp_path: Path) -> None:
    certs.init(tmp_path)  # its own CA, same identity names
    for name, address in _internal(tls_suite):
        # A foreign client certificate (trusting the suite CA so only the client side is wrong).
        own = CertFiles(tmp_path / "gateway.crt", tmp_path / "gateway.key", tls_suite.tls_dir / "ca.crt")  # type: ignore[operator]
        with grpc.secure_channel(address, client_credentials(own)) as channel:
            with pytest.raises(grpc.RpcError) as err:
                _health(channel)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, name


def test_a_suite_identity_gets_only_what_the_policy_allows(tls_suite: Suite) -> None:
    assert tls_suite.search is not None and tls_suite.encoder is not None
    as_encoder = tls_suite.channel(tls_suite.search.address, identity="encoder")
    with pytest.raises(grpc.RpcError) as err:
        search_pb2_grpc.SearchServiceStub(as_encoder).UpsertAssets(
            search_pb2.UpsertAssetsRequest(tenant="acme"), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "identity encoder may not call SearchService/UpsertAssets" in (err.value.details() or "")
    assert _health(as_encoder) == health_pb2.HealthCheckResponse.SERVING  # health: any suite identity

    as_operator = tls_suite.channel(tls_suite.encoder.address, identity="operator")
    with pytest.raises(grpc.RpcError) as err:
        encoder_pb2_grpc.EncoderServiceStub(as_operator).EncodeTexts(
            encoder_pb2.EncodeTextsRequest(texts=[encoder_pb2.TextInput(text="a cat")]), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "identity operator may not call EncoderService/EncodeTexts" in (err.value.details() or "")

    as_gateway = tls_suite.channel(tls_suite.encoder.address, identity="gateway")
    reply = encoder_pb2_grpc.EncoderServiceStub(as_gateway).EncodeTexts(
        encoder_pb2.EncodeTextsRequest(texts=[encoder_pb2.TextInput(text="a cat")]), timeout=30
    )
    assert len(reply.results) == 1


def test_the_gateway_ingests_and_searches_over_mutual_tls(tls_suite: Suite) -> None:
    gw = tls_suite.gateway_stub()
    items = [corpus.ingest(f"tls-{i}", caption=f"mutual tls item {i}") for i in range(2)]
    acks = list(gw.Ingest(iter(items), metadata=corpus.ALICE, timeout=120))
    assert [a.outcome for a in acks] == [gateway_pb2.IngestOutcome.INGEST_OUTCOME_CREATED] * 2, acks
    found = gw.Search(
        gateway_pb2.SearchRequest(
            text="mutual tls item", page_size=10, rerank=gateway_pb2.RerankOptions(duplicate_threshold=1.0)
        ),
        metadata=corpus.ALICE,
        timeout=30,
    )
    assert {"tls-0", "tls-1"} <= {r.asset.asset_id for r in found.results}
    got = gw.GetAsset(gateway_pb2.GetAssetRequest(asset_id="tls-1"), metadata=corpus.ALICE, timeout=30).asset
    assert got.tenant == "acme" and got.caption == "mutual tls item 1"


def _served_certificate(address: str, files: CertFiles) -> x509.Certificate:
    """The certificate a fresh mutual-TLS handshake is answered with."""
    host, port = address.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(files.ca))
    ctx.load_cert_chain(str(files.cert), str(files.key))
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls_sock,
    ):
        der = tls_sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_a_rotated_server_certificate_is_used_without_a_restart(tmp_path: Path) -> None:
    certs.init(tmp_path)
    with ServiceProcess(
        "services.search", {"IMAGESEARCH_SEARCH_DATA_DIR": str(tmp_path / "data")}, tls_dir=tmp_path
    ) as svc:
        caller = CertFiles.in_dir(tmp_path, "gateway")
        before = _served_certificate(svc.address, caller)
        pid = svc.proc.pid if svc.proc else None
        certs.issue(tmp_path, "search")  # rotation: new key and certificate in place
        after = _served_certificate(svc.address, caller)
        assert after.serial_number != before.serial_number
        assert (
            after.serial_number
            == x509.load_pem_x509_certificate((tmp_path / "search.crt").read_bytes()).serial_number
        )
        with svc.channel("gateway") as channel:  # and gRPC on a new connection works
            assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
        assert svc.proc is not None and svc.proc.pid == pid and svc.proc.poll() is None
        assert "TLS certificate files changed" in svc.logs()


def test_the_container_health_probe_speaks_mutual_tls(tls_suite: Suite, cert_dir: Path) -> None:
    assert tls_suite.search is not None
    port = str(tls_suite.search.port)
    assert healthcheck.main(["healthcheck", "--tls-dir", str(cert_dir), port]) == 0
    assert healthcheck.main(["healthcheck", port]) == 1  # plaintext: refused


def test_search_reaches_redis_over_mutual_tls(cert_dir: Path, tmp_path: Path) -> None:
    """Redis's own TLS (`--tls-port`, client certificates required) with the suite's certificates; the
    search service needs only a `rediss://` URL naming its files (docs/SECURITY.md)."""
    port = free_port()
    redis = subprocess.Popen(
        [
            str(ensure_redis_server()),
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(cert_dir / "operator.crt"),
            "--tls-key-file",
            str(cert_dir / "operator.key"),
            "--tls-ca-cert-file",
            str(cert_dir / "ca.crt"),
            "--tls-auth-clients",
            "yes",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
            "--logfile",
            "",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
    )
    files = CertFiles.in_dir(cert_dir, "search")
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={files.ca}&ssl_certfile={files.cert}&ssl_keyfile={files.key}"
    env = {
        "IMAGESEARCH_SEARCH_DATA_DIR": str(tmp_path / "data"),
        "IMAGESEARCH_SEARCH_CACHE": "redis",
        "IMAGESEARCH_SEARCH_REDIS_URL": url,
    }
    try:
        with (
            ServiceProcess("services.search", env, tls_dir=cert_dir) as svc,
            svc.channel("gateway") as channel,
        ):
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 20
            while True:  # the first readiness round may run before redis-server listens
                reply = health.Check(health_pb2.HealthCheckRequest(service="backend:redis"), timeout=5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, svc.logs()
            # the per-tenant generation lives in Redis: consistent means Redis answered over TLS
            gen = search_pb2_grpc.SearchServiceStub(channel).GetIndexGeneration(
                search_pb2.GetIndexGenerationRequest(tenant="acme"), timeout=5
            )
            assert gen.consistent
    finally:
        redis.terminate()
        redis.wait(10)


def test_the_gateway_public_port_serves_one_way_tls_when_configured(cert_dir: Path) -> None:
    public = certs.issue(cert_dir, "public")  # any CA its clients trust; the suite's here
    env = {
        "IMAGESEARCH_GATEWAY_PUBLIC_TLS_CERT_FILE": str(public),
        "IMAGESEARCH_GATEWAY_PUBLIC_TLS_KEY_FILE": str(cert_dir / "public.key"),
    }
    # Its backends are absent: only the port's transport is under test.
    with ServiceProcess("services.gateway", env, wait_serving=False, tls_dir=cert_dir) as gw:
        with gw.channel() as channel:  # TLS, no client certificate
            assert _health(channel) in (
                health_pb2.HealthCheckResponse.SERVING,
                health_pb2.HealthCheckResponse.NOT_SERVING,
            )
        with grpc.insecure_channel(gw.address) as channel, pytest.raises(grpc.RpcError) as err:
            _health(channel)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_reload_waits_for_a_matching_key_and_certificate(tmp_path: Path) -> None:
    certs.init(tmp_path)
    files = CertFiles.in_dir(tmp_path, "search")
    fetcher = ReloadingServerConfig(files)
    assert fetcher() is None  # unchanged
    old_cert = files.cert.read_bytes()
    certs.issue(tmp_path, "search")
    new_cert = files.cert.read_bytes()
    files.cert.write_bytes(old_cert)  # mid-rotation: the new key next to the old certificate
    assert fetcher() is None
    files.cert.write_bytes(new_cert)
    assert fetcher() is not None  # the complete new pair
    assert fetcher() is None
