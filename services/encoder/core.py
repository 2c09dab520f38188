"""The encoder's domain logic: validate items, preprocess them off the event loop, run the model
runtime, and return L2-normalised float32 embeddings with the model that produced them.

No gRPC or protobuf types here: items in, `ItemResult`s out. A bad item fails only itself (an
`ItemResult` with a DomainError); a call fails as a whole for an empty or oversized batch, an
unavailable runtime or an expired deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import structlog
from prometheus_client import Counter, Histogram

from services.common import context
from services.common.batching import MicroBatcher, submit_stream
from services.common.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from services.common.metrics import LATENCY_BUCKETS
from services.encoder.backends.base import EncoderBackend, TowerSpec
from services.encoder.budget import PixelBudget
from services.encoder.domain import (
    EmbeddingModel,
    ImageItem,
    ItemResult,
    Limits,
    ModelInfo,
    ModelOutputError,
    TextItem,
    TextPreprocessing,
)
from services.encoder.preprocess import COLOR_MODES, ImagePreprocessing, decode_image
from services.encoder.settings import EncoderSettings
from services.encoder.tokenizer import TOKENIZER_NAME, ClipTokenizer, shared_tokenizer

log = structlog.get_logger("encoder")

ITEMS = Counter("encoder_items_total", "Items encoded, by kind and outcome code.", ["kind", "code"])
RUNTIME_SECONDS = Histogram(
    "encoder_runtime_seconds", "Time spent in the model runtime per call.", ["kind"], buckets=LATENCY_BUCKETS
)
PREPROCESS_SECONDS = Histogram(
    "encoder_preprocess_seconds", "Decode + resize time per image.", buckets=LATENCY_BUCKETS
)

SUPPORTED_RESIZE_MODES = ("shortest_side_center_crop",)
SUPPORTED_INTERPOLATIONS = ("bicubic",)


def _floats(value: str, what: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise FailedPrecondition(f"model parameter {what} must be three comma-separated numbers: {value!r}")
    return parts  # type: ignore[return-value]


def build_model_info(image: TowerSpec, text: TowerSpec, runtime: str) -> ModelInfo:
    """Check the served towers against what this service implements and describe them.

    The contract travels with the model (its config `parameters`): a model that needs preprocessing we do
    not implement, or two towers that are not one model, are refused rather than served wrongly.
    """
    ip, tp = image.parameters, text.parameters
    name = ip.get("imagesearch.embedding_model", "")
    if not name or name != tp.get("imagesearch.embedding_model", ""):
        raise FailedPrecondition(
            f"towers '{image.model}' and '{text.model}' must name the same imagesearch.embedding_model "
            f"(got {name!r} and {tp.get('imagesearch.embedding_model', '')!r})"
        )
    if image.version != text.version:
        raise FailedPrecondition(
            f"'{image.model}' serves version {image.version} but '{text.model}' version {text.version}: "
            "their vectors would not share one space"
        )
    if image.dimension != text.dimension or image.dimension < 1:
        raise FailedPrecondition(
            f"embedding widths differ: '{image.model}' {image.dimension}, '{text.model}' {text.dimension}"
        )
    size = int(ip.get("imagesearch.image.size", "224"))
    if image.input_dtype != "uint8" or image.input_shape != (size, size, 3):
        raise FailedPrecondition(
            f"'{image.model}' must take uint8 [batch, {size}, {size}, 3] pixels; it takes "
            f"{image.input_dtype} {list(image.input_shape)}"
        )
    resize_mode = ip.get("imagesearch.image.resize_mode", "shortest_side_center_crop")
    interpolation = ip.get("imagesearch.image.interpolation", "bicubic")
    if resize_mode not in SUPPORTED_RESIZE_MODES or interpolation not in SUPPORTED_INTERPOLATIONS:
        raise FailedPrecondition(
            f"'{image.model}' needs resize {resize_mode}/{interpolation}; this encoder implements "
            f"{SUPPORTED_RESIZE_MODES[0]}/{SUPPORTED_INTERPOLATIONS[0]}"
        )
    color_mode = ip.get("imagesearch.image.color_mode", "clip_reference")
    if color_mode not in COLOR_MODES:
        raise FailedPrecondition(
            f"'{image.model}' needs imagesearch.image.color_mode {color_mode!r}; this encoder implements "
            f"{sorted(COLOR_MODES)}"
        )
    defaults = ImagePreprocessing()
    image_pre = ImagePreprocessing(
        color_mode=color_mode,
        size=size,
        resize_mode=resize_mode,
        interpolation=interpolation,
        mean=_floats(ip["imagesearch.image.mean"], "imagesearch.image.mean")
        if "imagesearch.image.mean" in ip
        else defaults.mean,
        std=_floats(ip["imagesearch.image.std"], "imagesearch.image.std")
        if "imagesearch.image.std" in ip
        else defaults.std,
    )
    tokenizer = tp.get("imagesearch.text.tokenizer", TOKENIZER_NAME)
    context_length = int(tp.get("imagesearch.text.context_length", "77"))
    lowercase = tp.get("imagesearch.text.lowercase", "true").lower() == "true"
    if tokenizer != TOKENIZER_NAME or not lowercase:
        raise FailedPrecondition(
            f"'{text.model}' needs tokenizer {tokenizer!r} (lowercase={lowercase}); this encoder implements "
            f"{TOKENIZER_NAME!r} with lowercasing"
        )
    if text.input_dtype != "int64" or text.input_shape != (context_length,):
        raise FailedPrecondition(
            f"'{text.model}' must take int64 [batch, {context_length}] token ids; it takes "
            f"{text.input_dtype} {list(text.input_shape)}"
        )
    return ModelInfo(
        model=EmbeddingModel(name, image.version),
        dimension=image.dimension,
        image=image_pre,
        text=TextPreprocessing(tokenizer, context_length, lowercase),
        runtime=runtime,
        image_tower=image.model,
        text_tower=text.model,
    )


def _finish(ids: Sequence[str], raw: np.ndarray) -> list[ItemResult]:
    """float32 runtime output -> unit-length vectors; a non-finite or zero row fails only its item."""
    out = np.asarray(raw, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1)
    results = []
    for i, item_id in enumerate(ids):
        n = norms[i]
        if not np.isfinite(n) or not np.all(np.isfinite(out[i])) or n <= 0:
            error = ModelOutputError("the model produced a non-finite or zero vector for this item")
            results.append(ItemResult(item_id, error=error))
        else:
            results.append(ItemResult(item_id, embedding=out[i] / n))
    return results


class Encoder:
    """Images and texts to embeddings through one model runtime."""

    def __init__(
        self,
        backend: EncoderBackend,
        limits: Limits | None = None,
        decode_threads: int = EncoderSettings.model_fields["decode_threads"].default,
        tokenizer: ClipTokenizer | None = None,
        budget: PixelBudget | None = None,
    ) -> None:
        self.backend = backend
        self.limits = limits or Limits()
        self.budget = budget or PixelBudget.unlimited()
        self._pool = ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="preprocess")
        self._tokenizer = tokenizer or shared_tokenizer()
        self._info: ModelInfo | None = None
        # Two batches at a time: one decoding on the preprocessing threads while the other runs in
        # the model runtime (which merges concurrent calls itself).
        self._stream_batcher: MicroBatcher[ImageItem, ItemResult] = MicroBatcher(
            self._encode_streamed,
            max_items=self.limits.max_batch_images,
            wait_s=0,
            max_concurrent=2,
            name="image stream",
        )

    # ---- model ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Describe the served model now; a runtime that is not up yet is retried on the first call."""
        try:
            await self.model_info()
        except Unavailable as exc:
            log.warning("model runtime not available yet", runtime=self.backend.runtime, error=exc.message)

    async def model_info(self) -> ModelInfo:
        if self._info is None:
            image, text = await self.backend.describe()
            info = build_model_info(image, text, self.backend.runtime)
            if info.text.context_length != self._tokenizer.context_length:
                self._tokenizer = shared_tokenizer(info.text.context_length)
            if self._info != info:
                log.info(
                    "serving model",
                    model=info.model.name,
                    version=info.model.version,
                    dimension=info.dimension,
                    runtime=info.runtime,
                    image_tower=info.image_tower,
                    text_tower=info.text_tower,
                )
            self._info = info
        return self._info

    async def ready(self) -> bool:
        ok = await self.backend.ready()
        if not ok:
            self._info = None  # describe again when it is back (the version may have changed)
            return False
        try:
            await self.model_info()
        except DomainError:
            return False
        return True

    async def close(self) -> None:
        await self._stream_batcher.close()
        await self.backend.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _timeout(self) -> float:
        return context.remaining(self.limits.default_deadline_s)

    # ---- images -----------------------------------------------------------------------------------

    def _check_image(self, item: ImageItem, contract: ImagePreprocessing) -> np.ndarray:
        """Runs on a preprocessing thread."""
        if len(item.data) > self.limits.max_image_bytes:
            raise ResourceExhausted(
                f"image is {len(item.data)} bytes, above the {self.limits.max_image_bytes}-byte limit"
            )
        start = time.perf_counter()
        try:
            return decode_image(item.data, contract.size, self.limits.max_image_pixels, contract.color_mode)
        finally:
            PREPROCESS_SECONDS.observe(time.perf_counter() - start)

    async def _preprocess_images(
        self, items: Sequence[ImageItem], contract: ImagePreprocessing
    ) -> list[np.ndarray | DomainError]:
        loop = asyncio.get_running_loop()
        async with self.budget.reserve(items):
            outcomes = await asyncio.gather(
                *(loop.run_in_executor(self._pool, self._check_image, item, contract) for item in items),
                return_exceptions=True,
            )
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, DomainError):
                raise outcome
        return outcomes  # type: ignore[return-value]

    async def _run_images(self, ids: list[str], pixels: list[np.ndarray]) -> list[ItemResult]:
        start = time.perf_counter()
        raw = await self.backend.encode_images(np.stack(pixels), self._timeout())
        RUNTIME_SECONDS.labels("image").observe(time.perf_counter() - start)
        return _finish(ids, raw)

    async def encode_images(self, items: Sequence[ImageItem]) -> tuple[EmbeddingModel, list[ItemResult]]:
        if not items:
            raise InvalidArgument("the request has no images; send 1 to max_batch_images of them")
        if len(items) > self.limits.max_batch_images:
            raise ResourceExhausted(
                f"{len(items)} images in one call, above the limit of {self.limits.max_batch_images}; "
                "split the batch or use StreamEncodeImages"
            )
        info = await self.model_info()
        ids = [item.id or str(i) for i, item in enumerate(items)]
        outcomes = await self._preprocess_images(items, info.image)
        results: list[ItemResult | None] = [None] * len(items)
        good = [i for i, o in enumerate(outcomes) if isinstance(o, np.ndarray)]
        for i, o in enumerate(outcomes):
            if isinstance(o, DomainError):
                results[i] = ItemResult(ids[i], error=o)
        if good:
            encoded = await self._run_images([ids[i] for i in good], [outcomes[i] for i in good])  # type: ignore[misc]
            for i, r in zip(good, encoded, strict=True):
                results[i] = r
        final = [r for r in results if r is not None]
        _count("image", final)
        return info.model, final

    async def encode_image_stream(
        self, items: AsyncIterator[ImageItem]
    ) -> AsyncIterator[tuple[EmbeddingModel, ItemResult]]:
        """Encode images as they arrive and yield each result as soon as its batch is done (any order).

        At most stream_max_in_flight images are read ahead: when that many are unanswered, reading
        pauses, so gRPC flow control slows the sender down. Images of every open stream share one
        batcher: whatever arrived while the previous batches ran (up to max_batch_images) is decoded
        and encoded as the next batch. A bad image fails only itself; a failed runtime ends the stream.
        """
        info = await self.model_info()
        async for result in submit_stream(
            self._stream_batcher.submit,
            _numbered(items),
            max_in_flight=self.limits.stream_max_in_flight,
            ordered=False,
        ):
            yield info.model, result

    async def _encode_streamed(self, items: list[ImageItem]) -> list[ItemResult]:
        """The stream batcher's batch function."""
        _, results = await self.encode_images(items)
        return results

    # ---- texts ------------------------------------------------------------------------------------

    async def encode_texts(self, items: Sequence[TextItem]) -> tuple[EmbeddingModel, list[ItemResult]]:
        if not items:
            raise InvalidArgument("the request has no texts; send 1 to max_batch_texts of them")
        if len(items) > self.limits.max_batch_texts:
            raise ResourceExhausted(
                f"{len(items)} texts in one call, above the limit of {self.limits.max_batch_texts}; "
                "split the batch"
            )
        info = await self.model_info()
        ids = [item.id or str(i) for i, item in enumerate(items)]
        results: list[ItemResult | None] = [None] * len(items)
        valid: list[int] = []
        for i, item in enumerate(items):
            if not item.text:
                results[i] = ItemResult(ids[i], error=InvalidArgument("text is empty"))
            elif len(item.text) > self.limits.max_text_chars:
                results[i] = ItemResult(
                    ids[i],
                    error=InvalidArgument(
                        f"text has {len(item.text)} characters, above the limit of "
                        f"{self.limits.max_text_chars}"
                    ),
                )
            else:
                valid.append(i)
        if valid:
            loop = asyncio.get_running_loop()
            tokens = await loop.run_in_executor(self._pool, self._tokenizer, [items[i].text for i in valid])
            runnable = []
            for k, i in enumerate(valid):
                if tokens.empty[k]:
                    results[i] = ItemResult(
                        ids[i], error=InvalidArgument("text is empty after Unicode and whitespace cleanup")
                    )
                else:
                    runnable.append(k)
            if runnable:
                start = time.perf_counter()
                raw = await self.backend.encode_texts(tokens.ids[runnable], self._timeout())
                RUNTIME_SECONDS.labels("text").observe(time.perf_counter() - start)
                finished = _finish([ids[valid[k]] for k in runnable], raw)
                for k, r in zip(runnable, finished, strict=True):
                    i = valid[k]
                    results[i] = ItemResult(r.id, r.embedding, r.error, truncated=tokens.truncated[k])
        final = [r for r in results if r is not None]
        _count("text", final)
        return info.model, final


async def _numbered(items: AsyncIterator[ImageItem]) -> AsyncIterator[ImageItem]:
    """A streamed image without an id is named by its position in the stream."""
    n = 0
    async for item in items:
        yield item if item.id else ImageItem(str(n), item.data)
        n += 1


def _count(kind: str, results: Sequence[ItemResult]) -> None:
    for r in results:
        ITEMS.labels(kind, "OK" if r.error is None else r.error.code.name).inc()
