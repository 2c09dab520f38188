"""The encoder's pixel budget: unit behaviour of PixelBudget, and a burst of huge images against the real
service process (the excess is RESOURCE_EXHAUSTED with retry-after-ms; small images are still served)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from imagesearch.v1 import encoder_pb2, encoder_pb2_grpc
from PIL import Image

from services.encoder.budget import BudgetExhausted, PixelBudget, declared_pixels
from services.encoder.domain import ImageItem
from tests.service_process import ServiceProcess


def png(width: int, height: int, colour: tuple[int, int, int] = (200, 30, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


def item(width: int, height: int) -> ImageItem:
    return ImageItem(id=f"{width}x{height}", data=png(width, height))


def test_declared_pixels_reads_the_header_only() -> None:
    assert declared_pixels(png(300, 200)) == 60_000
    assert declared_pixels(b"not an image") == 0


async def _hold(
    budget: PixelBudget, items: list[ImageItem], entered: asyncio.Event, release: asyncio.Event
) -> None:
    async with budget.reserve(items):
        entered.set()
        await release.wait()


def test_a_call_that_does_not_fit_waits_then_is_refused_with_retry_after() -> None:
    async def scenario() -> None:
        budget = PixelBudget(max_pixels=1_000_000, max_calls=None, wait_s=0.05, retry_after_s=0.7)
        entered, release = asyncio.Event(), asyncio.Event()
        holder = asyncio.create_task(_hold(budget, [item(800, 1000)], entered, release))
        await entered.wait()
        with pytest.raises(BudgetExhausted) as refused:
            async with budget.reserve([item(500, 500)]):
                pass
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert ("retry-after-ms", "700") in refused.value.trailing_metadata
        assert "megapixels" in refused.value.message and "retry after" in refused.value.message
        async with budget.reserve([item(100, 100)]):  # a small call fits beside the big one
            assert budget.pixels_in_flight == 810_000
        release.set()
        await holder
        assert budget.pixels_in_flight == 0 and budget.calls_in_flight == 0

    asyncio.run(scenario())


def test_a_waiting_call_is_admitted_when_the_budget_frees_within_the_wait() -> None:
    async def scenario() -> None:
        budget = PixelBudget(max_pixels=1_000_000, max_calls=None, wait_s=2.0, retry_after_s=1.0)
        entered, release = asyncio.Event(), asyncio.Event()
        holder = asyncio.create_task(_hold(budget, [item(1000, 1000)], entered, release))
        await entered.wait()
        asyncio.get_running_loop().call_later(0.05, release.set)
        async with budget.reserve([item(1000, 1000)]):
            assert budget.calls_in_flight == 1
        await holder

    asyncio.run(scenario())


def test_a_call_above_the_whole_budget_runs_alone_and_the_call_limit_holds() -> None:
    async def scenario() -> None:
        budget = PixelBudget(max_pixels=100, max_calls=1, wait_s=0.01, retry_after_s=1.0)
        async with budget.reserve([item(50, 50)]):  # 2,500 pixels > 100: admitted on an idle process
            with pytest.raises(BudgetExhausted, match="calls are decoding"):
                async with budget.reserve([item(1, 1)]):
                    pass
        assert budget.pixels_in_flight == 0

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def budgeted(model_repository: Path) -> Iterator[encoder_pb2_grpc.EncoderServiceStub]:
    env = {
        "IMAGESEARCH_ENCODER_MODEL_REPOSITORY": str(model_repository),
        "IMAGESEARCH_ENCODER_BUDGET_MAX_PIXELS_IN_FLIGHT": "40000000",  # one 36-megapixel image at a time
        "IMAGESEARCH_ENCODER_BUDGET_WAIT_S": "0.1",
        "IMAGESEARCH_ENCODER_BUDGET_RETRY_AFTER_S": "0.5",
        "IMAGESEARCH_ENCODER_LOG_LEVEL": "info",
    }
    svc = ServiceProcess("services.encoder", env=env).start(timeout_s=120)
    try:
        with grpc.insecure_channel(svc.address) as channel:
            yield encoder_pb2_grpc.EncoderServiceStub(channel)
    finally:
        svc.stop()


def test_burst_of_huge_images_is_refused_beyond_the_budget_and_small_ones_are_served(
    budgeted: encoder_pb2_grpc.EncoderServiceStub,
) -> None:
    huge = png(6000, 6000)  # 36 megapixels; a flat colour keeps the message small
    small = png(64, 64, (10, 120, 30))
    big_calls = [
        budgeted.EncodeImages.future(
            encoder_pb2.EncodeImagesRequest(images=[encoder_pb2.ImageInput(id=f"huge{i}", data=huge)]),
            timeout=60,
        )
        for i in range(8)
    ]
    small_calls = [
        budgeted.EncodeImages.future(
            encoder_pb2.EncodeImagesRequest(images=[encoder_pb2.ImageInput(id=f"small{i}", data=small)]),
            timeout=60,
        )
        for i in range(4)
    ]
    served, refused = 0, []
    for call in big_calls:
        try:
            response = call.result()
            assert not response.results[0].HasField("error")
            served += 1
        except grpc.RpcError as exc:
            refused.append(exc)
    assert served >= 1 and refused, (served, len(refused))
    for exc in refused:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "the encoder is busy" in (exc.details() or "")
        assert ("retry-after-ms", "500") in tuple(exc.trailing_metadata() or ())
    for call in small_calls:
        response = call.result()
        assert len(response.results) == 1 and not response.results[0].HasField("error")
