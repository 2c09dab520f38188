#!/usr/bin/env python3
"""Export the trained demo model to the two ONNX contracts, verify them with ONNX Runtime, and
evaluate held-out retrieval through ONNX Runtime. Called by train_demo.py; can also be run alone on
a saved checkpoint:

    python -m tools.models.export_demo [--checkpoint ~/.cache/imagesearch/data/cache/demo_clip.pt]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from tools.models.demo_data import DEFAULT_CACHE, cached_array, decode224, decode224_white, load_manifest
from tools.models.onnx_export import OPSET, export_tower

REPO = Path(__file__).resolve().parents[2]

# Queries whose top-5 over the whole dataset metrics.json records (a human-readable sanity check).
SANITY_QUERIES = [
    "a lion",
    "a red car",
    "a cat",
    "a dog",
    "a banana",
    "an airplane",
    "a bicycle",
    "a red heart",
    "a flag of france",
    "a pizza",
    "a guitar",
    "a tree",
    "a house",
    "a smiling face",
    "the moon",
    "a cup of coffee",
]

GOLDEN_TEXTS = [
    "a lion",
    "a red car",
    "a cat",
    "A photo of a dog.",
    "flag of Japan",
    "",
    "pizza",
    "a very long caption " + "with many repeated words " * 20,
]


def log(msg: str) -> None:
    print(f"[export_demo {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def median_ms(fn, n: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(ts), 3)


def export_and_evaluate(
    model, recs, he, gid, cache: Path, triton_models: Path, threads: int, tokenizer, sanity_queries
) -> dict:
    import torch

    from tools.models.demo_model import ImageExport, TextExport

    visual = copy.deepcopy(model.visual).to(memory_format=torch.contiguous_format).eval()
    img_path = triton_models / "clip_image/1/model.onnx"
    txt_path = triton_models / "clip_text/1/model.onnx"
    img_mod = ImageExport(visual, pool=2).eval()
    txt_mod = TextExport(copy.deepcopy(model.text).eval(), trim=True).eval()

    ex_img = torch.randint(0, 256, (2, 224, 224, 3), dtype=torch.uint8)
    ex_ids = tokenizer(["a lion", "a photo of a red car"], context_length=77)
    log("exporting ONNX")
    export_tower(img_mod, (ex_img,), img_path, "pixels", producer="imagesearch tools/models")
    export_tower(txt_mod, (ex_ids,), txt_path, "input_ids", producer="imagesearch tools/models")

    # ---------------- held-out images through the reference 224 pipeline ----------------
    he_paths = [str(cache / recs[i]["path"]) for i in he]
    img224 = cached_array(cache, "img224ref_heldout", he_paths, decode224, threads)
    img224w = cached_array(cache, "img224white_heldout", he_paths, decode224_white, threads)

    s_img = ort_session(img_path, threads)
    s_txt = ort_session(txt_path, threads)

    # ---------------- parity ----------------
    with torch.no_grad():
        rnd = torch.randint(
            0, 256, (4, 224, 224, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
        )
        px = torch.cat([rnd, torch.from_numpy(img224[:12])])
        ref_i = img_mod(px).numpy()
        parity_texts = GOLDEN_TEXTS + [recs[i]["caption"] for i in he[:24]]
        ids = tokenizer(parity_texts, context_length=77)
        ref_t = torch.nn.functional.normalize(model.text(ids), dim=-1).numpy()  # full 77, no trimming
    got_i = s_img.run(None, {"pixels": px.numpy()})[0]
    got_t = np.concatenate(
        [s_txt.run(None, {"input_ids": ids[k : k + 7].numpy()})[0] for k in range(0, len(ids), 7)]
    )
    got_t1 = np.concatenate(
        [s_txt.run(None, {"input_ids": ids[k : k + 1].numpy()})[0] for k in range(len(ids))]
    )
    parity = {
        "image_max_abs_diff": float(np.abs(ref_i - got_i).max()),
        "text_max_abs_diff": float(max(np.abs(ref_t - got_t).max(), np.abs(ref_t - got_t1).max())),
        "reference": "torch forward (text: full 77 positions, no trimming) vs onnxruntime "
        f"{__import__('onnxruntime').__version__} CPU, batches of 1/7/16",
        "image_inputs": "4 random uint8 + 12 held-out images",
        "text_inputs": len(parity_texts),
    }
    log(f"parity: {parity}")

    # ---------------- latency (1 thread, batch 1) ----------------
    s1i, s1t = ort_session(img_path, 1), ort_session(txt_path, 1)
    one_img = img224[:1]
    q = tokenizer(["a red car"], context_length=77).numpy()
    q_long = tokenizer(
        ["a photo of a small red sports car parked next to a tall green tree"], context_length=77
    ).numpy()
    lat = {
        "threads": 1,
        "text_query_ms": median_ms(lambda: s1t.run(None, {"input_ids": q}), 300),
        "text_query_16_tokens_ms": median_ms(lambda: s1t.run(None, {"input_ids": q_long}), 300),
        "image_ms": median_ms(lambda: s1i.run(None, {"pixels": one_img}), 100),
        "image_batch32_ms_per_image": round(
            median_ms(lambda: s1i.run(None, {"pixels": img224[:32]}), 10, 2) / 32, 3
        ),
        "note": "onnxruntime CPUExecutionProvider, median; the 2-core machine was shared with other builds",
    }
    log(f"latency: {lat}")

    # ---------------- held-out retrieval through ONNX Runtime ----------------
    hg = gid[he]
    qg = np.unique(hg)
    first = {}
    for j, g in enumerate(hg):
        first.setdefault(g, j)
    qtext = [recs[he[first[g]]]["caption"] for g in qg]
    qids = tokenizer(qtext, context_length=77).numpy()
    te = np.concatenate(
        [s_txt.run(None, {"input_ids": qids[k : k + 64]})[0] for k in range(0, len(qids), 64)]
    )
    qpos = np.array([{g: j for j, g in enumerate(qg)}[g] for g in hg])

    def retrieval(pixels):
        ie = np.concatenate(
            [s_img.run(None, {"pixels": pixels[k : k + 64]})[0] for k in range(0, len(pixels), 64)]
        )
        top = np.argsort(-(te @ ie.T), axis=1)[:, :10]
        rel = hg[top] == qg[:, None]
        topt = np.argsort(-(ie @ te.T), axis=1)[:, :10]
        relt = topt == qpos[:, None]
        return (
            {f"recall@{k}": round(float(rel[:, :k].any(1).mean()), 4) for k in (1, 5, 10)},
            {f"recall@{k}": round(float(relt[:, :k].any(1).mean()), 4) for k in (1, 5, 10)},
        )

    t2i, i2t = retrieval(img224)
    t2i_w, i2t_w = retrieval(img224w)
    sizes = np.array([np.sum(hg == g) for g in qg])
    evaluation = {
        "split": "held-out (models/demo/split_heldout.txt): caption groups never seen in training",
        "protocol": "one query per held-out caption group (its first image's raw caption, tokenized "
        "at 77); gallery = all held-out images at 224 px; a hit = any image of the same "
        "group in the top k; computed with the exported ONNX models through onnxruntime. "
        "Main figures: CLIP's reference preprocessing (resize/crop in the decoded mode, "
        "convert('RGB'): transparent areas turn black), as the service does; *_on_white: "
        "transparency flattened onto white first",
        "queries": int(len(qg)),
        "gallery_images": int(len(he)),
        "text_to_image": t2i,
        "image_to_text": i2t,
        "text_to_image_on_white": t2i_w,
        "image_to_text_on_white": i2t_w,
        "chance_recall@1": round(float(np.mean(sizes / len(hg))), 5),
    }
    log(f"held-out t2i {t2i} i2t {i2t}; on white: t2i {t2i_w} i2t {i2t_w}")

    # ---------------- sanity queries over the whole dataset (torch, 112 cache) ----------------
    sanity = {}
    try:
        img112 = cached_array(cache, "img112", [str(cache / r["path"]) for r in recs], None, threads)
        with torch.no_grad():
            embs = []
            for s in range(0, len(img112), 512):
                a = torch.from_numpy(img112[s : s + 512]).permute(0, 3, 1, 2).float()
                rgb = a[:, :3]  # premultiplied = transparent areas black, like the reference
                m = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1) * 255
                sd = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1) * 255
                embs.append(torch.nn.functional.normalize(visual((rgb - m) / sd), dim=-1))
            all_e = torch.cat(embs).numpy()
        sq = tokenizer(list(sanity_queries), context_length=77).numpy()
        qe = s_txt.run(None, {"input_ids": sq})[0]
        for qtext_, row in zip(sanity_queries, qe @ all_e.T, strict=True):
            best = np.argsort(-row)[:5]
            sanity[qtext_] = [f"{recs[i]['caption']} [{recs[i]['source']}, {recs[i]['split']}]" for i in best]
    except Exception as e:  # pragma: no cover
        log(f"sanity queries skipped: {e}")

    # ---------------- golden vectors for the serving side's tests ----------------
    gids = tokenizer(GOLDEN_TEXTS, context_length=77).numpy()
    gemb = s_txt.run(None, {"input_ids": gids})[0]
    golden = {
        "tokenizer": "open_clip SimpleTokenizer (bpe_simple_vocab_16e6.txt.gz), context 77, lower-case, "
        "ftfy + whitespace clean, truncated with the end token kept last",
        "texts": [
            {
                "text": t,
                "input_ids_nonzero_prefix": [int(v) for v in row[: int(np.argmax(row)) + 1]],
                "embedding_first8": [round(float(v), 6) for v in e[:8]],
            }
            for t, row, e in zip(GOLDEN_TEXTS, gids, gemb, strict=True)
        ],
        "image": {
            "input": "uint8 [1,224,224,3] all 255 (white)",
            "embedding_first8": [
                round(float(v), 6)
                for v in s_img.run(None, {"pixels": np.full((1, 224, 224, 3), 255, np.uint8)})[0][0][:8]
            ],
        },
    }

    size = {"image_onnx_bytes": img_path.stat().st_size, "text_onnx_bytes": txt_path.stat().st_size}
    return {
        "onnx": {
            "opset": OPSET,
            "image": {
                "path": str(img_path.relative_to(REPO)) if img_path.is_relative_to(REPO) else str(img_path),
                "input": "pixels UINT8 [batch,224,224,3] NHWC RGB (CLIP resize/crop already done)",
                "output": "embedding FLOAT32 [batch,D] L2-normalised",
            },
            "text": {
                "path": str(txt_path.relative_to(REPO)) if txt_path.is_relative_to(REPO) else str(txt_path),
                "input": "input_ids INT64 [batch,77] CLIP BPE ids (49406 start, 49407 end, 0 pad)",
                "output": "embedding FLOAT32 [batch,D] L2-normalised",
            },
            **size,
        },
        "parity": parity,
        "latency": lat,
        "heldout_eval": evaluation,
        "sanity_queries_top5": sanity,
        "golden": golden,
    }


def main(argv=None) -> int:
    import torch

    from tools.models.demo_model import DemoCLIP

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--demo-dir", type=Path, default=REPO / "models/demo")
    ap.add_argument("--triton-models", type=Path, default=REPO / "triton_models")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cache = args.cache.expanduser().resolve()
    ck = torch.load(args.checkpoint or cache / "cache/demo_clip.pt", map_location="cpu")
    model = DemoCLIP(ck["dim"], ck["image_kw"], ck["text_kw"])
    model.load_state_dict(ck["state_dict"])
    model.eval()
    recs = load_manifest(args.demo_dir / "manifest.jsonl")
    train_ids = set((args.demo_dir / "split_train.txt").read_text().split())
    held_ids = set((args.demo_dir / "split_heldout.txt").read_text().split())
    recs = [r for r in recs if r["id"] in train_ids or r["id"] in held_ids]
    he = np.array([i for i, r in enumerate(recs) if r["id"] in held_ids])
    gindex = {g: i for i, g in enumerate(sorted({r["group"] for r in recs}))}
    gid = np.array([gindex[r["group"]] for r in recs])
    import open_clip

    tok = open_clip.get_tokenizer("ViT-B-32")
    res = export_and_evaluate(
        model, recs, he, gid, cache, args.triton_models, args.threads, tok, SANITY_QUERIES
    )
    out = args.demo_dir / "metrics.json"
    metrics = json.loads(out.read_text()) if out.exists() else {}
    metrics.update(res)
    out.write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({k: res[k] for k in ("parity", "latency", "heldout_eval")}, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main())
