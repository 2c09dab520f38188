"""The generated Go, TypeScript and Java clients' example programs, run as real processes.

The examples are built by scripts/gen_clients.sh. A test skips when its example is not built or its
toolchain is missing, unless IMAGESEARCH_REQUIRE_CLIENTS=1 (CI), which turns those skips into failures.

Against a running suite (CI): set IMAGESEARCH_CLIENTS_GATEWAY_ADDR and IMAGESEARCH_CLIENTS_API_KEY (a key
with the search, ingest and delete roles); otherwise encoder + search + gateway are started here with
their embedded backends (ONNX Runtime, the in-process index).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator

import pytest
from PIL import Image

from tests.clients.fake_gateway import FakeGatewayServer
from tests.clients.harness import EXAMPLES, LANGS, agreement, detect_mode, problems, run_example
from tests.service_process import ServiceProcess, free_port

API_KEY = "clients-test-key"
REQUIRE_ALL = os.environ.get("IMAGESEARCH_REQUIRE_CLIENTS", "") not in ("", "0")


def require(lang: str) -> None:
    reason = EXAMPLES[lang].unavailable()
    if reason:
        if REQUIRE_ALL:
            pytest.fail(f"IMAGESEARCH_REQUIRE_CLIENTS is set but {reason}")
        pytest.skip(reason)


@pytest.fixture
def fake() -> Iterator[FakeGatewayServer]:
    with FakeGatewayServer({API_KEY}) as server:
        yield server


@pytest.mark.parametrize("lang", LANGS)
def test_example_completes_the_journey_against_a_contract_fake(lang: str, fake: FakeGatewayServer) -> None:
    require(lang)
    run = run_example(lang, fake.address, API_KEY)
    assert problems(run, "journey") == [], run.describe()

    seen = fake.servicer.seen
    assert seen.methods == ["Ingest", "Search", "Search", "Search", "DeleteAsset"]
    # Every call carries the key except the one that demonstrates UNAUTHENTICATED.
    assert seen.authorization == [f"Bearer {API_KEY}"] * 3 + ["Bearer not-a-valid-key", f"Bearer {API_KEY}"]
    (stored,) = seen.ingested
    assert stored.request.asset_id == run.steps["ingest"]["asset_id"]
    assert stored.request.license.name and stored.request.caption
    with Image.open(io.BytesIO(stored.request.image)) as img:
        assert (img.format, img.size) == ("PNG", (96, 64))
    assert seen.deleted == [stored.request.asset_id] and not fake.servicer.assets


def test_examples_ingest_distinct_bytes_and_agree_on_every_status(fake: FakeGatewayServer) -> None:
    """Run one after another against one gateway: no example's image is a duplicate of another's (each
    run draws its own nonce), and all languages report the same codes."""
    langs = [lang for lang in LANGS if EXAMPLES[lang].unavailable() is None]
    if len(langs) < 2:
        pytest.skip("needs at least two built examples")
    runs = [run_example(lang, fake.address, API_KEY) for lang in langs]
    assert agreement(runs) == []
    shas = {stored.sha256 for stored in fake.servicer.seen.ingested}
    assert len(shas) == len(langs)


@pytest.mark.parametrize("lang", LANGS)
def test_example_reports_unavailable_when_nothing_listens(lang: str) -> None:
    require(lang)
    run = run_example(lang, f"127.0.0.1:{free_port()}", API_KEY, timeout_s=5)
    assert problems(run, "unreachable") == [], run.describe()


@pytest.mark.parametrize("lang", LANGS)
def test_example_rejects_a_missing_api_key_as_usage_error(lang: str) -> None:
    require(lang)
    run = run_example(lang, "127.0.0.1:1", "")
    assert run.returncode == 2, run.describe()
    assert run.steps == {} and "api-key" in run.stderr


KEYRING = json.dumps(
    {
        "tenants": {"clients-test": {"safety_threshold": 0.5, "allowed_licenses": ["*"]}},
        "api_keys": {
            API_KEY: {
                "tenant": "clients-test",
                "subject": "clients-test",
                "roles": ["search", "ingest", "delete"],
            }
        },
    }
)


@pytest.fixture(scope="module")
def suite_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(address, api key) of a gateway with its backends: the running suite when
    IMAGESEARCH_CLIENTS_GATEWAY_ADDR is set (CI), else encoder (ONNX Runtime) + search (embedded index)
    + gateway started here. The encoder serves triton_models/ when the demo model is there, else the
    encoder tests' random-weight stand-in towers (same tensor contract)."""
    addr = os.environ.get("IMAGESEARCH_CLIENTS_GATEWAY_ADDR")
    if addr:
        yield addr, os.environ.get("IMAGESEARCH_CLIENTS_API_KEY", API_KEY)
        return
    from tests.encoder.conftest import TRITON_MODELS, demo_model_present, make_standin_repository

    tmp = tmp_path_factory.mktemp("clients-suite")
    models = TRITON_MODELS if demo_model_present() else make_standin_repository(tmp / "models")
    encoder = ServiceProcess(
        "services.encoder",
        env={
            "IMAGESEARCH_ENCODER_BACKEND": "onnxruntime",
            "IMAGESEARCH_ENCODER_MODEL_REPOSITORY": str(models),
            # The clients' examples exercise the API, not a model; the clip-art package also runs on
            # the stand-in towers above.
            "IMAGESEARCH_ENCODER_MODEL_PACKAGE": "demo",
        },
    )
    search = ServiceProcess(
        "services.search",
        env={
            "IMAGESEARCH_SEARCH_BACKEND": "embedded",
            "IMAGESEARCH_SEARCH_DATA_DIR": str(tmp / "index"),
            "IMAGESEARCH_SEARCH_CACHE": "memory",
        },
    )
    started = []
    try:
        for proc in (encoder, search):
            started.append(proc.start())
        gateway = ServiceProcess(
            "services.gateway",
            env={
                "IMAGESEARCH_GATEWAY_API_KEYS_JSON": KEYRING,
                "IMAGESEARCH_GATEWAY_ENCODER_ADDRESS": encoder.address,
                "IMAGESEARCH_GATEWAY_SEARCH_ADDRESS": search.address,
            },
        )
        started.append(gateway.start())
        yield gateway.address, API_KEY
    finally:
        for proc in reversed(started):
            proc.stop()


