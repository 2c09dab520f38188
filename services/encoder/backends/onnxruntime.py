"""The embedded runtime: the model repository's ONNX files run in-process with ONNX Runtime.

Same files and configuration as Triton (config.pbtxt, <version>/model.onnx), so both runtimes serve the
same model and report the same contract. Like Triton's dynamic batcher, concurrent calls for one tower
are merged (services.common.batching.MicroBatcher): each run takes everything queued (up to `max_batch`
rows), runs it once on a dedicated thread and hands each caller its rows; a caller whose deadline passed
while queued never runs. One run at a time per tower keeps ONNX Runtime's intra-op threads from
oversubscribing the cores.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import structlog

from services.common.batching import MicroBatcher
from services.common.errors import FailedPrecondition
from services.encoder.backends import model_repository
from services.encoder.backends.base import TowerSpec

log = structlog.get_logger("encoder.onnxruntime")

_ORT_TYPES = {
    "tensor(uint8)": "uint8",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(float)": "float32",
}


class _Tower:
    """One ONNX session behind the suite's batcher: concurrent calls are merged into runs of up to
    `max_batch` rows, one run at a time, on a dedicated thread."""

    def __init__(self, spec: TowerSpec, session: ort.InferenceSession, max_batch: int) -> None:
        self.spec = spec
        self._session = session
        self._max_batch = max(1, min(max_batch, spec.max_batch_size or max_batch))
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{spec.model}")
        # Items are row chunks of at most max_batch rows; a run takes whatever is queued up to max_batch
        # rows (wait_s=0: Triton's dynamic batcher with no queue delay).
        self._batcher: MicroBatcher[np.ndarray, np.ndarray] = MicroBatcher(
            self._run_chunks,
            max_items=self._max_batch,
            max_size=self._max_batch,
            size_of=len,
            wait_s=0,
            max_concurrent=1,
            name=spec.model,
        )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        (out,) = self._session.run([self.spec.output_name], {self.spec.input_name: batch})
        return np.asarray(out, dtype=np.float32)

    async def encode(self, rows: np.ndarray, timeout_s: float) -> np.ndarray:
        """float32 [n, D] for `rows`; DeadlineExceeded when timeout_s passes first (a chunk still
        queued then never runs)."""
        if len(rows) <= self._max_batch:  # the common case, without a task per chunk
            return await self._batcher.submit(rows, timeout_s=timeout_s)
        chunks = [rows[i : i + self._max_batch] for i in range(0, len(rows), self._max_batch)]
        submissions = [asyncio.ensure_future(self._batcher.submit(c, timeout_s=timeout_s)) for c in chunks]
        try:
            parts = await asyncio.gather(*submissions)
        finally:
            for submission in submissions:  # when one chunk failed, the others are not run for nothing
                submission.cancel()
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    async def _run_chunks(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        """The batch function: one session run over the concatenated chunks, split back per chunk."""
        batch = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
        try:
            out = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, batch)
        except Exception as exc:
            raise RuntimeError(
                f"ONNX Runtime failed on {self.spec.model}: {type(exc).__name__}: {exc}"
            ) from exc
        bounds = np.cumsum([len(c) for c in chunks])[:-1]
        return np.split(out, bounds)

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


def _load_tower(
    repository: Path, model: str, intra_op_threads: int, max_batch: int, allow_spinning: bool
) -> _Tower:
    model_dir = repository / model
    config = model_repository.read_config(model_dir / "config.pbtxt")
    params = model_repository.parameters(config)
    version, onnx_path = model_repository.latest_version(model_dir, params.get("onnx_file", "model.onnx"))
    input_name, dtype, input_shape, output_name, _ = model_repository.single_io(config)

    try:
        session = ort.InferenceSession(
            str(onnx_path),
            session_options(intra_op_threads, allow_spinning),
            providers=["CPUExecutionProvider"],
        )
    except Exception as exc:  # ONNX Runtime's own message ("[ONNXRuntimeError] : 7 : ...") is logged
        log.error("onnx model not loadable", path=str(onnx_path), error=repr(exc))
        raise FailedPrecondition(
            f"ONNX Runtime cannot load {onnx_path}: it is not a valid ONNX model for this runtime "
            "(details in the encoder log)"
        ) from None

    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    if input_name not in inputs or output_name not in outputs:
        raise FailedPrecondition(
            f"{onnx_path} has inputs {sorted(inputs)} and outputs {sorted(outputs)}; "
            f"config.pbtxt expects input '{input_name}' and output '{output_name}'"
        )
    if _ORT_TYPES.get(inputs[input_name].type) != dtype:
        raise FailedPrecondition(
            f"{onnx_path}: input '{input_name}' is {inputs[input_name].type}, config.pbtxt says {dtype}"
        )
    graph_dims = tuple(inputs[input_name].shape[1:])
    if len(graph_dims) != len(input_shape) or any(
        isinstance(g, int) and g != c for g, c in zip(graph_dims, input_shape, strict=False)
    ):
        raise FailedPrecondition(
            f"{onnx_path}: input '{input_name}' is {graph_dims}, config.pbtxt says {input_shape}"
        )

    spec = TowerSpec(
        model=model,
        version=version,
        input_name=input_name,
        input_dtype=dtype,
        input_shape=input_shape,
        output_name=output_name,
        max_batch_size=config.max_batch_size,
        dimension=0,
        parameters=params,
    )
    tower = _Tower(spec, session, max_batch)
    # The embedding width comes from the graph (a probe run when the graph leaves it symbolic).
    width = outputs[output_name].shape[-1]
    if not isinstance(width, int):
        width = tower._run(np.zeros((1, *input_shape), dtype=dtype)).shape[-1]
    tower.spec = TowerSpec(**{**spec.__dict__, "dimension": int(width)})
    return tower


class OnnxRuntimeBackend:
    """EncoderBackend running the towers in this process."""

    runtime = "onnxruntime"

    def __init__(
        self,
        repository: Path,
        image_model: str,
        text_model: str,
        *,
        intra_op_threads: int,
        max_batch: int,
        allow_spinning: bool,
    ) -> None:
        self._repository = repository
        self._names = (image_model, text_model)
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
        image = _load_tower(self._repository, self._names[0], self._threads, self._max_batch, self._spinning)
        text = _load_tower(self._repository, self._names[1], self._threads, self._max_batch, self._spinning)
        return image, text

    async def describe(self) -> tuple[TowerSpec, TowerSpec]:
        image, text = await self._get()
        return image.spec, text.spec

    async def encode_images(self, pixels: np.ndarray, timeout_s: float) -> np.ndarray:
        image, _ = await self._get()
        return await image.encode(pixels, timeout_s)

    async def encode_texts(self, input_ids: np.ndarray, timeout_s: float) -> np.ndarray:
        _, text = await self._get()
        return await text.encode(input_ids, timeout_s)

    async def ready(self) -> bool:
        return self._towers is not None

    async def close(self) -> None:
        if self._towers is not None:
            for tower in self._towers:
                await tower.close()
