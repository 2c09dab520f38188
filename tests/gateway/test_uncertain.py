"""F5: an upsert whose outcome is unknown is acknowledged UNCERTAIN, never FAILED (issue 17).

FAILED promises nothing was stored; when the search service's answer is lost (it went away,
the deadline ran out, the call was cancelled) the item may have been stored, so the gateway says
UNCERTAIN with an actionable message, and the CLI counts it and exits non-zero.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from imagesearch.v1 import common_pb2, gateway_pb2

from services import cli
from services.common.errors import DeadlineExceeded, InvalidArgument
from services.gateway import convert
from services.gateway.backends.calls import backend_error
from services.gateway.backends.errors import (
    BackendDeadlineExceeded,
    BackendError,
    BackendUnavailable,
    BreakerOpen,
)
from services.gateway.domain import IngestAck, IngestOutcome, UpsertRecord
from services.gateway.ingest_flow import write_outcome_unknown
from tests.gateway.test_core import World, item, run_ingest


@pytest.mark.parametrize(
    ("exc", "unknown"),
    [
        (BackendUnavailable("search", "unavailable: socket closed"), True),
        (BreakerOpen("search", "breaker open"), True),  # an earlier, retried attempt may have been sent
        (BackendDeadlineExceeded("search", "deadline exceeded"), True),
        (DeadlineExceeded("the deadline passed"), True),
        (BackendError("search", "cancelled", code=grpc.StatusCode.CANCELLED), True),
        (BackendError("search", "unknown", code=grpc.StatusCode.UNKNOWN), True),
        (BackendError("search", "bad tenant", code=grpc.StatusCode.INVALID_ARGUMENT), False),
        (BackendError("search", "model mismatch", code=grpc.StatusCode.FAILED_PRECONDITION), False),
        (InvalidArgument("asset_id must be 1-256 characters"), False),
    ],
)
def test_which_upsert_errors_leave_the_outcome_unknown(exc: Any, unknown: bool) -> None:
    assert write_outcome_unknown(exc) is unknown


def _search_fails_with(w: World, status: grpc.StatusCode) -> None:
    async def upsert(tenant: str, records: Sequence[UpsertRecord]) -> None:
        raise backend_error("search", grpc.aio.AioRpcError(status, None, None, details="Socket closed"))

    w.search.upsert = upsert  # type: ignore[method-assign, assignment]


@pytest.mark.parametrize(
    "status",
    [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED],
)
async def test_lost_upsert_answer_is_uncertain_not_failed(status: grpc.StatusCode) -> None:
    w = World()
    _search_fails_with(w, status)
    acks = await run_ingest(w, [item("lost", "cat")])
    ack = acks["lost"]
    assert ack.outcome is IngestOutcome.UNCERTAIN
    assert ack.error_code == status.value[0]
    assert ack.error_message.startswith("the index did not confirm the write")
    assert ack.error_message.endswith("re-sending is safe")
    assert "Socket closed" not in ack.error_message


async def test_refusals_before_the_upsert_stay_failed() -> None:
    w = World()
    w.search.fail_upsert_ids.add("rejected")  # the search service answered: not stored
    acks = await run_ingest(w, [item("rejected", "a"), item("", "b"), item("ok", "c")])
    assert acks["rejected"].outcome is IngestOutcome.FAILED
    assert acks[""].outcome is IngestOutcome.FAILED and acks[""].error_code == 3
    assert acks["ok"].outcome is IngestOutcome.CREATED


def test_uncertain_ack_carries_its_reason_on_the_wire() -> None:
    pb = convert.ingest_ack_pb(IngestAck("x", IngestOutcome.UNCERTAIN, 14, "the index did not confirm"))
    assert pb.outcome == gateway_pb2.INGEST_OUTCOME_UNCERTAIN
    assert (pb.error.code, pb.error.message) == (14, "the index did not confirm")
    created = convert.ingest_ack_pb(IngestAck("y", IngestOutcome.CREATED))
    assert not created.HasField("error")


class _FakeGateway:
    def __init__(self, channel: object) -> None:
        pass

    def Ingest(self, requests: Iterator[gateway_pb2.IngestRequest], **kw: object) -> Iterator[Any]:
        outcomes = [gateway_pb2.INGEST_OUTCOME_CREATED, gateway_pb2.INGEST_OUTCOME_UNCERTAIN]
        for req, outcome in zip(requests, outcomes, strict=True):
            err = common_pb2.ItemError(
                code=14, message="the index did not confirm the write; re-sending is safe"
            )
            yield gateway_pb2.IngestResponse(
                asset_id=req.asset_id,
                outcome=outcome,
                error=err if outcome == gateway_pb2.INGEST_OUTCOME_UNCERTAIN else None,
            )


def test_cli_counts_uncertain_and_exits_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.png").write_bytes(b"a")
    (tmp_path / "b.png").write_bytes(b"b")
    monkeypatch.setattr(cli.gateway_pb2_grpc, "GatewayServiceStub", _FakeGateway)
    assert cli.main(["ingest", str(tmp_path), "--quiet", "--gateway", "127.0.0.1:1"]) == 1
    out = capsys.readouterr().out
    assert "created 1" in out and "uncertain 1" in out and "failed 0" in out
    assert "b.png: uncertain UNAVAILABLE: the index did not confirm the write" in out
    assert "running the same ingest again is safe" in out
