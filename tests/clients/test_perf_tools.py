"""The performance tooling's own logic: bench/echo_server.py as a real process, bench/perf_report.py's
comparison table built from hand-made result files, and bench/ghz/run.py's small helpers.

No timing is asserted and no ghz binary is needed: only that the tools serve, compute and reject what
they should.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import echo_server, perf_report
from bench.ghz import run as ghz_run
from tests.service_process import free_port

REPO = Path(__file__).resolve().parents[2]

ECHO_METHOD = "/imagesearch.bench.Echo/Echo"

# ---------------------------------------------------------------------------------------------------------
# bench/echo_server.py


@pytest.fixture(params=[True, False], ids=["uvloop", "asyncio"])
def echo_process(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, subprocess.Popen[str]]]:
    """The echo server on a free loopback port: (address, event loop module it reported, process)."""
    port = free_port()
    cmd = [sys.executable, "-m", "bench.echo_server", "--host", "127.0.0.1", "--port", str(port)]
    if not request.param:
        cmd.append("--no-uvloop")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the pytest timeout below bounds this if the server hangs
        assert line.startswith("listening on "), f"echo server did not start: {line!r}"
        address = line.split()[2]
        loop_module = line.split("(")[-1].rstrip(")\n")
        assert address == f"127.0.0.1:{port}"
        yield address, loop_module, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.timeout(30)
def test_echo_server_answers_health_and_echoes_bytes_then_stops_on_sigterm(
    echo_process: tuple[str, str, subprocess.Popen[str]], request: pytest.FixtureRequest
) -> None:
    address, loop_module, proc = echo_process
    uses_uvloop = request.node.callspec.id == "uvloop"
    assert loop_module.startswith("uvloop") == uses_uvloop, loop_module

    payloads = [b"", b"hello", bytes(range(256)) * 3, os.urandom(1 << 20)]
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "imagesearch.v1.GatewayService"):
            resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING

        # No serializers on either side: the raw request bytes go out and come back untouched.
        echo = channel.unary_unary(ECHO_METHOD, request_serializer=None, response_deserializer=None)
        for payload in payloads:
            assert echo(payload, timeout=10) == payload

        unknown = channel.unary_unary("/imagesearch.bench.Echo/Nope")
        with pytest.raises(grpc.RpcError) as err:
            unknown(b"x", timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def page_search(channel: grpc.Channel) -> grpc.UnaryUnaryMultiCallable:
    """The echo server's GatewayService/Search on `channel`, its answers decoded."""
    from imagesearch.v1 import gateway_pb2

    return channel.unary_unary(
        "/imagesearch.v1.GatewayService/Search",
        request_serializer=gateway_pb2.SearchRequest.SerializeToString,
        response_deserializer=gateway_pb2.SearchResponse.FromString,
    )


@pytest.mark.timeout(30)
def test_echo_server_answers_searches_with_the_page_file_once_it_exists(tmp_path: Path) -> None:
    """`--page-file`: the zero-work server that `echo.search_page` measures a cached page against. The
    file may appear after the server started (the benchmark captures it from the gateway)."""
    from imagesearch.v1 import gateway_pb2

    page_file = tmp_path / "page.bin"
    echo = perf_report.EchoServer(uvloop=True, page_file=page_file)
    try:
        with grpc.insecure_channel(echo.address) as channel:
            search = page_search(channel)
            request = gateway_pb2.SearchRequest(text="a dog", page_size=20)
            with pytest.raises(grpc.RpcError) as err:
                search(request, timeout=10)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
            page = gateway_pb2.SearchResponse(next_page_token="t", arm="control", cached=True)
            page_file.write_bytes(page.SerializeToString())
            assert search(request, timeout=10) == page
            assert search(gateway_pb2.SearchRequest(text="other"), timeout=10) == page
    finally:
        echo.stop()


