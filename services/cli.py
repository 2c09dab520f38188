"""`imagesearch`: command-line client of the gateway.

    imagesearch ingest DIR [--license NAME] [--api-key K] [--gateway HOST:PORT]
    imagesearch search "red vintage car" [--image FILE] [--limit N] [--json]
    imagesearch similar ASSET_ID [--limit N]
    imagesearch get ASSET_ID
    imagesearch drift reference            # admin: current drift statistics become the reference
    imagesearch feedback SEARCH_ID ASSET_ID [--kind click|dwell|rating] [--dwell-ms MS] [--rating 1-5]
    imagesearch eval-online [--metrics URL] [--json]   # per-arm CTR and MRR of clicks
    imagesearch image ASSET_ID -o FILE [--thumbnail]   # the stored original (or its thumbnail)
    imagesearch eval JUDGEMENTS.jsonl... [--config NAME:alpha=0.4,fusion=adaptive] [--baselines]
                     [--split heldout] [--json OUT] [--markdown OUT] [--plot OUT.png]
    imagesearch serve                      # encoder + search + gateway on embedded defaults (make run)
    imagesearch reindex --tenant T --to NAME@VERSION [--no-wait]   # admin: re-embed every asset
    imagesearch models [--tenant T]        # admin: model versions, coverage, the active one
    imagesearch activate NAME@VERSION | rollback | gc NAME@VERSION   # admin (docs/LIFECYCLE.md)

Credentials: --api-key, else $IMAGESEARCH_API_KEY, else the demo key of `make run` ("demo-key").
Gateway: --gateway, else $IMAGESEARCH_GATEWAY_ADDRESS, else 127.0.0.1:50070.

Ingest walks DIR for images (.jpg .jpeg .png .webp .gif .bmp .tif .tiff). The asset id is the path
relative to DIR. Metadata comes from an optional sidecar: `NAME.json` ({"caption", "tags", "license",
"license_expires_at", "uri", "owner", "source", "popularity"}) or `NAME.txt` (first line = caption, as
Tux Paint stamps ship them); otherwise the caption is the file name. Re-running ingest on the same
folder is safe: unchanged items are acknowledged as UNCHANGED and nothing is stored twice.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from imagesearch.v1 import admin_pb2, admin_pb2_grpc, common_pb2, gateway_pb2, gateway_pb2_grpc

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
DEFAULT_GATEWAY = "127.0.0.1:50070"
DEFAULT_KEY = "demo-key"
_DEFAULT_METRICS = "http://127.0.0.1:9470/metrics"  # `make run`'s gateway (services/suite.py)
OUTCOMES = {
    v.number: v.name.removeprefix("INGEST_OUTCOME_").lower()
    for v in gateway_pb2.IngestOutcome.DESCRIPTOR.values
}


# Acknowledgements that do not confirm the item is stored: FAILED (it is not) and UNCERTAIN (the index
# did not confirm the write). Both make the command exit non-zero.
_UNCONFIRMED_OUTCOMES = frozenset({gateway_pb2.INGEST_OUTCOME_FAILED, gateway_pb2.INGEST_OUTCOME_UNCERTAIN})


def _channel(address: str) -> grpc.Channel:
    limit = 64 * 1024 * 1024
    return grpc.insecure_channel(
        address, options=[("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
    )


def _metadata(args: argparse.Namespace) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {args.api_key}")]


def _fail(exc: grpc.RpcError) -> int:
    code = exc.code()  # type: ignore[attr-defined]
    print(f"error: {code.name}: {exc.details()}", file=sys.stderr)  # type: ignore[attr-defined]
    if code == grpc.StatusCode.UNAVAILABLE:
        print("hint: is the suite running? `make run` starts it", file=sys.stderr)
    elif code == grpc.StatusCode.UNAUTHENTICATED:
        print("hint: pass --api-key or set IMAGESEARCH_API_KEY", file=sys.stderr)
    return 2


# ----------------------------------------------------------------------------------------------
# ingest


def find_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def sidecar(path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    js = path.with_suffix(".json")
    txt = path.with_suffix(".txt")
    if js.is_file():
        meta = json.loads(js.read_text(encoding="utf-8"))
    elif txt.is_file():
        lines = txt.read_text(encoding="utf-8", errors="replace").splitlines()
        if lines and lines[0].strip():
            meta["caption"] = lines[0].strip()
    if not meta.get("caption"):
        meta["caption"] = path.stem.replace("_", " ").replace("-", " ")
    return meta


def ingest_request(root: Path, path: Path, args: argparse.Namespace) -> gateway_pb2.IngestRequest:
    meta = sidecar(path)
    lic = common_pb2.License(name=str(meta.get("license") or args.license))
    if meta.get("license_expires_at"):
        ts = Timestamp()
        ts.FromDatetime(
            dt.datetime.fromisoformat(str(meta["license_expires_at"])).astimezone(dt.UTC).replace(tzinfo=None)
        )
        lic.expires_at.CopyFrom(ts)
    return gateway_pb2.IngestRequest(
        asset_id=path.relative_to(root).as_posix(),
        image=path.read_bytes(),
        uri=str(meta.get("uri") or path.resolve().as_uri()),
        caption=str(meta.get("caption", "")),
        tags=[str(t) for t in meta.get("tags", [])],
        owner=str(meta.get("owner") or args.owner),
        license=lic,
        source=str(meta.get("source") or args.source or root.name),
        popularity=float(meta.get("popularity", 0.0)),
    )


def cmd_ingest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    root = Path(args.dir)
    if not root.is_dir():
        print(f"error: {root} is not a directory", file=sys.stderr)
        return 2
    paths = find_images(root)
    if not paths:
        print(f"no images under {root} ({', '.join(sorted(IMAGE_SUFFIXES))})", file=sys.stderr)
        return 1

    def requests() -> Iterator[gateway_pb2.IngestRequest]:
        for p in paths:
            yield ingest_request(root, p, args)

    counts: collections.Counter[str] = collections.Counter()
    failures: list[tuple[str, str]] = []
    start = time.perf_counter()
    with _channel(args.gateway) as ch:
        stub = gateway_pb2_grpc.GatewayServiceStub(ch)
        bar = tqdm(total=len(paths), unit="img", desc="ingest", disable=args.quiet)
        try:
            for ack in stub.Ingest(requests(), metadata=_metadata(args), timeout=args.timeout):
                outcome = OUTCOMES.get(ack.outcome, "unknown")
                counts[outcome] += 1
                if ack.analysis_state == common_pb2.ANALYSIS_STATE_PENDING:
                    counts["pending"] += 1
                if ack.outcome in _UNCONFIRMED_OUTCOMES:
                    code = grpc.StatusCode.UNKNOWN
                    for c in grpc.StatusCode:
                        if c.value[0] == ack.error.code:
                            code = c
                    failures.append((ack.asset_id, f"{outcome} {code.name}: {ack.error.message}"))
                bar.update(1)
                bar.set_postfix({k: v for k, v in counts.items()}, refresh=False)
        except grpc.RpcError as exc:
            bar.close()
            return _fail(exc)
        bar.close()
    elapsed = time.perf_counter() - start
    done = sum(counts.values())
    print(
        f"ingested {done}/{len(paths)} images from {root} in {elapsed:.1f}s "
        f"({done / max(elapsed, 1e-9):.1f} img/s): "
        + ", ".join(
            f"{k} {counts.get(k, 0)}"
            for k in ("created", "updated", "unchanged", "duplicate", "failed", "uncertain")
        )
    )
    if counts.get("pending"):
        print(
            f"  {counts['pending']} stored but not visible yet: searchable once their safety analysis "
            "is done (it runs after the acknowledgement)"
        )
    for asset_id, why in failures[:20]:
        print(f"  {asset_id}: {why}")
    if len(failures) > 20:
        print(f"  … and {len(failures) - 20} more failed or uncertain")
    if counts.get("uncertain"):
        print("  uncertain items may or may not be stored; running the same ingest again is safe")
    return 1 if failures else 0


# ----------------------------------------------------------------------------------------------
# search


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def print_results(results: Any, *, degraded: bool, reasons: Any, cached: bool, verbose: bool) -> None:
    if degraded:
        print(f"DEGRADED: {'; '.join(reasons)}")
    if not results:
        print("no results")
        return
    header = (
        f"{'#':>3}  {'score':>6}  {'kw':>5}  {'vec':>5}  {'rerank':>6}  {'1st':>4}  {'asset':<32}  caption"
    )
    print(header + ("  (first stage cached)" if cached else ""))
    for i, r in enumerate(results, 1):
        s = r.scores
        print(
            f"{i:>3}  {s.final:>6.3f}  {s.keyword:>5.2f}  {s.vector:>5.2f}  {s.rerank:>6.3f}  "
            f"{s.first_stage_rank:>4}  {_short(r.asset.asset_id, 32):<32}  {_short(r.asset.caption, 60)}"
        )
        if verbose:
            for note in r.rerank_notes:
                print(f"{'':>8}rerank: {note}")
            print(f"{'':>8}policy: {'; '.join(r.policy.reasons)}")


def _as_json(results: Any) -> str:
    from google.protobuf.json_format import MessageToDict

    return json.dumps([MessageToDict(r) for r in results], indent=2)


def cmd_search(args: argparse.Namespace) -> int:
    if not args.text and not args.image:
        print("error: give a query text, --image FILE, or both", file=sys.stderr)
        return 2
    req = gateway_pb2.SearchRequest(text=args.text or "", page_size=args.limit)
    if args.image:
        req.image = Path(args.image).read_bytes()
    for lic in args.license or []:
        req.licenses.append(lic)
    if args.no_rerank:
        req.rerank.disable = True
    return _search_and_print(args, "Search", req)


def cmd_similar(args: argparse.Namespace) -> int:
    req = gateway_pb2.SearchSimilarRequest(asset_id=args.asset_id, page_size=args.limit)
    return _search_and_print(args, "SearchSimilar", req)


def _search_and_print(args: argparse.Namespace, method: str, req: Any) -> int:
    """Call Search or SearchSimilar (same result shape) and print the results as a table or JSON."""
    with _channel(args.gateway) as ch:
        call = getattr(gateway_pb2_grpc.GatewayServiceStub(ch), method)
        try:
            resp = call(req, metadata=_metadata(args), timeout=args.timeout)
        except grpc.RpcError as exc:
            return _fail(exc)
    if args.json:
        print(_as_json(resp.results))
    else:
        print_results(
            resp.results,
            degraded=resp.degraded,
            reasons=resp.degraded_reasons,
            cached=getattr(resp, "cached", False),  # SearchSimilarResponse has no cached flag
            verbose=args.verbose,
        )
        if resp.search_id:
            print(
                f"arm {resp.arm}; search_id {resp.search_id} (imagesearch feedback {resp.search_id} ASSET_ID)"
            )
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToJson

    with _channel(args.gateway) as ch:
        stub = gateway_pb2_grpc.GatewayServiceStub(ch)
        try:
            resp = stub.GetAsset(
                gateway_pb2.GetAssetRequest(asset_id=args.asset_id),
                metadata=_metadata(args),
                timeout=args.timeout,
            )
        except grpc.RpcError as exc:
            return _fail(exc)
    print(MessageToJson(resp.asset))
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    """Write the asset's stored original (or thumbnail) to a file, checked against its digest."""
    variant = gateway_pb2.IMAGE_VARIANT_THUMBNAIL if args.thumbnail else gateway_pb2.IMAGE_VARIANT_ORIGINAL
    request = gateway_pb2.GetAssetImageRequest(asset_id=args.asset_id, variant=variant)
    digest = hashlib.sha256()
    out = Path(args.output)
    tmp = out.with_name(f".{out.name}.part")
    with _channel(args.gateway) as ch, open(tmp, "wb") as fh:
        stub = gateway_pb2_grpc.GatewayServiceStub(ch)
        first = None
        received = 0
        try:
            for message in stub.GetAssetImage(request, metadata=_metadata(args), timeout=args.timeout):
                first = first or message
                digest.update(message.chunk)
                received += fh.write(message.chunk)
        except grpc.RpcError as exc:
            tmp.unlink(missing_ok=True)
            return _fail(exc)
    if first is None or digest.hexdigest() != first.content_sha256 or received != first.total_bytes:
        tmp.unlink(missing_ok=True)
        print("error: the image arrived incomplete or altered (digest mismatch); try again", file=sys.stderr)
        return 2
    tmp.replace(out)
    print(f"{out}: {first.content_type}, {first.total_bytes} bytes, sha256 {first.content_sha256}")
    return 0


