"""Re-index through the gateway's AdminService on the embedded suite, with two real encoder processes
(the clip-art "demo" package, the ingest default here, and the "photo" package): the job re-embeds every
asset from its stored original, survives a SIGKILL of the gateway without asking the encoder again for
finished assets, reports missing originals, and ingest during the job writes both versions; then
activate (queries switch encoder and vectors), rollback, re-activate, gc rules, admin validation, and
the CLI (docs/LIFECYCLE.md)."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from imagesearch.v1 import admin_pb2, admin_pb2_grpc, common_pb2, gateway_pb2, search_pb2

from services import cli
from tests.gateway.suite import KEYRING, Suite, missing_prerequisites, open_data_sample
from tests.service_process import REPO_ROOT, ServiceProcess
from tests.waiting import settled

GUS = [("authorization", "Bearer globex-gus")]  # admin of tenant globex
ALICE = [("authorization", "Bearer acme-alice")]  # search/ingest/delete of tenant acme, no admin
DEMO = json.loads((REPO_ROOT / "models/demo/package/package.json").read_text())
PHOTO = json.loads((REPO_ROOT / "models/photo/package/package.json").read_text())
DEMO_REF = common_pb2.ModelRef(name=DEMO["name"], version=str(DEMO["version"]))
PHOTO_REF = common_pb2.ModelRef(name=PHOTO["name"], version=str(PHOTO["version"]))


def _skip_reason() -> str | None:
    if missing_prerequisites():
        return missing_prerequisites()
    if not (REPO_ROOT / "models/photo/package/image.onnx").exists():
        return "photo package not assembled (python -m tools.photo_package.ensure)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


def image_encodes(proc: ServiceProcess) -> int:
    """How many images the encoder process has encoded (its Prometheus counter)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=10).read().decode()
    return int(
        sum(
            float(v) for v in re.findall(r'^encoder_items_total\{[^}]*kind="image"[^}]*\} (\S+)$', text, re.M)
        )
    )


def start_suite(
    gateway_env: dict[str, str], search_env: dict[str, str] | None = None, keyring: Any = None
) -> tuple[Suite, ServiceProcess]:
    """encoder "demo" (the ingest default) + encoder "photo" + search + gateway, with the gateway's
    model_encoders naming both."""
    photo = ServiceProcess(
        "services.encoder",
        {"IMAGESEARCH_ENCODER_MODEL_PACKAGE": "photo", "IMAGESEARCH_ENCODER_BACKEND": "onnxruntime"},
    ).start(timeout_s=180)
    s = Suite("embedded", search_env=search_env)
    try:
        demo = ServiceProcess("services.encoder", s.encoder_env()).start(timeout_s=180)
        s.encoders.append(demo)
        s.encoder = demo
        s.search = ServiceProcess("services.search", s.search_env()).start(timeout_s=120)
        s.searches.append(s.search)
        encoders = {
            f"{DEMO_REF.name}:{DEMO_REF.version}": demo.address,
            f"{PHOTO_REF.name}:{PHOTO_REF.version}": photo.address,
        }
        s.gateway = ServiceProcess(
            "services.gateway",
            {
                "IMAGESEARCH_GATEWAY_ENCODER_ADDRESS": demo.address,
                "IMAGESEARCH_GATEWAY_SEARCH_ADDRESS": s.search.address,
                "IMAGESEARCH_GATEWAY_API_KEYS_JSON": json.dumps(keyring or KEYRING),
                "IMAGESEARCH_GATEWAY_DATA_DIR": str(s.tmp / "gateway"),
                "IMAGESEARCH_GATEWAY_MODEL_ENCODERS": json.dumps(encoders),
                "IMAGESEARCH_GATEWAY_SAFETY_ENABLED": "false",
                "IMAGESEARCH_GATEWAY_OCR_ENABLED": "false",
                **gateway_env,
            },
        ).start(timeout_s=120)
    except BaseException:
        s.stop()
        photo.stop()
        raise
    return s, photo