@pytest.fixture(scope="module")
def lone_gateway() -> Iterator[tuple[str, str]]:
    """A gateway whose encoder and search addresses refuse connections (nothing listens there)."""
    env = {
        "IMAGESEARCH_GATEWAY_API_KEYS_JSON": KEYRING,
        "IMAGESEARCH_GATEWAY_ENCODER_ADDRESS": f"127.0.0.1:{free_port()}",
        "IMAGESEARCH_GATEWAY_SEARCH_ADDRESS": f"127.0.0.1:{free_port()}",
    }
    proc = ServiceProcess("services.gateway", env=env, wait_serving=False)
    proc.start()
    try:
        yield proc.address, API_KEY
    finally:
        proc.stop()


@pytest.mark.parametrize("lang", LANGS)
def test_example_completes_the_journey_against_the_suite(lang: str, suite_gateway: tuple[str, str]) -> None:
    """Ingest, find the image by text, INVALID_ARGUMENT, UNAUTHENTICATED, delete: through the real gateway,
    encoder and search service (a skeleton gateway that answers UNIMPLEMENTED is checked as such)."""
    require(lang)
    addr, key = suite_gateway
    mode = detect_mode(addr, key)
    run = run_example(lang, addr, key)
    assert problems(run, mode) == [], f"mode {mode}\n{run.describe()}"


@pytest.mark.parametrize("lang", LANGS)
def test_example_shows_the_error_statuses_of_a_gateway_without_backends(
    lang: str, lone_gateway: tuple[str, str]
) -> None:
    """Per-item ingest failure, UNAVAILABLE, INVALID_ARGUMENT, UNAUTHENTICATED, as each client sees them."""
    require(lang)
    addr, key = lone_gateway
    run = run_example(lang, addr, key)
    assert problems(run, "backends_down") == [], run.describe()
