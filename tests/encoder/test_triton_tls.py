"""The encoder -> Triton hop over mutual TLS: a real tritonserver started with --grpc-use-ssl-mutual and a
suite certificate, the encoder dialling it with `IMAGESEARCH_ENCODER_TRITON_TLS` (docs/SECURITY.md).
Triton then answers only peers with a certificate from the suite CA."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as tritongrpc
from imagesearch.v1 import encoder_pb2, encoder_pb2_grpc
from tritonclient.utils import InferenceServerException

from devstack.triton import Triton
from services.common import certs
from services.encoder.settings import EncoderSettings
from tests.service_process import REPO_ROOT, ServiceProcess, free_port

DEMO_MODELS = ("clip_image", "clip_text")  # the demo package's towers: the smallest repository to load


@pytest.fixture(scope="module")
def tls_triton(suite_certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(gRPC address, certificate directory) of a Triton serving the demo towers over mutual TLS."""
    certs.issue(suite_certs, "triton")
    repository = tmp_path_factory.mktemp("triton-repository")
    for name in DEMO_MODELS:
        (repository / name).symlink_to(REPO_ROOT / "triton_models" / name, target_is_directory=True)
    triton = Triton(REPO_ROOT, model_repository=repository)
    triton.prepare()
    ports = {name: free_port() for name in Triton.port_names}
    run_id = f"tls{ports['grpc']}"
    launch = triton.command(ports, repository, run_id)
    argv = [
        *launch.argv,
        "--grpc-use-ssl=true", "--grpc-use-ssl-mutual=true",
        f"--grpc-server-cert={suite_certs / 'triton.crt'}",
        f"--grpc-server-key={suite_certs / 'triton.key'}",
        f"--grpc-root-cert={suite_certs / 'ca.crt'}",
    ]  # fmt: skip
    log = tmp_path_factory.mktemp("triton-log") / "triton.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=launch.env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + Triton.ready_timeout_s
        config = triton.config()
        while triton.health(ports, config) is not None:  # the stack's own readiness check
            assert proc.poll() is None, f"tritonserver exited: {log.read_text(errors='replace')[-3000:]}"
            assert (
                time.monotonic() < deadline
            ), f"tritonserver not ready: {log.read_text(errors='replace')[-3000:]}"
            time.sleep(0.5)
        yield f"127.0.0.1:{ports['grpc']}", suite_certs
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        triton.after_stop(run_id)


def _encoder_env(address: str, triton_tls: bool) -> dict[str, str]:
    return {
        "IMAGESEARCH_ENCODER_BACKEND": "triton",
        "IMAGESEARCH_ENCODER_MODEL_PACKAGE": "demo",
        "IMAGESEARCH_ENCODER_TRITON_GRPC_URL": address,
        "IMAGESEARCH_ENCODER_TRITON_TLS": "true" if triton_tls else "false",
    }


def _encode(svc: ServiceProcess) -> encoder_pb2.EncodeTextsResponse:
    with svc.channel("gateway") as channel:
        stub = encoder_pb2_grpc.EncoderServiceStub(channel)
        request = encoder_pb2.EncodeTextsRequest(texts=[encoder_pb2.TextInput(text="a red apple")])
        return stub.EncodeTexts(request, timeout=30)


@pytest.mark.timeout(420)
def test_the_encoder_reaches_triton_over_mutual_tls(tls_triton: tuple[str, Path]) -> None:
    address, cert_dir = tls_triton
    with ServiceProcess("services.encoder", _encoder_env(address, True), tls_dir=cert_dir) as svc:
        reply = _encode(svc)
        assert len(reply.results) == 1 and reply.results[0].embedding.values, svc.logs()
        assert reply.model.name == "imagesearch-demo-clip", reply.model


@pytest.mark.timeout(420)
def test_triton_refuses_peers_without_a_suite_certificate(tls_triton: tuple[str, Path]) -> None:
    address, cert_dir = tls_triton
    # A plaintext client (what an encoder without triton_tls is) gets no answer at all.
    with pytest.raises(InferenceServerException) as err:
        tritongrpc.InferenceServerClient(address).is_server_ready(client_timeout=5)
    assert "UNAVAILABLE" in str(err.value.status()) or "DEADLINE" in str(err.value.status()), err.value
    # TLS that trusts the suite CA but presents no client certificate: refused in the handshake.
    anonymous = tritongrpc.InferenceServerClient(
        address, ssl=True, root_certificates=str(cert_dir / "ca.crt")
    )
    with pytest.raises(InferenceServerException):
        anonymous.is_server_ready(client_timeout=5)
    # An encoder left on plaintext answers its callers UNAVAILABLE, saying to retry.
    plaintext = ServiceProcess(
        "services.encoder", _encoder_env(address, False), wait_serving=False, tls_dir=cert_dir
    )
    with plaintext as svc:
        with pytest.raises(grpc.RpcError) as rpc:
            _encode(svc)
        assert rpc.value.code() == grpc.StatusCode.UNAVAILABLE, svc.logs()  # type: ignore[attr-defined]
        assert "retry later" in rpc.value.details(), rpc.value  # type: ignore[attr-defined]


def test_triton_tls_without_a_certificate_directory_is_a_settings_error() -> None:
    with pytest.raises(ValueError, match="triton_tls needs tls_dir"):
        EncoderSettings(backend="triton", triton_tls=True, tls_dir=None)