# The suite's keyring plus an admin of tenant acme, and a canary experiment on acme: half of the
# sessions are served by the photo version (while acme holds it).
CANARY_KEYRING = {
    **KEYRING,
    "api_keys": {
        **KEYRING["api_keys"],
        "acme-root": {"tenant": "acme", "subject": "root", "roles": ["admin"]},
    },
}
ROOT = [("authorization", "Bearer acme-root")]
CANARY = {
    "experiments": [
        {
            "name": "canary",
            "tenants": ["acme"],
            "unit": "session",
            "arms": [
                {"name": "control", "share": 0.5},
                {"name": "photo", "share": 0.5, "model_package": f"{PHOTO_REF.name}:{PHOTO_REF.version}"},
            ],
        }
    ]
}


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Suite, ServiceProcess]]:
    experiments = tmp_path_factory.mktemp("experiments") / "canary.json"
    experiments.write_text(json.dumps(CANARY))
    s, photo = start_suite(
        {
            "IMAGESEARCH_GATEWAY_EXPERIMENTS_FILE": str(experiments),
            "IMAGESEARCH_GATEWAY_BLOB_DIR": str(tmp_path_factory.mktemp("blobs")),
            "IMAGESEARCH_GATEWAY_REINDEX_RATE_PER_S": "3",
            "IMAGESEARCH_GATEWAY_REINDEX_PAGE_SIZE": "3",
            "IMAGESEARCH_GATEWAY_REINDEX_BATCH": "3",
            "IMAGESEARCH_GATEWAY_MODEL_STATE_TTL_S": "0.5",
            # the photo version answers every first page in shadow (compared, never returned)
            "IMAGESEARCH_GATEWAY_SHADOW_MODEL": f"{PHOTO_REF.name}:{PHOTO_REF.version}",
            "IMAGESEARCH_GATEWAY_SHADOW_SHARE": "1.0",
        },
        keyring=CANARY_KEYRING,
    )
    try:
        yield s, photo
    finally:
        s.stop()
        photo.stop()


def metric(s: Suite, name: str, labels: str = "") -> float:
    """The sum of a gateway metric's samples (those whose labels contain `labels`)."""
    assert s.gateway is not None
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{s.gateway.metrics_port}/metrics", timeout=10)
        .read()
        .decode()
    )
    pattern = rf"^{name}(\{{[^}}]*\}})? (\S+)$"
    return sum(float(v) for lbl, v in re.findall(pattern, text, re.M) if labels in lbl)


def drift_lines(s: Suite) -> str:
    assert s.gateway is not None
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{s.gateway.metrics_port}/metrics", timeout=10)
        .read()
        .decode()
    )
    return "\n".join(line for line in text.splitlines() if "drift_samples" in line)


def shadow_lines(s: Suite) -> str:
    assert s.gateway is not None
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{s.gateway.metrics_port}/metrics", timeout=10)
        .read()
        .decode()
    )
    return "\n".join(line for line in text.splitlines() if "shadow" in line and not line.startswith("#"))


def restart_gateway(s: Suite) -> None:
    """Start the (killed) gateway again with the same settings, ports and data directory."""
    assert s.gateway is not None
    old = s.gateway
    fresh = ServiceProcess("services.gateway", dict(old.env))
    fresh.port, fresh.metrics_port = old.port, old.metrics_port
    s.gateway = fresh.start(timeout_s=120)


def request(item: Any, **over: Any) -> gateway_pb2.IngestRequest:
    fields: dict[str, Any] = {
        "asset_id": item.asset_id,
        "image": item.data,
        "caption": item.caption,
        "tags": [item.group],
        "license": common_pb2.License(name=item.license),
    }
    fields.update(over)
    return gateway_pb2.IngestRequest(**fields)


def admin(s: Suite) -> admin_pb2_grpc.AdminServiceStub:
    assert s.gateway is not None
    return admin_pb2_grpc.AdminServiceStub(s.channel(s.gateway.address))


