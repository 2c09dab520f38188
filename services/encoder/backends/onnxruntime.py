"""The embedded runtime: a model package's ONNX files run in-process with ONNX Runtime.

The package (package.json) names each tower's file and tensors; the graph is checked against it when it
loads. Like Triton's dynamic batcher, concurrent calls for one tower are merged
(services.common.batching.MicroBatcher): each run takes everything queued (up to `max_batch` rows), runs it
once on a dedicated thread and hands each caller its rows; a caller whose deadline passed while queued
never runs. One run at a time per tower keeps ONNX Runtime's intra-op threads from oversubscribing the
cores. Token inputs padded to different lengths by different callers are padded with zeros to the longest
before they are merged (id 0 is the padding id and mask 0 hides it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import structlog

from services.common.batching import MicroBatcher
from services.common.errors import FailedPrecondition
from services.encoder.backends.base import TensorSpec, TowerSpec
from services.encoder.package import DTYPES, TOWERS, ModelPackage, Tower

log = structlog.get_logger("encoder.onnxruntime")

_ORT_TYPES = {
    "tensor(uint8)": "uint8",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(float)": "float32",
}

Feed = dict[str, np.ndarray]


def merge_feeds(feeds: list[Feed]) -> Feed:
    """Concatenate feeds along the batch axis, zero-padding trailing axes that differ (token inputs)."""
    if len(feeds) == 1:
        return feeds[0]
    merged = {}
    for name in feeds[0]:
        parts = [f[name] for f in feeds]
        widest = tuple(max(p.shape[k] for p in parts) for k in range(1, parts[0].ndim))
        padded = [
            p
            if p.shape[1:] == widest
            else np.pad(p, [(0, 0), *((0, w - s) for s, w in zip(p.shape[1:], widest, strict=True))])
            for p in parts
        ]
        merged[name] = np.concatenate(padded)
    return merged


def _rows(feed: Feed) -> int:
    return len(next(iter(feed.values())))


class _Tower:
    """One ONNX session behind the suite's batcher: concurrent calls are merged into runs of up to
    `max_batch` rows, one run at a time, on a dedicated thread."""

    def __init__(self, spec: TowerSpec, session: ort.InferenceSession, max_batch: int) -> None:
        self.spec = spec
        self._session = session
        self._output_names = [o.name for o in spec.outputs]
        self._max_batch = max(1, max_batch)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{spec.model}")
        # Items are feeds of at most max_batch rows; a run takes whatever is queued up to max_batch rows
        # (wait_s=0: Triton's dynamic batcher with no queue delay).
        self._batcher: MicroBatcher[Feed, Feed] = MicroBatcher(
            self._run_chunks,
            max_items=self._max_batch,
            max_size=self._max_batch,
            size_of=_rows,
            wait_s=0,
            max_concurrent=1,
            name=spec.model,
        )

    def _run(self, feed: Feed) -> Feed:
        outs = self._session.run(self._output_names, feed)
        return {n: np.asarray(o, dtype=np.float32) for n, o in zip(self._output_names, outs, strict=True)}

    async def encode(self, feed: Feed, timeout_s: float) -> Feed:
        """float32 [n, D] per output for `feed`; DeadlineExceeded when timeout_s passes first (a chunk
        still queued then never runs)."""
        n = _rows(feed)
        if n <= self._max_batch:  # the common case, without a task per chunk
            return await self._batcher.submit(feed, timeout_s=timeout_s)
        chunks = [
            {k: v[i : i + self._max_batch] for k, v in feed.items()} for i in range(0, n, self._max_batch)
        ]
        submissions = [asyncio.ensure_future(self._batcher.submit(c, timeout_s=timeout_s)) for c in chunks]
        try:
            parts = await asyncio.gather(*submissions)
        finally:
            for submission in submissions:  # when one chunk failed, the others are not run for nothing
                submission.cancel()
        return {name: np.concatenate([p[name] for p in parts]) for name in self._output_names}

    async def _run_chunks(self, chunks: list[Feed]) -> list[Feed]:
        """The batch function: one session run over the merged chunks, split back per chunk."""
        batch = merge_feeds(chunks)
        try:
            out = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, batch)
        except Exception as exc:
            raise RuntimeError(
                f"ONNX Runtime failed on {self.spec.model}: {type(exc).__name__}: {exc}"
            ) from exc
        bounds = np.cumsum([_rows(c) for c in chunks])[:-1]
        split = {name: np.split(array, bounds) for name, array in out.items()}
        return [{name: split[name][i] for name in out} for i in range(len(chunks))]

    async def close(self) -> None:
        await self._batcher.close()
        self._executor.shutdown(wait=False, cancel_futures=True)


def session_options(intra_op_threads: int, allow_spinning: bool) -> ort.SessionOptions:
    """The options every tower runs with (the benchmarks use them too, so they measure what is served)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    return options


