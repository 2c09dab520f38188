"""The encoder's domain logic: validate items, preprocess them off the event loop, run the model
runtime, and return L2-normalised float32 embeddings with the model that produced them.

No gRPC or protobuf types here: items in, `ItemResult`s out. A bad item fails only itself (an
`ItemResult` with a DomainError); a call fails as a whole for an empty or oversized batch, an
unavailable runtime or an expired deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
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
    VectorInfo,
)
from services.encoder.package import DTYPES, TOWERS, ModelPackage, TowerKind
from services.encoder.preprocess import ImagePreprocessing, decode_image
from services.encoder.settings import EncoderSettings
from services.encoder.tokenizer import TOKENIZER_NAME, tokenizer_for

log = structlog.get_logger("encoder")

ITEMS = Counter("encoder_items_total", "Items encoded, by kind and outcome code.", ["kind", "code"])
RUNTIME_SECONDS = Histogram(
    "encoder_runtime_seconds", "Time spent in the model runtime per call.", ["kind"], buckets=LATENCY_BUCKETS
)
PREPROCESS_SECONDS = Histogram(
    "encoder_preprocess_seconds", "Decode + resize time per image.", buckets=LATENCY_BUCKETS
)


def _check_tensors(kind: TowerKind, spec: TowerSpec, package: ModelPackage) -> None:
    """The served tower has the package's tensors, and each output is its vector's width."""
    tower = package.tower(kind)
    served_in = {t.name: t for t in spec.inputs}
    for declared in tower.inputs:
        got = served_in.get(declared.name)
        want_shape = tuple(declared.shape[1:])
        if (
            got is None
            or got.dtype != DTYPES[declared.dtype]
            or len(got.shape) != len(want_shape)
            or any(w != -1 and g != w for g, w in zip(got.shape, want_shape, strict=True))
        ):
            served = ", ".join(f"{t.name} {t.dtype} {list(t.shape)}" for t in spec.inputs)
            raise FailedPrecondition(
                f"'{spec.model}' takes {served}; the package's {kind} tower needs '{declared.name}' "
                f"{DTYPES[declared.dtype]} {list(want_shape)}"
            )
    served_out = {t.name: t for t in spec.outputs}
    for declared in tower.outputs:
        got = served_out.get(declared.name)
        dim = package.manifest.vectors[declared.vector or ""].dim
        if got is None or got.shape[-1] != dim:
            width = None if got is None else got.shape[-1]
            raise FailedPrecondition(
                f"'{spec.model}' output '{declared.name}' is {width} wide; the package's vector "
                f"'{declared.vector}' is {dim}"
            )


def build_model_info(package: ModelPackage, image: TowerSpec, text: TowerSpec, runtime: str) -> ModelInfo:
    """Check the served towers against the model package and describe what is served.

    The contract travels with the model (its package.json): towers whose tensors or widths differ from the
    package, or two towers that are not one model, are refused rather than served wrongly.
    """
    if image.version != text.version:
        raise FailedPrecondition(
            f"'{image.model}' serves version {image.version} but '{text.model}' version {text.version}: "
            "their vectors would not share one space"
        )
    _check_tensors("image", image, package)
    _check_tensors("text", text, package)
    pixels = image.inputs[0]
    pre = package.manifest.preprocessing.image
    if len(image.inputs) != 1 or pixels.dtype != "uint8" or pixels.shape != (pre.size, pre.size, 3):
        raise FailedPrecondition(
            f"'{image.model}' must take one uint8 [batch, {pre.size}, {pre.size}, 3] pixel tensor; it takes "
            f"{pixels.dtype} {list(pixels.shape)}"
        )
    tok = package.manifest.tokenizer
    feeds = {"clip-bpe": {"input_ids"}, "wordpiece": {"input_ids", "attention_mask"}}[tok.kind]
    if not {t.name for t in text.inputs} <= feeds:
        raise FailedPrecondition(
            f"'{text.model}' takes {sorted(t.name for t in text.inputs)}; a {tok.kind} tokenizer gives "
            f"{sorted(feeds)}"
        )
    if tok.kind == "clip-bpe" and any(t.shape != (tok.max_length,) for t in text.inputs):
        raise FailedPrecondition(
            f"'{text.model}' must take int64 [batch, {tok.max_length}] token ids "
            f"(a {tok.max_length}-token "
            "CLIP context)"
        )
    defaults = ImagePreprocessing()
    image_pre = ImagePreprocessing(
        color_mode=pre.color_mode,
        size=pre.size,
        resize_mode=pre.resize_mode,
        interpolation=pre.interpolation,
        mean=pre.mean or defaults.mean,
        std=pre.std or defaults.std,
    )
    primary = package.primary_vector
    vectors = tuple(
        VectorInfo(
            name=name,
            dimension=v.dim,
            from_image="image" in v.towers,
            from_text="text" in v.towers,
            primary=name == primary,
            description=v.use,
        )
        for name, v in package.manifest.vectors.items()
    )
    tokenizer_name = TOKENIZER_NAME if tok.kind == "clip-bpe" else tok.kind
    return ModelInfo(
        model=EmbeddingModel(package.name, package.version),
        dimension=package.manifest.vectors[primary].dim,
        image=image_pre,
        text=TextPreprocessing(tokenizer_name, tok.max_length, tok.lower_case),
        runtime=runtime,
        image_tower=image.model,
        text_tower=text.model,
        vectors=vectors,
        primary_vector=primary,
    )


def _finish(
    ids: Sequence[str], outputs: Mapping[str, np.ndarray], vector_of: Mapping[str, str], primary: str
) -> list[ItemResult]:
    """float32 runtime outputs -> unit-length named vectors; a non-finite or zero row in any of them fails
    only its item."""
    named = {
        vector_of[name]: np.asarray(out, dtype=np.float32)
        for name, out in outputs.items()
        if name in vector_of
    }
    norms = {name: np.linalg.norm(out, axis=1) for name, out in named.items()}
    results = []
    for i, item_id in enumerate(ids):
        vectors = {}
        for name, out in named.items():
            n = norms[name][i]
            if not np.isfinite(n) or not np.all(np.isfinite(out[i])) or n <= 0:
                break
            vectors[name] = out[i] / n
        else:
            results.append(ItemResult(item_id, embedding=vectors[primary], vectors=vectors))
            continue
        error = ModelOutputError("the model produced a non-finite or zero vector for this item")
        results.append(ItemResult(item_id, error=error))
    return results


class Encoder:
    """Images and texts to embeddings through one model runtime."""

    def __init__(
        self,
        backend: EncoderBackend,
        package: ModelPackage,
        limits: Limits | None = None,
        decode_threads: int = EncoderSettings.model_fields["decode_threads"].default,
        budget: PixelBudget | None = None,
    ) -> None:
        self.backend = backend
        self.package = package
        self.limits = limits or Limits()
        self.budget = budget or PixelBudget.unlimited()
        self._pool = ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="preprocess")
        tok = package.manifest.tokenizer
        self._tokenizer = tokenizer_for(tok.kind, tok.max_length, package.tokenizer_file)
        self._vector_of = {kind: package.tower(kind).output_vectors() for kind in TOWERS}
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
            info = build_model_info(self.package, image, text, self.backend.runtime)
            if self._info != info:
                log.info(
                    "serving model",
                    model=info.model.name,
                    version=info.model.version,
                    dimension=info.dimension,
                    runtime=info.runtime,
                    vectors=[v.name for v in info.vectors],
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
        return _finish(ids, raw, self._vector_of["image"], self.package.primary_vector)

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
                raw = await self.backend.encode_texts(tokens.rows(runnable).tensors(), self._timeout())
                RUNTIME_SECONDS.labels("text").observe(time.perf_counter() - start)
                finished = _finish(
                    [ids[valid[k]] for k in runnable],
                    raw,
                    self._vector_of["text"],
                    self.package.primary_vector,
                )
                for k, r in zip(runnable, finished, strict=True):
                    i = valid[k]
                    results[i] = ItemResult(r.id, r.embedding, r.error, tokens.truncated[k], r.vectors)
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
