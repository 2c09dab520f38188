"""Triton python-backend model: runs this version directory's ONNX file with ONNX Runtime on CPU.

One generic file for every model of this repository: Triton wants a model.py in each version
directory, so clip_text/1/model.py and clip_image_int8/1/model.py are symbolic links to this one
(tests/encoder/test_triton_configs.py checks it). The model's config.pbtxt says what to run:

- parameters `onnx_file` (default "model.onnx"), `intra_op_threads`, `inter_op_threads`, `allow_spinning`;
- input / output names and types, checked against the ONNX file when the model loads, so a config that
  does not match the graph fails loudly at startup instead of at the first request.

`execute` receives every request the dynamic batcher grouped together: their inputs are concatenated
along the batch axis, run once, and the output is split back into one response per request. Requests
already cancelled (the caller's gRPC deadline passed while they waited) are answered with CANCELLED
and not computed.

Runs in Triton's own venv (numpy<2: the 2.51 python backend returns empty tensors with numpy 2).
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

_ONNX_TYPES = {
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(int64)": "TYPE_INT64",
    "tensor(int32)": "TYPE_INT32",
    "tensor(float)": "TYPE_FP32",
    "tensor(float16)": "TYPE_FP16",
}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        path = os.path.join(
            args["model_repository"], args["model_version"], params.get("onnx_file", "model.onnx")
        )
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(f"{config['name']}: ONNX file {path} does not exist")

        options = ort.SessionOptions()
        # One instance per model on a small CPU host: its threads are the model's whole share of cores.
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0") or 0)
        options.inter_op_num_threads = int(params.get("inter_op_threads", "1") or 1)
        # Idle worker threads spin-wait for work by default; on a small shared host that steals the cores
        # from the other model, the encoder's decoding and Triton itself ("allow_spinning": "0").
        options.add_session_config_entry("session.intra_op.allow_spinning", params.get("allow_spinning", "1"))
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

        graph_inputs = {i.name: i for i in self.session.get_inputs()}
        graph_outputs = {o.name: o for o in self.session.get_outputs()}
        self.inputs = []
        for tensor in config["input"]:
            name = tensor["name"]
            if name not in graph_inputs:
                raise pb_utils.TritonModelException(
                    f"{config['name']}: config input '{name}' is not among the inputs of {path}: "
                    f"{sorted(graph_inputs)}"
                )
            _check_type(config["name"], name, graph_inputs[name].type, tensor["data_type"])
            self.inputs.append((name, pb_utils.triton_string_to_numpy(tensor["data_type"])))
        self.outputs = []
        for tensor in config["output"]:
            name = tensor["name"]
            if name not in graph_outputs:
                raise pb_utils.TritonModelException(
                    f"{config['name']}: config output '{name}' is not among the outputs of {path}: "
                    f"{sorted(graph_outputs)}"
                )
            _check_type(config["name"], name, graph_outputs[name].type, tensor["data_type"])
            self.outputs.append((name, pb_utils.triton_string_to_numpy(tensor["data_type"])))
        self.output_names = [name for name, _ in self.outputs]

    def execute(self, requests):
        responses = [None] * len(requests)
        live = []
        for index, request in enumerate(requests):
            # A request whose caller gave up (gRPC deadline passed, or cancelled) while it waited in the
            # queue is answered without computing it: the deadline reaches the model, not just the queue.
            if request.is_cancelled():
                responses[index] = pb_utils.InferenceResponse(
                    output_tensors=[],
                    error=pb_utils.TritonError("cancelled before it ran", pb_utils.TritonError.CANCELLED),
                )
            else:
                live.append(index)
        if not live:
            return responses
        try:
            per_request = []
            for index in live:
                arrays = {}
                for name, dtype in self.inputs:
                    tensor = pb_utils.get_input_tensor_by_name(requests[index], name)
                    arrays[name] = tensor.as_numpy().astype(dtype, copy=False)
                per_request.append(arrays)
            sizes = [arrays[self.inputs[0][0]].shape[0] for arrays in per_request]
            if len(per_request) == 1:
                feed = per_request[0]
            else:
                feed = {name: np.concatenate([a[name] for a in per_request]) for name, _ in self.inputs}
            results = self.session.run(self.output_names, feed)
        except Exception as exc:  # one failed batch answers every request in it with the reason
            error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
            for index in live:
                responses[index] = pb_utils.InferenceResponse(output_tensors=[], error=error)
            return responses

        start = 0
        for index, size in zip(live, sizes, strict=True):
            tensors = [
                pb_utils.Tensor(
                    name, np.ascontiguousarray(result[start : start + size].astype(dtype, copy=False))
                )
                for (name, dtype), result in zip(self.outputs, results, strict=True)
            ]
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
            start += size
        return responses

    def finalize(self):
        self.session = None


def _check_type(model, name, onnx_type, config_type):
    expected = _ONNX_TYPES.get(onnx_type)
    if expected != config_type:
        raise pb_utils.TritonModelException(
            f"{model}: tensor '{name}' is {onnx_type} in the ONNX graph but {config_type} in config.pbtxt"
        )