def _shape_matches(graph: list[object], declared: list[int]) -> bool:
    return len(graph) == len(declared) and all(
        not isinstance(g, int) or d == -1 or g == d for g, d in zip(graph, declared, strict=True)
    )


def load_tower(
    tower: Tower, version: str, intra_op_threads: int, max_batch: int, allow_spinning: bool
) -> _Tower:
    path = tower.file
    if not path.is_file():
        raise FailedPrecondition(
            f"the {tower.kind} tower's ONNX file {path} does not exist (run `make models` to assemble "
            "the package's files)"
        )
    try:
        session = ort.InferenceSession(
            str(path), session_options(intra_op_threads, allow_spinning), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ONNX Runtime's own message ("[ONNXRuntimeError] : 7 : ...") is logged
        log.error("onnx model not loadable", path=str(path), error=repr(exc))
        raise FailedPrecondition(
            f"ONNX Runtime cannot load {path}: it is not a valid ONNX model for this runtime "
            "(details in the encoder log)"
        ) from None

    graph_inputs = {i.name: i for i in session.get_inputs()}
    graph_outputs = {o.name: o for o in session.get_outputs()}
    inputs = []
    for declared in tower.inputs:
        graph = graph_inputs.get(declared.name)
        if graph is None:
            raise FailedPrecondition(
                f"{path} has inputs {sorted(graph_inputs)}; package.json expects input '{declared.name}'"
            )
        dtype = DTYPES[declared.dtype]
        if _ORT_TYPES.get(graph.type) != dtype or not _shape_matches(graph.shape, declared.shape):
            raise FailedPrecondition(
                f"{path}: input '{declared.name}' is {graph.type} {graph.shape}, package.json says "
                f"{declared.dtype} {declared.shape}"
            )
        inputs.append(TensorSpec(declared.name, dtype, tuple(declared.shape[1:])))
    for declared in tower.outputs:
        if declared.name not in graph_outputs:
            raise FailedPrecondition(
                f"{path} has outputs {sorted(graph_outputs)}; package.json expects output '{declared.name}'"
            )
    probe = None
    outputs = []
    for declared in tower.outputs:
        width = graph_outputs[declared.name].shape[-1]
        if not isinstance(width, int):  # symbolic in the graph: one probe run says
            if probe is None:
                feed = {t.name: np.zeros((1, *(d if d > 0 else 1 for d in t.shape)), t.dtype) for t in inputs}
                names = [o.name for o in tower.outputs]
                probe = dict(zip(names, session.run(names, feed), strict=True))
            width = probe[declared.name].shape[-1]
        outputs.append(TensorSpec(declared.name, "float32", (int(width),)))
    spec = TowerSpec(
        model=tower.triton_model or path.stem,
        version=version,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        max_batch_size=max_batch,
    )
    return _Tower(spec, session, max_batch)


class OnnxRuntimeBackend:
    """EncoderBackend running a package's towers in this process."""

    runtime = "onnxruntime"

    def __init__(
        self, package: ModelPackage, *, intra_op_threads: int, max_batch: int, allow_spinning: bool
    ) -> None:
        self._package = package
        self._threads = intra_op_threads
        self._max_batch = max_batch
        self._spinning = allow_spinning
        self._towers: tuple[_Tower, _Tower] | None = None
        self._loading: asyncio.Task[tuple[_Tower, _Tower]] | None = None

    async def start(self) -> None:
        """Load both sessions (off the event loop); raises FailedPrecondition when a file is missing."""
        await self._get()

    async def _get(self) -> tuple[_Tower, _Tower]:
        if self._towers is None:
            if self._loading is None:
                self._loading = asyncio.create_task(asyncio.to_thread(self._load))
            try:
                self._towers = await asyncio.shield(self._loading)
            except BaseException:
                if self._loading.done():
                    self._loading = None
                raise
        return self._towers

    def _load(self) -> tuple[_Tower, _Tower]:
        image, text = (
            load_tower(
                self._package.tower(kind),
                self._package.version,
                self._threads,
                self._max_batch,
                self._spinning,
            )
            for kind in TOWERS
        )
        return image, text

    async def describe(self) -> tuple[TowerSpec, TowerSpec]:
        image, text = await self._get()
        return image.spec, text.spec

    async def encode_images(self, pixels: np.ndarray, timeout_s: float) -> dict[str, np.ndarray]:
        image, _ = await self._get()
        return await image.encode({image.spec.inputs[0].name: pixels}, timeout_s)

    async def encode_texts(self, inputs: Mapping[str, np.ndarray], timeout_s: float) -> dict[str, np.ndarray]:
        _, text = await self._get()
        return await text.encode({t.name: inputs[t.name] for t in text.spec.inputs}, timeout_s)

    async def ready(self) -> bool:
        return self._towers is not None

    async def close(self) -> None:
        if self._towers is not None:
            for tower in self._towers:
                await tower.close()