# ----------------------------------------------------------------------------------------------
# drift


def cmd_drift_reference(args: argparse.Namespace) -> int:
    """Make the key's tenant's current drift statistics its reference (admin role)."""
    with _channel(args.gateway) as ch:
        stub = gateway_pb2_grpc.GatewayServiceStub(ch)
        try:
            resp = stub.TakeDriftReference(
                gateway_pb2.TakeDriftReferenceRequest(), metadata=_metadata(args), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            return _fail(exc)
    if not resp.streams:
        print("no drift statistics yet (nothing ingested or searched since the gateway started)")
        return 0
    for s in resp.streams:
        kind = gateway_pb2.DriftStreamKind.Name(s.kind).removeprefix("DRIFT_STREAM_KIND_").lower()
        before = f"{s.drift_score:.3f}" if s.HasField("drift_score") else "none (first reference)"
        print(f"{s.model.name}@{s.model.version} {kind}: {s.samples} samples, drift before: {before}")
    return 0


# ----------------------------------------------------------------------------------------------
# model versions (admin; docs/LIFECYCLE.md)


def _model_arg(text: str) -> common_pb2.ModelRef:
    name, sep, version = text.rpartition("@")
    if not sep or not name or not version:
        raise SystemExit(f"error: model version {text!r} must be NAME@VERSION")
    return common_pb2.ModelRef(name=name, version=version)


def _print_versions(v: admin_pb2.ListModelVersionsResponse) -> None:
    for m in v.versions:
        flags = [f for f, on in (("active", m.active), ("held", m.held)) if on]
        if not m.encoder_configured:
            flags.append("no encoder in this gateway")
        print(
            f"{m.model.name}@{m.model.version}: {m.assets_covered}/{v.asset_count} assets"
            + (f" ({', '.join(flags)})" if flags else "")
        )
    if v.HasField("previous"):
        print(f"rollback would return to {v.previous.name}@{v.previous.version}")


def _job_line(job: admin_pb2.ReindexJob) -> str:
    state = admin_pb2.ReindexState.Name(job.state).removeprefix("REINDEX_STATE_").lower()
    line = (
        f"re-index of {job.tenant} to {job.target.name}@{job.target.version}: {state}, {job.scanned}/"
        f"{job.total_assets} scanned, {job.reindexed} re-embedded, {job.already_done} already done, "
        f"{job.missing_originals} without original, {job.failed} failed"
    )
    if job.missing_asset_ids:
        line += "\n  without original: " + ", ".join(job.missing_asset_ids[:20])
    if job.error:
        line += f"\n  error: {job.error}"
    return line


def cmd_reindex(args: argparse.Namespace) -> int:
    """Start (or resume, or join) the tenant's re-index job; follow it with a progress bar."""
    from tqdm import tqdm

    with _channel(args.gateway) as ch:
        stub = admin_pb2_grpc.AdminServiceStub(ch)
        md = _metadata(args)
        try:
            job = stub.StartReindex(
                admin_pb2.StartReindexRequest(tenant=args.tenant, target=_model_arg(args.to)),
                metadata=md,
                timeout=args.timeout,
            ).job
            if args.no_wait:
                print(_job_line(job))
                return 0
            bar = tqdm(total=job.total_assets or None, unit="asset", desc="reindex", disable=args.quiet)
            while job.state == admin_pb2.REINDEX_STATE_RUNNING:
                bar.update(max(0, min(job.scanned, job.total_assets or job.scanned) - bar.n))
                bar.set_postfix(done=job.reindexed, missing=job.missing_originals, refresh=False)
                time.sleep(args.poll_s)
                job = stub.GetReindexJob(
                    admin_pb2.GetReindexJobRequest(tenant=args.tenant), metadata=md, timeout=args.timeout
                ).job
            bar.update(max(0, (job.total_assets or job.scanned) - bar.n))
            bar.close()
        except grpc.RpcError as exc:
            return _fail(exc)
    print(_job_line(job))
    return 0 if job.state == admin_pb2.REINDEX_STATE_SUCCEEDED else 1


def cmd_models(args: argparse.Namespace) -> int:
    with _channel(args.gateway) as ch:
        stub = admin_pb2_grpc.AdminServiceStub(ch)
        try:
            v = stub.ListModelVersions(
                admin_pb2.ListModelVersionsRequest(tenant=args.tenant),
                metadata=_metadata(args),
                timeout=args.timeout,
            )
        except grpc.RpcError as exc:
            return _fail(exc)
    _print_versions(v)
    return 0


def cmd_activate(args: argparse.Namespace) -> int:
    return _admin_change(
        args,
        "ActivateModel",
        admin_pb2.ActivateModelRequest(tenant=args.tenant, model=_model_arg(args.model)),
    )


def cmd_rollback(args: argparse.Namespace) -> int:
    return _admin_change(args, "RollbackModel", admin_pb2.RollbackModelRequest(tenant=args.tenant))


def cmd_gc(args: argparse.Namespace) -> int:
    return _admin_change(
        args, "RemoveModel", admin_pb2.RemoveModelRequest(tenant=args.tenant, model=_model_arg(args.model))
    )


def _admin_change(args: argparse.Namespace, method: str, request: Any) -> int:
    with _channel(args.gateway) as ch:
        stub = admin_pb2_grpc.AdminServiceStub(ch)
        try:
            resp = getattr(stub, method)(request, metadata=_metadata(args), timeout=args.timeout)
        except grpc.RpcError as exc:
            return _fail(exc)
    if method == "RemoveModel":
        print(f"removed the version's vectors from {resp.assets_changed} assets")
    _print_versions(resp.versions)
    return 0


# ----------------------------------------------------------------------------------------------
# feedback and the online report

FEEDBACK_KINDS = {
    "click": gateway_pb2.FEEDBACK_KIND_CLICK,
    "dwell": gateway_pb2.FEEDBACK_KIND_DWELL,
    "rating": gateway_pb2.FEEDBACK_KIND_RATING,
}


def cmd_feedback(args: argparse.Namespace) -> int:
    """Send one feedback event; its id defaults to a fresh one (re-send with --event-id to retry)."""
    import uuid

    event = gateway_pb2.FeedbackEvent(
        event_id=args.event_id or uuid.uuid4().hex,
        kind=FEEDBACK_KINDS[args.kind],
        search_id=args.search_id,
        asset_id=args.asset_id,
        rank=args.rank,
        dwell_ms=args.dwell_ms,
        rating=args.rating,
    )
    with _channel(args.gateway) as ch:
        try:
            resp = gateway_pb2_grpc.GatewayServiceStub(ch).RecordFeedback(
                gateway_pb2.RecordFeedbackRequest(events=[event]),
                metadata=_metadata(args),
                timeout=args.timeout,
            )
        except grpc.RpcError as exc:
            return _fail(exc)
    result = resp.results[0]
    outcome = gateway_pb2.FeedbackOutcome.Name(result.outcome).removeprefix("FEEDBACK_OUTCOME_").lower()
    if result.outcome == gateway_pb2.FEEDBACK_OUTCOME_FAILED:
        print(f"event {result.event_id}: failed: {result.error.message}", file=sys.stderr)
        return 1
    print(f"event {result.event_id}: {outcome}")
    return 0


def cmd_eval_online(args: argparse.Namespace) -> int:
    return _online_report(args.metrics, args.timeout, as_json=args.json)


def _online_report(metrics: str, timeout_s: float, as_json: bool, json_out: str | None = None) -> int:
    from services.evaluation.online import online_report

    try:
        report = online_report(metrics, timeout_s=timeout_s)
    except OSError as exc:
        print(f"error: cannot read {metrics}: {exc}", file=sys.stderr)
        print(
            "hint: the gateway serves metrics when IMAGESEARCH_GATEWAY_METRICS_PORT is set", file=sys.stderr
        )
        return 2
    if json_out:
        Path(json_out).write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    print(json.dumps(report.as_dict(), indent=2) if as_json else report.markdown())
    return 0


# ----------------------------------------------------------------------------------------------
# serve: the whole suite on embedded defaults (what `make run` starts)


def cmd_eval(args: argparse.Namespace) -> int:
    """Relevance of the live gateway on judged queries (services/evaluation, docs/RELEVANCE.md)."""
    from services.evaluation.command import run_eval

    if args.online:  # the live side: what callers clicked, per experiment arm
        return _online_report(args.metrics, args.timeout or 10.0, as_json=False, json_out=args.json)
    if not args.judgements:
        print("imagesearch eval: give judgement files (JSONL), or --online", file=sys.stderr)
        return 2
    with _channel(args.gateway) as channel:
        return run_eval(args, channel, _metadata(args))


def cmd_serve(args: argparse.Namespace) -> int:
    """Start encoder, search and gateway on embedded defaults (services/suite.py, `make run`)."""
    from services import suite

    os.environ.setdefault("IMAGESEARCH_SEARCH_DATA_DIR", str(Path(args.data_dir).resolve() / "search"))
    os.environ.setdefault("IMAGESEARCH_GATEWAY_DATA_DIR", str(Path(args.data_dir).resolve() / "gateway"))
    os.environ.setdefault("IMAGESEARCH_GATEWAY_BLOB_DIR", str(Path(args.data_dir).resolve() / "blobs"))
    return suite.main()


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--gateway", default=os.environ.get("IMAGESEARCH_GATEWAY_ADDRESS", DEFAULT_GATEWAY), help="host:port"
    )
    common.add_argument("--api-key", default=os.environ.get("IMAGESEARCH_API_KEY", DEFAULT_KEY))
    common.add_argument("--timeout", type=float, default=None, help="seconds (default: none for ingest, 30)")

    p = argparse.ArgumentParser(prog="imagesearch", description="imagesearch command-line client")
    sub = p.add_subparsers(dest="command", required=True)

    ing = sub.add_parser("ingest", parents=[common], help="ingest a folder of images")
    ing.add_argument("dir")
    ing.add_argument("--license", default="unspecified", help="licence name when no sidecar gives one")
    ing.add_argument("--owner", default="", help="owner when no sidecar gives one")
    ing.add_argument("--source", default="", help="source (default: the folder's name)")
    ing.add_argument("--quiet", action="store_true", help="no progress bar")
    ing.set_defaults(func=cmd_ingest)

    se = sub.add_parser("search", parents=[common], help="search by text and/or example image")
    se.add_argument("text", nargs="?", default="")
    se.add_argument("--image", help="example image file")
    se.add_argument("--limit", type=int, default=10)
    se.add_argument("--license", action="append", help="restrict to this licence (repeatable)")
    se.add_argument("--no-rerank", action="store_true", help="first-stage order only")
    se.add_argument("--json", action="store_true")
    se.add_argument("-v", "--verbose", action="store_true", help="show rerank notes and policy reasons")
    se.set_defaults(func=cmd_search)

    si = sub.add_parser("similar", parents=[common], help="more like a stored asset")
    si.add_argument("asset_id")
    si.add_argument("--limit", type=int, default=10)
    si.add_argument("--json", action="store_true")
    si.add_argument("-v", "--verbose", action="store_true")
    si.set_defaults(func=cmd_similar)

    sv = sub.add_parser("serve", help="run encoder + search + gateway on embedded defaults (make run)")
    sv.add_argument(
        "--data-dir", default=".data", help="where the embedded index, the feedback store and the images live"
    )
    sv.add_argument("--timeout", type=float, default=None, help="seconds each service may take to start")
    sv.set_defaults(func=cmd_serve)

    fb = sub.add_parser("feedback", parents=[common], help="record what was done with a search result")
    fb.add_argument("search_id", help="the search_id of the search response")
    fb.add_argument("asset_id", help="the result's asset id")
    fb.add_argument("--kind", choices=sorted(FEEDBACK_KINDS), default="click")
    fb.add_argument("--rank", type=int, default=0, help="1-based rank on the page (0: the server knows it)")
    fb.add_argument("--dwell-ms", type=int, default=0, help="for --kind dwell: milliseconds looked at")
    fb.add_argument("--rating", type=int, default=0, help="for --kind rating: 1 (useless) to 5 (exact)")
    fb.add_argument("--event-id", default="", help="idempotency key (default: a fresh one)")
    fb.set_defaults(func=cmd_feedback)

    eo = sub.add_parser("eval-online", help="per-arm click-through rate and MRR of clicks of a gateway")
    eo.add_argument("--metrics", default=os.environ.get("IMAGESEARCH_GATEWAY_METRICS_URL", _DEFAULT_METRICS))
    eo.add_argument("--timeout", type=float, default=10.0, help="seconds")
    eo.add_argument("--json", action="store_true")
    eo.set_defaults(func=cmd_eval_online)

    ev = sub.add_parser(
        "eval", parents=[common], help="measure relevance on judged queries (docs/RELEVANCE.md)"
    )
    ev.add_argument("judgements", nargs="*", help="JSONL judgement files (none with --online)")
    ev.add_argument("--images-root", help="folder query image paths are relative to (default: each file's)")
    ev.add_argument(
        "--config",
        action="append",
        help="NAME[:alpha=A,fusion=adaptive|relative_score|ranked,rerank=on|off,text_weight=W,mmr_lambda=L] "
        "(repeatable; default: one config with the server's defaults)",
    )
    ev.add_argument("--baselines", action="store_true", help="add keyword-only, vector-only, relative-0.75")
    ev.add_argument("--split", default="", help="only judged queries of this split (e.g. heldout)")
    ev.add_argument("--family", action="append", help="only this query family (repeatable)")
    ev.add_argument("--depth", type=int, default=10, help="results fetched per query (page size, 1-100)")
    ev.add_argument("--concurrency", type=int, default=4, help="searches in flight")
    ev.add_argument("--json", help="write the metrics as JSON here")
    ev.add_argument("--markdown", help="also write the markdown table here")
    ev.add_argument("--plot", help="write a bar chart of nDCG@10 per family and config here (PNG/SVG)")
    ev.add_argument(
        "--online", action="store_true", help="per-arm click-through and MRR of clicks from recorded feedback"
    )
    ev.add_argument(
        "--metrics",
        default=os.environ.get("IMAGESEARCH_GATEWAY_METRICS_URL", _DEFAULT_METRICS),
        help="with --online: the gateway's metrics URL",
    )
    ev.add_argument("--quiet", action="store_true", help="no progress on stderr")
    ev.set_defaults(func=cmd_eval)

    ge = sub.add_parser("get", parents=[common], help="show one asset")
    ge.add_argument("asset_id")
    ge.set_defaults(func=cmd_get)

    dr = sub.add_parser("drift", help="drift monitoring (docs/OPERATIONS.md)")
    drift_sub = dr.add_subparsers(dest="drift_command", required=True)
    ref = drift_sub.add_parser(
        "reference",
        parents=[common],
        help="admin: the current drift statistics of the key's tenant become its reference",
    )
    ref.set_defaults(func=cmd_drift_reference)
    tenant = argparse.ArgumentParser(add_help=False)
    tenant.add_argument("--tenant", default="", help="the tenant (default: the key's; must be the key's)")
    rx = sub.add_parser(
        "reindex", parents=[common, tenant], help="admin: re-embed every asset with another model version"
    )
    rx.add_argument("--to", required=True, help="the model version, NAME@VERSION")
    rx.add_argument("--no-wait", action="store_true", help="start it and return (no progress bar)")
    rx.add_argument("--poll-s", type=float, default=1.0, help="seconds between progress reads")
    rx.add_argument("--quiet", action="store_true", help="no progress bar")
    rx.set_defaults(func=cmd_reindex)
    mo = sub.add_parser("models", parents=[common, tenant], help="admin: the tenant's model versions")
    mo.set_defaults(func=cmd_models)
    ac = sub.add_parser("activate", parents=[common, tenant], help="admin: switch queries to a version")
    ac.add_argument("model", help="NAME@VERSION")
    ac.set_defaults(func=cmd_activate)
    rb = sub.add_parser("rollback", parents=[common, tenant], help="admin: back to the previous version")
    rb.set_defaults(func=cmd_rollback)
    gc = sub.add_parser("gc", parents=[common, tenant], help="admin: remove a retired version's vectors")
    gc.add_argument("model", help="NAME@VERSION")
    gc.set_defaults(func=cmd_gc)
    im = sub.add_parser("image", parents=[common], help="save one asset's stored image")
    im.add_argument("asset_id")
    im.add_argument("-o", "--output", required=True, help="file to write")
    im.add_argument("--thumbnail", action="store_true", help="the thumbnail instead of the original")
    im.set_defaults(func=cmd_image)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.timeout is None and args.command not in ("ingest", "serve", "gc"):
        args.timeout = 30.0
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
