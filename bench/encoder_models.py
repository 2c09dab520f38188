"""Random-weight CLIP towers as ONNX, built with onnx.helper and numpy (no torch).

They follow the model repository's tensor contract exactly (see triton_models/README.md):

- image tower: `pixels` UINT8 [batch, 224, 224, 3] (NHWC RGB) -> `embedding` FP32 [batch, D];
  the graph scales to [0, 1], normalises with CLIP's mean/std, runs a ViT (patch conv, class token,
  positional embedding, pre-LN transformer with QuickGELU), projects the class token and L2-normalises;
- text tower: `input_ids` INT64 [batch, 77] -> `embedding` FP32 [batch, D]; token + positional
  embedding, causal transformer, final LayerNorm, the features at the end-of-text token (the largest id,
  found with ArgMax as CLIP does), projection, L2 normalisation.

Uses: `vit-b-32` is the full-size ViT-B/32 architecture (12 layers, width 768, patch 32; text 12 layers,
width 512; D = 512; 8.8 GFLOP per image) for the benchmark and the int8 measurements; `tiny` is a 2-layer
stand-in for tests while no trained model is in triton_models/.

    python -m bench.encoder_models vit-b-32 --out ~/.cache/imagesearch/bench/vit-b-32
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VOCAB_SIZE = 49408
CONTEXT_LENGTH = 77


@dataclass(frozen=True)
class TowerSpec:
    width: int
    layers: int
    heads: int


@dataclass(frozen=True)
class ClipSpec:
    name: str
    image: TowerSpec
    text: TowerSpec
    embed_dim: int
    patch: int = 32
    image_size: int = 224


SPECS = {
    "vit-b-32": ClipSpec("vit-b-32", TowerSpec(768, 12, 12), TowerSpec(512, 12, 8), embed_dim=512),
    "tiny": ClipSpec("tiny", TowerSpec(64, 2, 2), TowerSpec(64, 2, 2), embed_dim=256),
}


class _Graph:
    """A small builder: named initializers from numpy, nodes with fresh output names."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def _name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, value: np.ndarray, prefix: str = "c") -> str:
        name = self._name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, shape: tuple[int, ...], std: float, prefix: str = "w") -> str:
        return self.const(self.rng.normal(0.0, std, shape).astype(np.float32), prefix)

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs: Any) -> str | list[str]:
        outs = [self._name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, **attrs))
        return outs[0] if n_out == 1 else outs

    def o(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        out = self.op(op_type, inputs, **attrs)
        assert isinstance(out, str)
        return out

    def layer_norm(self, x: str, width: int) -> str:
        scale = self.const(np.ones(width, np.float32), "ln_g")
        bias = self.const(np.zeros(width, np.float32), "ln_b")
        return self.o("LayerNormalization", [x, scale, bias], axis=-1, epsilon=1e-5)

    def linear(self, x: str, d_in: int, d_out: int, bias: bool = True) -> str:
        y = self.o("MatMul", [x, self.weight((d_in, d_out), d_in**-0.5)])
        if bias:
            y = self.o("Add", [y, self.const(np.zeros(d_out, np.float32), "b")])
        return y

    def block(self, x: str, spec: TowerSpec, mask: str | None) -> str:
        """Pre-LN residual attention block (x: [B, T, W])."""
        w, h = spec.width, spec.heads
        dh = w // h
        y = self.layer_norm(x, w)
        qkv = self.linear(y, w, 3 * w)
        parts = self.op("Split", [qkv, self.const(np.array([w, w, w], np.int64))], n_out=3, axis=-1)
        assert isinstance(parts, list)
        q, k, v = parts
        heads_shape = self.const(np.array([0, 0, h, dh], np.int64))

        def split_heads(t: str) -> str:
            return self.o("Transpose", [self.o("Reshape", [t, heads_shape])], perm=[0, 2, 1, 3])

        qh, kh, vh = split_heads(q), split_heads(k), split_heads(v)
        scores = self.o("MatMul", [qh, self.o("Transpose", [kh], perm=[0, 1, 3, 2])])
        scores = self.o("Mul", [scores, self.const(np.array(dh**-0.5, np.float32))])
        if mask is not None:
            scores = self.o("Add", [scores, mask])
        attn = self.o("MatMul", [self.o("Softmax", [scores], axis=-1), vh])
        attn = self.o("Transpose", [attn], perm=[0, 2, 1, 3])
        attn = self.o("Reshape", [attn, self.const(np.array([0, 0, w], np.int64))])
        x = self.o("Add", [x, self.linear(attn, w, w)])
        y = self.layer_norm(x, w)
        y = self.linear(y, w, 4 * w)
        y = self.o(
            "Mul", [y, self.o("Sigmoid", [self.o("Mul", [y, self.const(np.array(1.702, np.float32))])])]
        )
        return self.o("Add", [x, self.linear(y, 4 * w, w)])

    def l2_normalize(self, x: str) -> str:
        norm = self.o("ReduceL2", [x], axes=[1], keepdims=1)
        return self.o("Div", [x, self.o("Max", [norm, self.const(np.array(1e-12, np.float32))])])


def image_tower(spec: ClipSpec, seed: int) -> onnx.ModelProto:
    g = _Graph(seed)
    w, p, s = spec.image.width, spec.patch, spec.image_size
    grid = s // p
    x = g.o("Cast", ["pixels"], to=TensorProto.FLOAT)
    # (pixel / 255 - mean) / std folded into one multiply-add per channel.
    scale = np.array([1.0 / (255.0 * sd) for sd in CLIP_STD], np.float32)
    shift = np.array([-m / sd for m, sd in zip(CLIP_MEAN, CLIP_STD, strict=True)], np.float32)
    x = g.o("Add", [g.o("Mul", [x, g.const(scale)]), g.const(shift)])
    x = g.o("Transpose", [x], perm=[0, 3, 1, 2])
    x = g.o("Conv", [x, g.weight((w, 3, p, p), (3 * p * p) ** -0.5)], strides=[p, p], kernel_shape=[p, p])
    x = g.o("Reshape", [x, g.const(np.array([0, w, grid * grid], np.int64))])
    x = g.o("Transpose", [x], perm=[0, 2, 1])
    batch = g.o("Gather", [g.o("Shape", [x]), g.const(np.array([0], np.int64))], axis=0)
    cls_shape = g.o("Concat", [batch, g.const(np.array([1, w], np.int64))], axis=0)
    cls = g.o("Expand", [g.weight((1, 1, w), w**-0.5), cls_shape])
    x = g.o("Concat", [cls, x], axis=1)
    x = g.o("Add", [x, g.weight((1, grid * grid + 1, w), 0.01)])
    x = g.layer_norm(x, w)
    for _ in range(spec.image.layers):
        x = g.block(x, spec.image, mask=None)
    x = g.o("Gather", [x, g.const(np.array(0, np.int64))], axis=1)
    x = g.layer_norm(x, w)
    x = g.l2_normalize(g.linear(x, w, spec.embed_dim, bias=False))
    g.nodes.append(helper.make_node("Identity", [x], ["embedding"]))
    graph = helper.make_graph(
        g.nodes,
        f"{spec.name}-image",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", s, s, 3])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", spec.embed_dim])],
        g.inits,
    )
    return _model(graph)