def job(s: Suite) -> admin_pb2.ReindexJob:
    return admin(s).GetReindexJob(admin_pb2.GetReindexJobRequest(), metadata=GUS, timeout=10).job


def wait_for(s: Suite, done: Any, timeout_s: float = 240.0) -> admin_pb2.ReindexJob:
    deadline = time.monotonic() + timeout_s
    while True:
        j = job(s)
        if done(j):
            return j
        assert time.monotonic() < deadline, j
        time.sleep(0.2)


def models_of(s: Suite) -> dict[str, set[str]]:
    stub = s.search_stub()
    out: dict[str, set[str]] = {}
    token = ""
    while True:
        page = stub.ScanAssets(search_pb2.ScanAssetsRequest(tenant="globex", page_token=token, page_size=100))
        out.update({r.asset.asset_id: {m.name for m in r.models} for r in page.assets})
        token = page.next_page_token
        if not token:
            return out


def search_model(s: Suite, text: str) -> tuple[str, list[str]]:
    resp = s.gateway_stub().Search(
        gateway_pb2.SearchRequest(text=text, page_size=5), metadata=GUS, timeout=30
    )
    assert resp.results, f"empty search for {text!r}"
    return resp.model.name, [r.asset.asset_id for r in resp.results]


def code_of(fn: Any, *args: Any, **kw: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        fn(*args, **kw)
    assert err.value.details()
    return err.value.code()  # type: ignore[no-any-return]


def test_reindex_resumes_after_kill_then_activate_rollback(
    suite: tuple[Suite, ServiceProcess], capsys: Any
) -> None:
    s, photo = suite
    items = open_data_sample(groups=4, extra=6)  # 18 held-out items
    first, late = items[:16], items[16:]
    s.ingest_all_created([request(i) for i in first], GUS)
    # One asset loses its original (stored before originals were kept, or removed by hand).
    lost = first[5]
    for path in Path(s.gateway.env["IMAGESEARCH_GATEWAY_BLOB_DIR"]).glob("globex/*/original"):  # type: ignore[union-attr]
        if path.read_bytes() == lost.data:
            path.unlink()
    st = admin(s)

    # Validation: role, tenant, version syntax, unknown version.
    start = admin_pb2.StartReindexRequest(target=PHOTO_REF)
    assert code_of(st.StartReindex, start, metadata=ALICE) == grpc.StatusCode.PERMISSION_DENIED
    other = admin_pb2.StartReindexRequest(tenant="acme", target=PHOTO_REF)
    assert code_of(st.StartReindex, other, metadata=GUS) == grpc.StatusCode.PERMISSION_DENIED
    bad = admin_pb2.StartReindexRequest(tenant="no such/tenant", target=PHOTO_REF)
    assert code_of(st.StartReindex, bad, metadata=GUS) == grpc.StatusCode.INVALID_ARGUMENT
    nameless = admin_pb2.StartReindexRequest(target=common_pb2.ModelRef(version="1"))
    assert code_of(st.StartReindex, nameless, metadata=GUS) == grpc.StatusCode.INVALID_ARGUMENT
    unknown = admin_pb2.StartReindexRequest(target=common_pb2.ModelRef(name="nope", version="1"))
    assert code_of(st.StartReindex, unknown, metadata=GUS) == grpc.StatusCode.NOT_FOUND
    assert (
        code_of(st.GetReindexJob, admin_pb2.GetReindexJobRequest(), metadata=GUS) == grpc.StatusCode.NOT_FOUND
    )

    # The job, rate-limited to 3 images/s in pages of 3: kill the gateway once 4 pages are done. The
    # job outlives the call that started it (3 s deadline): it must not inherit that deadline.
    j = st.StartReindex(start, metadata=GUS, timeout=3).job
    assert j.state == admin_pb2.REINDEX_STATE_RUNNING and j.total_assets == 16
    assert st.StartReindex(start, metadata=GUS, timeout=30).job.target == PHOTO_REF  # the running one
    wait_for(s, lambda j: j.scanned >= 12)
    assert s.gateway is not None
    s.gateway.stop(signal.SIGKILL)  # the worker dies mid-way (a batch may be encoded, not written)
    # An encode in flight at the kill is counted when it ends: read the counter once it has settled.
    encoded_before = settled(lambda: image_encodes(photo), interval_s=0.5)
    finished = {a for a, ms in models_of(s).items() if PHOTO_REF.name in ms}
    assert 11 <= len(finished) < 15, finished  # at least the four checkpointed pages, not all
    restart_gateway(s)  # resumes the job from its checkpoint
    # Ingest while the job runs (resumed by the restarted gateway) writes both versions.
    s.ingest_all_created([request(i) for i in late], GUS)
    done = wait_for(s, lambda j: j.state != admin_pb2.REINDEX_STATE_RUNNING)
    assert done.state == admin_pb2.REINDEX_STATE_SUCCEEDED, done
    assert done.missing_originals == 1 and list(done.missing_asset_ids) == [lost.asset_id]
    held = models_of(s)
    assert all(PHOTO_REF.name in held[i.asset_id] for i in items if i is not lost), held
    assert held[lost.asset_id] == {DEMO_REF.name}
    # After the restart the photo encoder was asked only for assets that were not finished (plus the
    # two ingested ones): never again for a finished one.
    asked_after = image_encodes(photo) - encoded_before
    assert asked_after <= 16 - 1 - len(finished) + len(late), (asked_after, len(finished))

    # Activation needs every asset covered; the asset without an original blocks it until deleted.
    activate = admin_pb2.ActivateModelRequest(model=PHOTO_REF)
    with pytest.raises(grpc.RpcError) as err:
        st.ActivateModel(activate, metadata=GUS, timeout=30)
    assert (
        err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        and "1 of the tenant's 18" in err.value.details()
    )
    s.gateway_stub().DeleteAsset(
        gateway_pb2.DeleteAssetRequest(asset_id=lost.asset_id), metadata=GUS, timeout=30
    )
    assert search_model(s, items[0].caption)[0] == DEMO_REF.name
    # Shadow: before the re-index the tenant held no photo vectors (skipped); now each first page is
    # compared with the photo version's answer and recorded, while the served model stays demo.
    for n, i in enumerate(items[:6]):  # distinct texts: a page-cache hit is not sampled again
        assert search_model(s, f"{i.caption} shadow {n}")[0] == DEMO_REF.name
    deadline = time.monotonic() + 30
    while metric(s, "gateway_shadow_queries_total", 'outcome="compared"') < 6:
        assert time.monotonic() < deadline, shadow_lines(s)
        time.sleep(0.2)
    assert metric(s, "gateway_shadow_overlap_at_10_count") >= 6
    assert metric(s, "gateway_shadow_queries_total", 'outcome="failed"') == 0
    versions = st.ActivateModel(activate, metadata=GUS, timeout=30).versions
    assert versions.active == PHOTO_REF and versions.previous == DEMO_REF
    # Activation took the new version's drift reference, from the images this gateway re-indexed.
    photo_images = f'model="{PHOTO_REF.name}",stream="image"'  # labels are in alphabetical order
    assert metric(s, "gateway_drift_samples_total", photo_images) >= 1, drift_lines(s)
    assert metric(s, "gateway_drift_reference_timestamp_seconds", photo_images) > 0
    assert {v.model.name: v.assets_covered for v in versions.versions} == {
        DEMO_REF.name: 17,
        PHOTO_REF.name: 17,
    }
    time.sleep(0.6)  # the gateway's model-state TTL
    model, hits = search_model(s, items[0].caption)
    assert model == PHOTO_REF.name and hits
    # Rollback keeps both; re-activate.
    assert (
        st.RollbackModel(admin_pb2.RollbackModelRequest(), metadata=GUS, timeout=30).versions.active
        == DEMO_REF
    )
    time.sleep(0.6)
    assert search_model(s, items[1].caption)[0] == DEMO_REF.name
    st.ActivateModel(activate, metadata=GUS, timeout=30)
    time.sleep(0.6)
    assert search_model(s, items[1].caption)[0] == PHOTO_REF.name
    # gc: the active version and the first model's vectors are never removed.
    for model_ref in (PHOTO_REF, DEMO_REF):
        gc = admin_pb2.RemoveModelRequest(model=model_ref)
        assert code_of(st.RemoveModel, gc, metadata=GUS, timeout=30) == grpc.StatusCode.FAILED_PRECONDITION

    # The CLI: the versions, and a second re-index (nothing left to embed) with its progress bar.
    assert s.gateway is not None
    common = ["--gateway", s.gateway.address, "--api-key", "globex-gus"]
    assert cli.main(["models", *common]) == 0
    out = capsys.readouterr().out
    assert f"{PHOTO_REF.name}@{PHOTO_REF.version}: 17/17 assets (active, held)" in out
    assert (
        cli.main(["reindex", "--tenant", "globex", "--to", f"{PHOTO_REF.name}@{PHOTO_REF.version}", *common])
        == 0
    )
    assert "17 already done" in capsys.readouterr().out
    assert cli.main(["rollback", *common]) == 0
    assert cli.main(["activate", f"{PHOTO_REF.name}@{PHOTO_REF.version}", *common]) == 0


def test_canary_arm_serves_its_share_with_the_candidate_version(suite: tuple[Suite, ServiceProcess]) -> None:
    s, _ = suite
    items = open_data_sample(groups=2, extra=2)
    s.ingest_all_created([request(i) for i in items], ROOT)
    stub = s.gateway_stub()

    def served(session: str, text: str) -> tuple[str, str]:
        md = [*ROOT, ("x-session-id", session)]
        resp = stub.Search(gateway_pb2.SearchRequest(text=text, page_size=5), metadata=md, timeout=30)
        assert resp.results
        return resp.arm, resp.model.name

    # acme holds no photo vectors yet: every arm is answered by the active (demo) version.
    before = {served(f"s{n}", f"{items[n % len(items)].caption} b{n}") for n in range(8)}
    assert {model for _, model in before} == {DEMO_REF.name}
    st = admin(s)
    st.StartReindex(admin_pb2.StartReindexRequest(target=PHOTO_REF), metadata=ROOT, timeout=30)
    deadline = time.monotonic() + 120
    while st.GetReindexJob(admin_pb2.GetReindexJobRequest(), metadata=ROOT, timeout=10).job.state == (
        admin_pb2.REINDEX_STATE_RUNNING
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(0.6)  # the gateway's model-state TTL
    after = [served(f"s{n}", f"{items[n % len(items)].caption} a{n}") for n in range(16)]
    assert {arm for arm, _ in after} == {"canary/control", "canary/photo"}, after
    for arm, model in after:  # the canary arm's sessions get the photo version, the others demo
        assert model == (PHOTO_REF.name if arm == "canary/photo" else DEMO_REF.name), after


def test_shadow_comparison_measures() -> None:
    from services.gateway.shadow import overlap_at_k, rank_correlation

    a = [f"x{i}" for i in range(10)]
    assert overlap_at_k(a, a) == 1.0 and rank_correlation(a, a) == 1.0
    assert rank_correlation(a, list(reversed(a))) == -1.0
    assert overlap_at_k(a, ["y"] * 3 + a[:7]) == 0.7
    assert rank_correlation(a, ["x0"]) is None and overlap_at_k(a, []) == 0.0
    # Shared ids in the same relative order correlate fully, wherever they stand.
    assert rank_correlation(a, ["y1", "x2", "y2", "x5", "x7"]) == 1.0