class _Hops:
    """An encoder and a search service that record what they were asked: the relay's hops."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def encode_texts(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        from imagesearch.v1 import common_pb2, encoder_pb2

        self.calls.append(("EncodeTexts", request))
        vector = common_pb2.Embedding(values=b"\x00\x00\x80\x3f" * 4)
        return encoder_pb2.EncodeTextsResponse(results=[encoder_pb2.EncodeResult(id="q", embedding=vector)])

    async def query(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        from imagesearch.v1 import search_pb2

        self.calls.append(("Query", request))
        return search_pb2.QueryResponse()


@pytest.mark.timeout(60)
def test_echo_server_relay_makes_both_hops_then_answers_with_the_page(tmp_path: Path) -> None:
    """`--relay-encoder/--relay-search`: the floor of bench/gateway_hops.py makes an uncached search's
    two hops as they are measured alone (the encoder's vector goes into a window-100 hybrid Query of
    the seeded tenant, vectors included, cache skipped), in that order, then answers with the page."""
    import asyncio
    import threading

    from imagesearch.v1 import encoder_pb2, gateway_pb2, search_pb2

    hops = _Hops()
    ports: list[int] = []
    ready, stop = threading.Event(), threading.Event()

    async def serve() -> None:
        servers = []
        for service, method, handler, req in (
            ("EncoderService", "EncodeTexts", hops.encode_texts, encoder_pb2.EncodeTextsRequest),
            ("SearchService", "Query", hops.query, search_pb2.QueryRequest),
        ):
            server = grpc.aio.server()
            rpc = grpc.unary_unary_rpc_method_handler(
                handler,
                request_deserializer=req.FromString,
                response_serializer=lambda m: m.SerializeToString(),
            )
            server.add_generic_rpc_handlers(
                [grpc.method_handlers_generic_handler(f"imagesearch.v1.{service}", {method: rpc})]
            )
            ports.append(server.add_insecure_port("127.0.0.1:0"))
            await server.start()
            servers.append(server)
        ready.set()
        await asyncio.to_thread(stop.wait)
        for server in servers:
            await server.stop(0)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(20)
    page = gateway_pb2.SearchResponse(next_page_token="t", cached=False)
    page_file = tmp_path / "page.bin"
    page_file.write_bytes(page.SerializeToString())
    echo = perf_report.EchoServer(
        uvloop=True, page_file=page_file, relay=(f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}")
    )
    try:
        with grpc.insecure_channel(echo.address) as channel:
            search = page_search(channel)
            assert search(gateway_pb2.SearchRequest(text="a red car", page_size=20), timeout=20) == page
    finally:
        echo.stop()
        stop.set()
        thread.join(10)
    assert [name for name, _ in hops.calls] == ["EncodeTexts", "Query"]
    assert [t.text for t in hops.calls[0][1].texts] == ["a red car"]
    query = hops.calls[1][1]
    assert (query.tenant, query.text, query.limit) == ("demo", "a red car", 100)
    assert query.include_vectors and query.skip_cache
    assert query.vector.values == b"\x00\x00\x80\x3f" * 4


def test_echo_server_relay_needs_both_addresses_and_a_page_file() -> None:
    with pytest.raises(SystemExit):
        echo_server.main(["--port", "0", "--relay-encoder", "127.0.0.1:1"])


def test_echo_server_relays_to_loopback_addresses_only(tmp_path: Path) -> None:
    argv = ["--port", "0", "--page-file", str(tmp_path / "p"), "--relay-search", "127.0.0.1:2"]
    with pytest.raises(SystemExit, match="loopback"):
        echo_server.main([*argv, "--relay-encoder", "10.0.0.5:50071"])


def test_gateway_hops_measures_the_suites_hops_and_gives_the_gateway_unseen_texts_each_round() -> None:
    """bench/gateway_hops.py runs perf_suite.json's own hop scenarios (not copies of them); the relay
    is the gateway's uncached search aimed at the echo server; the gateway's slice moves per round."""
    from bench import gateway_hops

    suite = json.loads(gateway_hops.SUITE.read_text())
    by_name = {s["name"]: s for s in suite["scenarios"]}
    rounds = [gateway_hops.scenarios(suite, r) for r in range(3)]
    for got in rounds:
        encode, query, relay, gateway = got
        assert encode["call"] == by_name["encoder.encode_text_c1"]["call"]
        assert query["data"]["limit"] == by_name["search.first_stage_c1"]["data"]["limit"]
        assert (relay["target"], relay["call"]) == ("echo", gateway["call"])
        assert all(s["concurrency"] == 1 and s["total"] == gateway_hops.QUERIES for s in got)
        assert encode["data"]["skip"] == query["data"]["skip"] == relay["data"]["skip"] == 0
    skips = [got[3]["data"]["skip"] for got in rounds]
    assert skips == [100, 200, 300] and by_name["gateway.search_text_c1"]["data"]["skip"] == 0


def test_echo_server_refuses_a_non_loopback_host() -> None:
    with pytest.raises(SystemExit, match="loopback"):
        echo_server.main(["--host", "10.0.0.5", "--port", "0"])


# ---------------------------------------------------------------------------------------------------------
# bench/perf_report.py: compare()


def ghz_record(name: str, target: str, rps: float, p50: float, per_cpu: float | None) -> dict[str, Any]:
    """One scenario as bench/ghz/run.py writes it to summary.json (the fields compare() reads and the
    ones around them)."""
    latency = {"n": 1000, "p50": p50, "p95": p50 * 2, "p99": p50 * 3, "mean": p50 * 1.1, "max": p50 * 10}
    rec: dict[str, Any] = {
        "name": name,
        "target": target,
        "call": "grpc.health.v1.Health.Check",
        "concurrency": 8,
        "requested": 100000,
        "max_duration_s": 10.0,
        "data_items": 1,
        "count": int(rps * 10),
        "stopped_by": "time",
        "rps": rps,
        "wall_s": 10.0,
        "expected_status": "OK",
        "unexpected": 0,
        "unexpected_ratio": 0.0,
        "latency_ms": latency,
        "latency_all_ms": dict(latency),
        "status_distribution": {"OK": int(rps * 10)},
        "error_distribution": {},
        "loadavg_end": [1.0, 1.0, 1.0],
    }
    if per_cpu is not None:
        rec["server_cpu_s"] = {target: round(rec["count"] / per_cpu, 3)}
        rec["calls_per_server_cpu_s"] = per_cpu
    return rec


def write_summary(run_dir: Path, scenarios: list[dict[str, Any]]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = {"run_id": "20260101T000000", "profile": "quick", "scenarios": scenarios}
    (run_dir / "summary.json").write_text(json.dumps(summary))


def row(rows: perf_report.Rows, section: str, what: str, unit: str) -> dict[str, Any]:
    found = [r for r in rows.rows if (r["section"], r["what"], r["unit"]) == (section, what, unit)]
    assert len(found) == 1, f"{section} / {what} / {unit}: {len(found)} rows; rows: {rows.rows}"
    return found[0]


def test_gateway_health_is_compared_with_echo_health_from_the_same_summary(tmp_path: Path) -> None:
    write_summary(
        tmp_path / "ghz",
        [
            ghz_record("echo.health", "echo", rps=4000.0, p50=1.6, per_cpu=5000.0),
            ghz_record("gateway.health", "gateway", rps=1000.0, p50=4.0, per_cpu=2000.0),
            # A skipped scenario has no figures: it must count as not measured, not as zero.
            {"name": "encoder.health", "target": "encoder", "call": "x", "skipped": "no --encoder address"},
        ],
    )
    rows = perf_report.compare(tmp_path)
    sec = "A. gRPC servers vs echo"

    rps_row = row(rows, sec, "gateway Health/Check", "rps")
    assert rps_row["value"] == 1000.0 and rps_row["baseline"] == 4000.0
    assert rps_row["baseline_name"] == "echo Health/Check"
    assert rps_row["ratio"] == 0.25 and rps_row["better"] == "higher"

    p50_row = row(rows, sec, "gateway Health/Check", "p50 ms")
    assert p50_row["ratio"] == 2.5 and p50_row["better"] == "lower"

    cpu_row = row(rows, sec, "gateway Health/Check", "calls/CPU-s")
    assert cpu_row["ratio"] == 0.4

    assert not [r for r in rows.rows if r["what"].startswith(("encoder ", "search "))]
    assert f"{sec}: encoder Health/Check (rps) vs echo Health/Check: not measured" in rows.missing
    assert f"{sec}: search Health/Check (rps) vs echo Health/Check: not measured" in rows.missing


def test_uncached_search_is_compared_with_its_two_hops_without_the_generation_read(tmp_path: Path) -> None:
    """A gateway watching index generations makes no GetIndexGeneration call on a search, so the
    sum it is held to is EncodeTexts + Query alone."""
    write_summary(
        tmp_path / "ghz",
        [
            ghz_record("search.index_generation_c1", "search", rps=2000.0, p50=0.5, per_cpu=None),
            ghz_record("encoder.encode_text_c1", "encoder", rps=300.0, p50=3.0, per_cpu=None),
            ghz_record("search.first_stage_c1", "search", rps=400.0, p50=2.0, per_cpu=None),
            ghz_record("gateway.search_text_c1", "gateway", rps=100.0, p50=7.5, per_cpu=None),
        ],
    )
    rows = perf_report.compare(tmp_path)
    p50 = row(rows, "F. gateway vs sum of hops", "uncached text search (ghz c1)", "p50 ms")
    assert p50["baseline_name"] == "EncodeTexts + Query(window 100)"
    assert p50["baseline"] == 5.0 and p50["ratio"] == 1.5


def test_missing_or_unreadable_inputs_are_listed_as_not_measured(tmp_path: Path) -> None:
    write_summary(
        tmp_path / "ghz",
        [
            ghz_record("echo.health", "echo", rps=4000.0, p50=1.6, per_cpu=None),
            ghz_record("gateway.health", "gateway", rps=2000.0, p50=3.2, per_cpu=None),
        ],
    )
    (tmp_path / "search.json").write_text("{not json")  # a step that died mid-write
    # No ghz-one-core/, encoder.json or gateway.json at all.
    rows = perf_report.compare(tmp_path)

    assert row(rows, "A. gRPC servers vs echo", "gateway Health/Check", "rps")["ratio"] == 0.5
    # Without the server CPU times (no --watch-pid) that figure is not measured, the others still are.
    assert "A. gRPC servers vs echo: gateway Health/Check (calls/CPU-s) vs echo: not measured" in rows.missing
    assert (
        "B. one server core: echo Health/Check, one core (rps) vs published grpc.aio figure: not measured"
        in rows.missing
    )
    assert "D. Weaviate vs embedded: Weaviate: indexing (upserts/s) vs embedded: not measured" in rows.missing
    assert (
        "E. cached vs uncached: gateway Search (gateway.py c1): cached (p50 ms) vs uncached: not measured"
        in rows.missing
    )
    assert (
        "F. gateway vs sum of hops: ingest, safety + OCR off (images/s) vs EncodeImages alone: not measured"
        in rows.missing
    )
    sections = {r["section"] for r in rows.rows}
    assert sections == {"A. gRPC servers vs echo"}, sections


def test_present_step_files_turn_not_measured_rows_into_ratios(tmp_path: Path) -> None:
    published = perf_report.PUBLISHED_ECHO_RPS
    write_summary(tmp_path / "ghz", [])
    write_summary(
        tmp_path / "ghz-one-core",
        [
            ghz_record("echo.health", "echo", rps=published / 2, p50=1.0, per_cpu=None),
            ghz_record("gateway.health", "gateway", rps=published / 8, p50=3.0, per_cpu=None),
        ],
    )
    gateway = {
        "text_search": {"cached": {"p50_ms": 2.0}, "uncached": {"p50_ms": 8.0}},
        "ingest": {"ingest_no_analysis_img_s": 15.0, "encoder_only_img_s": 20.0},
    }
    (tmp_path / "gateway.json").write_text(json.dumps(gateway))
    rows = perf_report.compare(tmp_path)

    sec_b = "B. one server core"
    assert row(rows, sec_b, "echo Health/Check, one core", "rps")["ratio"] == 0.5
    assert row(rows, sec_b, "gateway Health/Check, one core", "rps")["ratio"] == 0.25
    cached = row(rows, "E. cached vs uncached", "gateway Search (gateway.py c1): cached", "p50 ms")
    assert cached["ratio"] == 0.25
    ingest = row(rows, "F. gateway vs sum of hops", "ingest, safety + OCR off", "images/s")
    assert ingest["ratio"] == 0.75 and ingest["baseline_name"] == "EncodeImages alone"
    # The one-core summary does not stand in for the shared-cores one.
    assert "A. gRPC servers vs echo: gateway Health/Check (rps) vs echo Health/Check: not measured" in (
        rows.missing
    )


# ---------------------------------------------------------------------------------------------------------
# bench/ghz/run.py helpers


def context(n_queries: int) -> ghz_run.Context:
    return ghz_run.Context(
        run_id="t", images=[], ingest_images=[], queries=[f"q{i}" for i in range(n_queries)], vectors=None
    )


def test_query_slice_takes_queries_texts_after_skip() -> None:
    ctx = context(10)
    assert ghz_run.query_slice(ctx, {"queries": 3}) == ["q0", "q1", "q2"]
    assert ghz_run.query_slice(ctx, {"queries": 3, "skip": 4}) == ["q4", "q5", "q6"]
    assert ghz_run.query_slice(ctx, {"queries": 2, "skip": "8"}) == ["q8", "q9"]
    # Disjoint slices: one scenario's texts never overlap the next one's.
    first = set(ghz_run.query_slice(ctx, {"queries": 5}))
    assert first.isdisjoint(ghz_run.query_slice(ctx, {"queries": 5, "skip": 5}))


def test_queries_needed_covers_the_furthest_slice_with_a_floor_of_200() -> None:
    def sc(**data: Any) -> dict[str, Any]:
        return {"name": "s", "data": {"kind": "search_query", **data}}

    assert ghz_run.queries_needed([]) == 200
    assert ghz_run.queries_needed([sc(kind="health"), sc(queries=50)]) == 200
    assert ghz_run.queries_needed([sc(queries=100, skip=250), sc(queries=300)]) == 350
    assert ghz_run.queries_needed([sc(queries=120, skip=200), sc(queries=500, skip=10)]) == 510


@pytest.mark.parametrize("suite_file", ["suite.json", "perf_suite.json"])
def test_every_real_scenario_gets_its_full_query_slice(suite_file: str) -> None:
    suite = json.loads((REPO / "bench/ghz" / suite_file).read_text())
    scenarios = suite["scenarios"]
    ctx = context(ghz_run.queries_needed(scenarios))
    with_queries = [s for s in scenarios if "queries" in s["data"]]
    assert with_queries, f"{suite_file} has no query scenarios"
    for s in with_queries:
        assert len(ghz_run.query_slice(ctx, s["data"])) == s["data"]["queries"], s["name"]


def test_parse_watch_reads_name_pid_pairs() -> None:
    assert ghz_run.parse_watch([]) == {}
    assert ghz_run.parse_watch(["gateway=123", "echo_asyncio=45"]) == {"gateway": 123, "echo_asyncio": 45}


@pytest.mark.parametrize("bad", ["x", "=12", "gateway=", "gateway=abc", "gateway=-3", "gateway 12"])
def test_parse_watch_rejects_malformed_arguments(bad: str) -> None:
    with pytest.raises(SystemExit, match="NAME=PID") as err:
        ghz_run.parse_watch(["search=7", bad])
    assert repr(bad) in str(err.value)


def _table_rows(bench: str, *args: str) -> list[list[str]]:
    """The rows (split on whitespace) of the table a bench module prints, below its header line."""
    out = subprocess.run(
        [sys.executable, "-m", f"bench.{bench}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.splitlines()
    return [line.split() for line in out[1:]]


def test_encoder_spacing_measures_every_pause_and_thread_count_against_back_to_back() -> None:
    """bench.encoder_spacing on the photo package's text tower: a row per (pause, threads) pair, pause 0
    added when not asked for, and each thread count's pause-0 row is its own baseline."""
    rows = _table_rows("encoder_spacing", "--calls", "3", "--rounds", "1", "--pauses-ms", "1")
    assert [(r[1], r[2]) for r in rows] == [("0", "1"), ("0", "2"), ("1", "1"), ("1", "2")]
    assert all(float(r[6]) == 1.0 for r in rows[:2])
    assert all(float(r[3]) > 0 and float(r[5]) > 0 for r in rows)


def test_graph_orphans_counts_what_a_serial_build_leaves_unreachable() -> None:
    """bench.graph_orphans: one row per case and build; a serially built graph reaches every vector."""
    rows = _table_rows("graph_orphans", "--cases", "600x8/200", "--builds", "serial", "repair")
    assert [(r[0], r[1]) for r in rows] == [("600x8/200", "serial"), ("600x8/200", "repair")]
    assert rows[0][3] == "0" and rows[0][4] == "0"  # serial: nothing re-added, nothing unreachable
    assert all(float(r[2]) > 0 for r in rows)
