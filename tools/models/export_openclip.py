#!/usr/bin/env python3
"""Export real CLIP weights (OpenAI / OpenCLIP checkpoints, via open_clip) to the project's two ONNX
tensor contracts, into a Triton model repository:

    <out>/clip_image/1/model.onnx   pixels    UINT8 [batch,224,224,3] -> embedding FLOAT32 [batch,D]
    <out>/clip_text/1/model.onnx    input_ids INT64 [batch,77]       -> embedding FLOAT32 [batch,D]

The image graph casts to float, divides by 255, applies the checkpoint's mean/std (CLIP's for the
OpenAI weights), transposes NHWC->NCHW, runs the tower and L2-normalises; the caller does CLIP's
resize (shortest side 224, bicubic) + center crop, as for the demo model. The text graph pools at
argmax(input_ids) like CLIP and L2-normalises; by default it only computes the first
max(argmax(ids))+1 positions of the batch, which with CLIP's causal mask is exactly the 77-token
result at a fraction of the cost (use --no-trim for the plain fixed-77 graph).

Needs the optional training extra: torch, open-clip-torch, onnx, onnxruntime (tools/models/README.md).
No weights are downloaded here unless --pretrained names an open_clip tag whose file is cached;
bring a local checkpoint path for real weights:

    python -m tools.models.export_openclip --model ViT-B-32 \
        --pretrained /path/to/ViT-B-32.pt --out triton_models
    python -m tools.models.export_openclip --model ViT-B-32 --pretrained none \
        --out ~/.cache/imagesearch/models/vit-b-32-random          # random init, for benchmarks/tests

Checkpoint metadata (model, pretrained, D, image size, mean/std, interpolation, resize mode, trim) is
written into each ONNX file's metadata_props.

It also writes the model package the encoder serves (`package_manifest`): <package-dir>/package.json
(default models/openclip-<model>/package), one vector "semantic" of width D from both towers, CLIP BPE,
CLIP's preprocessing; its towers name the Triton models (no file of their own), so both runtimes serve
the files written under --out. Serve it with IMAGESEARCH_ENCODER_MODEL_PACKAGE=openclip-<model> (or the
directory) and IMAGESEARCH_ENCODER_MODEL_REPOSITORY=<out>.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from tools.models.onnx_export import OPSET, export_tower

PRODUCER = "imagesearch tools/models/export_openclip.py"
REPO = Path(__file__).resolve().parents[2]
CONTEXT = 77
CONTRACT_SIZE = 224


def package_manifest(
    *,
    name: str,
    dim: int,
    image_model: str,
    text_model: str,
    mean: list[float],
    std: list[float],
    metadata: dict[str, object],
) -> dict[str, object]:
    """The package.json (format imagesearch-model-package/1) of an exported CLIP: one shared vector."""
    return {
        "format": "imagesearch-model-package/1",
        "name": name,
        "version": "1",
        "description": f"CLIP {metadata.get('model')} ({metadata.get('pretrained')}), exported by {PRODUCER}",
        "vectors": {
            "semantic": {
                "dim": dim,
                "towers": ["image", "text"],
                "metric": "cosine",
                "normalized": True,
                "use": "text->image, image->image and image+text queries",
            }
        },
        "towers": {
            "image": {
                "triton_model": image_model,
                "inputs": [
                    {"name": "pixels", "dtype": "UINT8", "shape": [-1, CONTRACT_SIZE, CONTRACT_SIZE, 3]}
                ],
                "outputs": [{"name": "embedding", "dtype": "FP32", "shape": [-1, dim], "vector": "semantic"}],
            },
            "text": {
                "triton_model": text_model,
                "inputs": [{"name": "input_ids", "dtype": "INT64", "shape": [-1, CONTEXT]}],
                "outputs": [{"name": "embedding", "dtype": "FP32", "shape": [-1, dim], "vector": "semantic"}],
            },
        },
        "tokenizer": {"kind": "clip-bpe", "lower_case": True, "max_length": CONTEXT},
        "preprocessing": {
            "image": {
                "size": CONTRACT_SIZE,
                "resize_mode": "shortest_side_center_crop",
                "interpolation": "bicubic",
                "color_mode": "clip_reference",
                "mean": mean,
                "std": std,
            }
        },
        "fusion_defaults": {"text_query": {"vector": "semantic"}, "image_query": {"vector": "semantic"}},
        "build": {"tool": "tools/models/export_openclip.py", "metadata": metadata},
    }


def log(msg: str) -> None:
    print(f"[export_openclip {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _traceable_attention(self, q_x, k_x=None, v_x=None, attn_mask=None):
    """Drop-in for open_clip's ResidualAttentionBlock.attention (self-attention through
    nn.MultiheadAttention) written with shape-agnostic ops: the MHA module bakes the traced sequence
    length into Reshape nodes, which breaks the trimmed (variable-length) text graph."""
    import torch.nn.functional as F

    mha = self.attn
    x = q_x if mha.batch_first else q_x.transpose(0, 1)  # [B,T,W]
    h = mha.num_heads
    d = mha.embed_dim // h
    qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias)  # [B,T,3W]
    q, k, v = qkv.unflatten(-1, (3, h, d)).permute(2, 0, 3, 1, 4).unbind(0)  # [B,h,T,d]
    att = (q * (d**-0.5)) @ k.transpose(-2, -1)
    if attn_mask is not None:
        att = att + attn_mask.to(att.dtype)
    y = (att.softmax(dim=-1) @ v).transpose(1, 2).flatten(2)  # [B,T,W]
    y = F.linear(y, mha.out_proj.weight, mha.out_proj.bias)
    return y if mha.batch_first else y.transpose(0, 1)


def patch_attention(model) -> int:
    import types

    from torch import nn

    n = 0
    for mod in model.modules():
        if (
            hasattr(mod, "attention")
            and isinstance(getattr(mod, "attn", None), nn.MultiheadAttention)
            and not hasattr(mod, "ln_1_kv")
            and mod.attn._qkv_same_embed_dim
        ):
            mod.attention = types.MethodType(_traceable_attention, mod)
            n += 1
    return n


def build_wrappers(model, trim: bool = True):
    import torch
    import torch.nn.functional as F
    from open_clip.model import get_model_preprocess_cfg
    from torch import nn

    pp = get_model_preprocess_cfg(model)
    mean = tuple(float(v) for v in pp.get("mean", (0.48145466, 0.4578275, 0.40821073)))
    std = tuple(float(v) for v in pp.get("std", (0.26862954, 0.26130258, 0.27577711)))

    class ImageExport(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(mean).view(1, 1, 1, 3), persistent=False)
            self.register_buffer("inv_std", 1.0 / torch.tensor(std).view(1, 1, 1, 3), persistent=False)

        def forward(self, pixels):
            x = (pixels.to(torch.float32) * (1.0 / 255.0) - self.mean) * self.inv_std
            x = x.permute(0, 3, 1, 2)
            return F.normalize(self.model.encode_image(x), dim=-1)

    # the text tower lives on the CLIP object itself (CLIP) or in model.text (CustomTextCLIP)
    tt = model if hasattr(model, "token_embedding") else getattr(model, "text", None)
    pool = getattr(tt, "text_pool_type", getattr(tt, "pool_type", "argmax"))
    can_trim = (
        trim
        and tt is not None
        and hasattr(tt, "token_embedding")
        and pool == "argmax"
        and getattr(tt, "attn_mask", None) is not None
        and getattr(tt, "cls_emb", None) is None
    )
    if trim and not can_trim:
        log("text tower is not a causal argmax-pooled CLIP transformer: exporting without trimming")

    class TextExport(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids):
            if not can_trim:
                return F.normalize(self.model.encode_text(input_ids), dim=-1)
            length = input_ids.argmax(dim=-1).max() + 1
            pos = torch.arange(length, device=input_ids.device)
            ids = input_ids.index_select(1, pos)
            cast_dtype = tt.transformer.get_cast_dtype()
            x = tt.token_embedding(ids).to(cast_dtype)
            x = x + tt.positional_embedding.to(cast_dtype).index_select(0, pos)
            mask = tt.attn_mask.index_select(0, pos).index_select(1, pos)
            x = tt.transformer(x, attn_mask=mask)
            x = tt.ln_final(x)
            x = x[torch.arange(x.shape[0], device=x.device), ids.argmax(dim=-1)]
            proj = tt.text_projection
            if proj is not None:
                x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
            return F.normalize(x, dim=-1)

    meta = {
        "image_size": pp.get("size", CONTRACT_SIZE),
        "mean": mean,
        "std": std,
        "interpolation": pp.get("interpolation", "bicubic"),
        "resize_mode": pp.get("resize_mode", "shortest"),
        "text_trimmed": bool(can_trim),
    }
    return ImageExport().eval(), TextExport().eval(), meta


def verify(model, img_mod, txt_mod, img_path: Path, txt_path: Path, threads: int, seed: int) -> dict:
    """Max abs diff between open_clip's own forward (model.encode_image / encode_text on the full 77
    positions, normalised) and the ONNX graphs in onnxruntime."""
    import onnxruntime as ort
    import open_clip
    import torch
    import torch.nn.functional as F

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    si = ort.InferenceSession(str(img_path), so, providers=["CPUExecutionProvider"])
    st = ort.InferenceSession(str(txt_path), so, providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    px = torch.randint(0, 256, (3, CONTRACT_SIZE, CONTRACT_SIZE, 3), dtype=torch.uint8, generator=g)
    tok = open_clip.get_tokenizer("ViT-B-32")  # the CLIP BPE tokenizer (same for all OpenAI-style models)
    texts = ["a lion", "a photo of a red car", "a cat", "", "a very long caption " + "with many words " * 30]
    ids = tok(texts, context_length=CONTEXT)
    with torch.no_grad():
        x = (px.float() / 255.0 - img_mod.mean) * img_mod.inv_std
        ref_i = F.normalize(model.encode_image(x.permute(0, 3, 1, 2)), dim=-1).numpy()
        ref_t = F.normalize(model.encode_text(ids), dim=-1).numpy()
    got_i = si.run(None, {"pixels": px.numpy()})[0]
    got_t = st.run(None, {"input_ids": ids.numpy()})[0]
    got_t1 = np.concatenate([st.run(None, {"input_ids": ids[k : k + 1].numpy()})[0] for k in range(len(ids))])
    return {
        "image_max_abs_diff": float(np.abs(ref_i - got_i).max()),
        "text_max_abs_diff": float(max(np.abs(ref_t - got_t).max(), np.abs(ref_t - got_t1).max())),
        "image_batch": 3,
        "texts": len(texts),
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "reference": "open_clip model.encode_image / encode_text (full 77 positions), L2-normalised",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model", default="ViT-B-32", help="open_clip model name (ViT-B-32, ViT-B-16, ViT-L-14, ...)"
    )
    ap.add_argument(
        "--pretrained",
        default="none",
        help="local checkpoint path, an open_clip pretrained tag (must be cached), or 'none' "
        "for random weights",
    )
    ap.add_argument("--out", type=Path, required=True, help="Triton model repository to write into")
    ap.add_argument("--image-name", default="clip_image")
    ap.add_argument("--text-name", default="clip_text")
    ap.add_argument(
        "--package-dir",
        type=Path,
        default=None,
        help="where to write package.json (default models/openclip-<model>/package)",
    )
    ap.add_argument("--no-trim", action="store_true", help="always compute all 77 text positions")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-verify", action="store_true")
    ap.add_argument(
        "--metrics",
        type=Path,
        default=None,
        help="JSON file to merge the parity figures into (key given by --metrics-key)",
    )
    ap.add_argument("--metrics-key", default="vit_b32_export_parity")
    args = ap.parse_args(argv)

    import open_clip
    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    # nn.MultiheadAttention's inference fast path (aten::_native_multi_head_attention) has no ONNX
    # symbolic: trace the plain path (same maths)
    torch.backends.mha.set_fastpath_enabled(False)
    pretrained = None if args.pretrained.lower() in ("none", "random", "") else args.pretrained
    log(f"creating {args.model} (pretrained={pretrained})")
    model = open_clip.create_model(args.model, pretrained=pretrained, device="cpu", precision="fp32")
    model.eval()
    reference = None
    if not args.skip_verify:
        import copy

        reference = copy.deepcopy(model)  # open_clip's own forward, unpatched, for the parity check
    log(f"patched {patch_attention(model)} attention blocks for export")
    img_mod, txt_mod, meta = build_wrappers(model, trim=not args.no_trim)
    if meta["image_size"] not in (
        CONTRACT_SIZE,
        [CONTRACT_SIZE, CONTRACT_SIZE],
        (CONTRACT_SIZE, CONTRACT_SIZE),
    ):
        raise SystemExit(f"{args.model} takes {meta['image_size']} px images; the contract is 224 px")
    if meta["interpolation"] != "bicubic" or meta["resize_mode"] != "shortest":
        log(
            f"WARNING: this checkpoint expects {meta['interpolation']}/{meta['resize_mode']} resizing; "
            "the service does bicubic shortest-side + center crop"
        )
    embed_dim = int(model.encode_text(torch.zeros(1, CONTEXT, dtype=torch.long)).shape[-1])
    metadata = {
        "model": args.model,
        "pretrained": args.pretrained if pretrained else "none (random init)",
        "embedding_dim": embed_dim,
        "open_clip": open_clip.__version__,
        **meta,
    }

    img_path = args.out / args.image_name / "1" / "model.onnx"
    txt_path = args.out / args.text_name / "1" / "model.onnx"
    t = time.time()
    export_tower(
        img_mod,
        (torch.randint(0, 256, (2, CONTRACT_SIZE, CONTRACT_SIZE, 3), dtype=torch.uint8),),
        img_path,
        "pixels",
        producer=PRODUCER,
        metadata=metadata,
    )
    tok = open_clip.get_tokenizer("ViT-B-32")
    export_tower(
        txt_mod,
        (tok(["a lion", "a photo of a red car"], context_length=CONTEXT),),
        txt_path,
        "input_ids",
        producer=PRODUCER,
        metadata=metadata,
    )
    log(
        f"exported in {time.time() - t:.0f}s: {img_path} ({img_path.stat().st_size / 1e6:.0f} MB), "
        f"{txt_path} ({txt_path.stat().st_size / 1e6:.0f} MB)"
    )
    result = {
        "model": args.model,
        "pretrained": metadata["pretrained"],
        "embedding_dim": embed_dim,
        "opset": OPSET,
        "text_trimmed": meta["text_trimmed"],
        "image_onnx_bytes": img_path.stat().st_size,
        "text_onnx_bytes": txt_path.stat().st_size,
    }
    if not args.skip_verify:
        result.update(verify(reference, img_mod, txt_mod, img_path, txt_path, args.threads, args.seed))
        ok = max(result["image_max_abs_diff"], result["text_max_abs_diff"]) <= 1e-4
        result["within_1e-4"] = ok
        log(f"parity: image {result['image_max_abs_diff']:.2e}, text {result['text_max_abs_diff']:.2e}")
    slug = f"openclip-{args.model.lower()}"
    package_dir = args.package_dir or REPO / "models" / slug / "package"
    package_dir.mkdir(parents=True, exist_ok=True)
    manifest = package_manifest(
        name=slug if pretrained else f"{slug}-random",
        dim=embed_dim,
        image_model=args.image_name,
        text_model=args.text_name,
        mean=[float(x) for x in meta["mean"]],
        std=[float(x) for x in meta["std"]],
        metadata=metadata,
    )
    (package_dir / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"wrote the model package {package_dir / 'package.json'}")
    print(json.dumps(result, indent=2))
    if args.metrics:
        m = json.loads(args.metrics.read_text()) if args.metrics.exists() else {}
        m[args.metrics_key] = result
        args.metrics.write_text(json.dumps(m, indent=2) + "\n")
    if not args.skip_verify and not result["within_1e-4"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
