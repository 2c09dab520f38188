"""The Triton runtime: the towers served by Triton Inference Server, called with tritonclient.grpc.aio.

- One shared client (one HTTP/2 channel) for every call.
- A batch is sent as concurrent requests of at most `request_batch` rows: Triton's dynamic batcher then
  merges them with other callers' requests into full batches, and its instance never idles between the
  requests of one caller.
- The caller's remaining deadline goes to Triton as the gRPC deadline (client_timeout): when it passes,
  Triton cancels the request, drops it from its queue and our model.py skips it if it was already
  batched, so Triton does not compute results nobody waits for. It is also sent as the request's
  timeout, which a model configured with a queue policy enforces (ours are not: see config.pbtxt).
- The model version found by describe() is pinned in every request, so the ModelRef in our responses is
  the version that actually produced the vectors.
- Failures map to domain errors: connection problems and unloaded models to Unavailable, timeouts to
  DeadlineExceeded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import structlog
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from services.common.balancing import balancing_options, grpc_target
from services.common.errors import DeadlineExceeded, DomainError, FailedPrecondition, Unavailable
from services.common.tls import CertFiles, client_credentials
from services.encoder.backends import model_repository
from services.encoder.backends.base import TensorSpec, TowerSpec
from services.encoder.package import ModelPackage, Tower

log = structlog.get_logger("encoder.triton")

_TRITON_DTYPES = {"uint8": "UINT8", "int64": "INT64", "int32": "INT32", "float32": "FP32", "float16": "FP16"}
# Reconnects after a Triton restart come from balancing_options (every backend channel has them).
_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
]
_DESCRIBE_TIMEOUT_S = 10.0


class TritonBackend:
    """EncoderBackend calling Triton over gRPC."""

    runtime = "triton"

    def __init__(
        self, url: str, package: ModelPackage, request_batch: int, tls_files: CertFiles | None = None
    ) -> None:
        self._url = url
        self._tls_files = tls_files  # mutual TLS to Triton (settings.triton_tls); None: plaintext
        self._towers = (package.tower("image"), package.tower("text"))
        self._names = tuple(t.triton_model for t in self._towers)
        self._request_batch = request_batch
        self._client: grpcclient.InferenceServerClient | None = None
        self._specs: tuple[TowerSpec, TowerSpec] | None = None
        self._describing: asyncio.Lock | None = None

    def _get_client(self) -> grpcclient.InferenceServerClient:
        if self._client is None:  # created lazily, inside the running event loop
            # Several Triton instances: round robin over the ready ones (services/common/balancing.py).
            self._client = grpcclient.InferenceServerClient(
                grpc_target(self._url),
                creds=None if self._tls_files is None else client_credentials(self._tls_files),
                channel_args=[*_CHANNEL_ARGS, *balancing_options(self._url)],
            )
        return self._client

    def _error(self, exc: InferenceServerException, what: str) -> DomainError | RuntimeError:
        status, message = str(exc.status() or ""), str(exc.message() or "")
        lowered = message.lower()
        # Triton's and gRPC's own words (status prefixes, socket errors) go to the log; callers get
        # what happened and what to do.
        log.warning("triton call failed", what=what, status=status, error=message)
        if "DEADLINE_EXCEEDED" in status or "timeout expired" in lowered:
            return DeadlineExceeded(f"Triton at {self._url} did not finish {what} within the deadline")
        if "UNAVAILABLE" in status or "CANCELLED" in status:
            return Unavailable(f"Triton at {self._url} is unavailable for {what}; retry later")
        if "NOT_FOUND" in status or "unknown model" in lowered or "is not ready" in lowered:
            self._specs = None  # re-discover what is served once it is back
            return Unavailable(f"Triton at {self._url} does not serve what {what} needs; retry later")
        return RuntimeError(f"Triton at {self._url} failed {what}: {status} {message}")  # logged only

    async def _describe_tower(self, tower: Tower) -> TowerSpec:
        name = tower.triton_model
        if not name:
            raise FailedPrecondition(
                f"the model package names no Triton model for its {tower.kind} tower (towers.{tower.kind}."
                "triton_model); serve it with backend=onnxruntime or add the Triton model"
            )
        client = self._get_client()
        try:
            metadata = await client.get_model_metadata(name, client_timeout=_DESCRIBE_TIMEOUT_S)
            versions = sorted((int(v) for v in metadata.versions if v.isdigit()), reverse=True)
            if not versions:
                raise Unavailable(f"Triton at {self._url} has no ready version of model '{name}'")
            version = str(versions[0])
            response = await client.get_model_config(name, version, client_timeout=_DESCRIBE_TIMEOUT_S)
        except InferenceServerException as exc:
            raise self._error(exc, f"describing model '{name}'") from None
        config: model_config_pb2.ModelConfig = response.config
        if config.max_batch_size < 1:
            raise FailedPrecondition(f"model '{name}' in Triton must support batching (max_batch_size >= 1)")
        inputs, outputs = model_repository.tensors(config)
        served_in = {t.name for t in inputs}
        served_out = {t.name for t in outputs}
        wanted_in = {t.name for t in tower.inputs}
        wanted_out = {t.name for t in tower.outputs}
        if served_in != wanted_in or not wanted_out <= served_out:
            raise FailedPrecondition(
                f"Triton model '{name}' takes {sorted(served_in)} and gives {sorted(served_out)}; the model "
                f"package's {tower.kind} tower needs {sorted(wanted_in)} -> {sorted(wanted_out)}"
            )
        spec = TowerSpec(
            model=name,
            version=version,
            inputs=tuple(sorted(inputs, key=lambda t: [i.name for i in tower.inputs].index(t.name))),
            outputs=tuple(t for t in outputs if t.name in wanted_out),
            max_batch_size=config.max_batch_size,
        )
        if any(not t.shape or t.shape[-1] <= 0 for t in spec.outputs):
            # A python-backend config leaves D to the graph: ask the model once.
            feed = {
                t.name: np.zeros((1, *(d if d > 0 else 1 for d in t.shape)), t.dtype) for t in spec.inputs
            }
            probe = await self._infer(spec, feed, _DESCRIBE_TIMEOUT_S)
            widths = {
                t.name: TensorSpec(t.name, t.dtype, (int(probe[t.name].shape[-1]),)) for t in spec.outputs
            }
            spec = replace(spec, outputs=tuple(widths[t.name] for t in spec.outputs))
        return spec

    async def describe(self) -> tuple[TowerSpec, TowerSpec]:
        if self._specs is None:
            if self._describing is None:
                self._describing = asyncio.Lock()
            async with self._describing:
                if self._specs is None:
                    image, text = await asyncio.gather(*(self._describe_tower(t) for t in self._towers))
                    self._specs = (image, text)
        return self._specs

    async def _infer(
        self, spec: TowerSpec, feed: Mapping[str, np.ndarray], timeout_s: float
    ) -> dict[str, np.ndarray]:
        tensors = []
        for t in spec.inputs:
            rows = feed[t.name]
            tensor = grpcclient.InferInput(t.name, list(rows.shape), _TRITON_DTYPES[t.dtype])
            tensor.set_data_from_numpy(np.ascontiguousarray(rows, dtype=t.dtype))
            tensors.append(tensor)
        n = len(next(iter(feed.values())))
        try:
            result = await self._get_client().infer(
                spec.model,
                tensors,
                model_version=spec.version,
                outputs=[grpcclient.InferRequestedOutput(t.name) for t in spec.outputs],
                client_timeout=timeout_s,
                timeout=max(1, int(timeout_s * 1e6)),
            )
        except InferenceServerException as exc:
            raise self._error(exc, f"inference on '{spec.model}'") from None
        outs = {}
        for t in spec.outputs:
            out = result.as_numpy(t.name)
            if out is None or out.shape[0] != n:
                shape = None if out is None else out.shape
                raise RuntimeError(f"Triton returned {shape} for '{t.name}' of '{spec.model}' for {n} rows")
            outs[t.name] = np.asarray(out, dtype=np.float32)
        return outs

    async def _encode(
        self, index: int, feed: Mapping[str, np.ndarray], timeout_s: float
    ) -> dict[str, np.ndarray]:
        spec = (await self.describe())[index]
        step = max(1, min(self._request_batch, spec.max_batch_size))
        n = len(next(iter(feed.values())))
        if n <= step:
            return await self._infer(spec, feed, timeout_s)
        chunks = [{k: v[i : i + step] for k, v in feed.items()} for i in range(0, n, step)]
        parts = await asyncio.gather(*(self._infer(spec, chunk, timeout_s) for chunk in chunks))
        return {t.name: np.concatenate([p[t.name] for p in parts]) for t in spec.outputs}

    async def encode_images(self, pixels: np.ndarray, timeout_s: float) -> dict[str, np.ndarray]:
        return await self._encode(0, {self._towers[0].inputs[0].name: pixels}, timeout_s)

    async def encode_texts(self, inputs: Mapping[str, np.ndarray], timeout_s: float) -> dict[str, np.ndarray]:
        return await self._encode(1, inputs, timeout_s)

    async def ready(self) -> bool:
        client = self._get_client()
        try:
            if not await client.is_server_ready(client_timeout=2.0):
                return False
            specs = self._specs
            checks = (
                [(s.model, s.version) for s in specs] if specs is not None else [(n, "") for n in self._names]
            )
            states = await asyncio.gather(
                *(client.is_model_ready(m, v, client_timeout=2.0) for m, v in checks)
            )
        except InferenceServerException:
            return False
        if specs is not None and not all(states):
            self._specs = None  # the pinned version went away: describe again on the next call
        return all(states)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