def text_tower(spec: ClipSpec, seed: int) -> onnx.ModelProto:
    g = _Graph(seed + 1)
    w, ctx = spec.text.width, CONTEXT_LENGTH
    x = g.o("Gather", [g.weight((VOCAB_SIZE, w), 0.02), "input_ids"], axis=0)
    x = g.o("Add", [x, g.weight((ctx, w), 0.01)])
    mask = g.const(np.triu(np.full((ctx, ctx), -1e9, np.float32), k=1))
    for _ in range(spec.text.layers):
        x = g.block(x, spec.text, mask=mask)
    x = g.layer_norm(x, w)
    # Features at the end-of-text token: it has the largest id in every row.
    eot = g.o("ArgMax", ["input_ids"], axis=1, keepdims=1)
    index_shape = g.o("Concat", [g.o("Shape", [eot]), g.const(np.array([w], np.int64))], axis=0)
    index = g.o("Expand", [g.o("Unsqueeze", [eot, g.const(np.array([2], np.int64))]), index_shape])
    x = g.o("GatherElements", [x, index], axis=1)
    x = g.o("Squeeze", [x, g.const(np.array([1], np.int64))])
    x = g.l2_normalize(g.linear(x, w, spec.embed_dim, bias=False))
    g.nodes.append(helper.make_node("Identity", [x], ["embedding"]))
    graph = helper.make_graph(
        g.nodes,
        f"{spec.name}-text",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", ctx])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", spec.embed_dim])],
        g.inits,
    )
    return _model(graph)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="imagesearch-bench"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build(spec_name: str, out_dir: str | os.PathLike[str], seed: int = 0) -> tuple[Path, Path]:
    """Write image.onnx and text.onnx for a spec into out_dir (skipped when both exist)."""
    spec = SPECS[spec_name]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image, text = out / "image.onnx", out / "text.onnx"
    for path, make in ((image, image_tower), (text, text_tower)):
        if not path.is_file():
            tmp = path.with_suffix(".tmp")
            onnx.save(make(spec, seed), str(tmp))
            tmp.replace(path)
    return image, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("spec", choices=sorted(SPECS))
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for path in build(args.spec, args.out, args.seed):
        print(path, f"{path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
