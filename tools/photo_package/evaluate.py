"""Evaluate model packages on the photo/object set (models/photo/) with ONNX Runtime in-process (no torch).

Compared in one run, on the same queries and gallery:
- photo:   the package built by tools/photo_package/build.py (text->image via `semantic`, image->image via
           `visual`; `semantic` near-duplicates are reported too);
- clipart: the project's demo model (triton_models/clip_image + clip_text, CLIP BPE tokenizer from
           services/encoder/tokenizer.py, preprocessing from services/encoder/preprocess.py);
- chance:  random scores (seeded), the floor any model must clear.

Images go through the service's own decode path (`decode_image`, bicubic shortest-side 224 + centre crop,
`rgb_on_white`) for both models. Metrics per query family, on the held-out split unless --split says
otherwise: R@k = share of queries with a relevant image in the top k (relevant = every gallery image in the
target's label group), nDCG@10 (binary gains), MRR. Near-duplicates: each held-out image augmented four
ways (eval_set.augment) is the query, the gallery is the 954 originals; hit@1 = the original ranks first.

  /work/main/.venv/bin/python -m tools.photo_package.evaluate --package ~/.cache/imagesearch/photo/package \
      --json models/photo/metrics.json
  /work/main/.venv/bin/python -m tools.photo_package.evaluate --speed   # images/s, texts/s, 1 and 2 threads
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from services.encoder.preprocess import decode_image
from services.encoder.tokenizer import shared_tokenizer
from tools.photo_package.eval_set import (
    AUGMENTATIONS,
    DEFAULT_DATA,
    OUT_DIR,
    augment,
    read_queries,
    rgb_on_white,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

DEFAULT_PACKAGE = Path.home() / ".cache" / "imagesearch" / "photo" / "package"
MAX_PIXELS = 200_000_000
KS = (1, 5, 10)


def session(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the encoder serves
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class PhotoPackage:
    name = "photo"

    def __init__(self, root: Path, threads: int, name: str | None = None) -> None:
        from tokenizers import Tokenizer

        self.meta = json.loads((root / "package.json").read_text())
        self.name = name or self.name
        self.image = session(root / self.meta["towers"]["image"]["file"], threads)
        self.text = session(root / self.meta["towers"]["text"]["file"], threads)
        self.tok = Tokenizer.from_file(str(root / self.meta["tokenizer"]["file"]))
        self.tok.enable_padding(pad_id=0, pad_token="[PAD]")
        self.color_mode = self.meta["preprocessing"]["image"]["color_mode"]
        self.size = int(self.meta["preprocessing"]["image"]["size"])

    def encode_images(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        sem, vis = self.image.run(["semantic", "visual"], {"pixels": pixels})
        return {"semantic": sem, "visual": vis}

    def tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        enc = self.tok.encode_batch(texts)
        return {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        }

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return self.text.run(["embedding"], self.tokenize(texts))[0]


class ClipArtModel:
    name = "clipart"
    color_mode = "rgb_on_white"  # models/demo/package/package.json: preprocessing.image.color_mode
    size = 224

    def __init__(self, threads: int) -> None:
        self.image = session(REPO / "triton_models/clip_image/1/model.onnx", threads)
        self.text = session(REPO / "triton_models/clip_text/1/model.onnx", threads)
        self.tok = shared_tokenizer()

    def encode_images(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        (emb,) = self.image.run(["embedding"], {"pixels": pixels})
        return {"semantic": emb, "visual": emb}

    def tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        return {"input_ids": self.tok(texts).ids}

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return self.text.run(["embedding"], self.tokenize(texts))[0]


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def batched(fn, items, batch: int = 16):
    outs = [fn(items[i : i + batch]) for i in range(0, len(items), batch)]
    if isinstance(outs[0], dict):
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    return np.concatenate(outs)


def ranks_of(scores: np.ndarray, relevant: list[np.ndarray]) -> list[np.ndarray]:
    """0-based ranks of each query's relevant items (ties broken against the relevant item)."""
    out = []
    for s, rel in zip(scores, relevant, strict=True):
        better = (s[None, :] > s[rel][:, None]).sum(1)
        ties = (s[None, :] == s[rel][:, None]).sum(1) - 1
        out.append(np.sort(better + ties))
    return out


def retrieval_metrics(ranks: list[np.ndarray]) -> dict[str, float]:
    n = len(ranks)
    m = {f"R@{k}": sum(1 for r in ranks if r[0] < k) / n for k in KS}
    m["MRR"] = sum(1.0 / (r[0] + 1) for r in ranks) / n
    ndcg = 0.0
    for r in ranks:
        dcg = sum(1.0 / np.log2(x + 2) for x in r if x < 10)
        idcg = sum(1.0 / np.log2(i + 2) for i in range(min(len(r), 10)))
        ndcg += dcg / idcg
    m["nDCG@10"] = ndcg / n
    m["n"] = n
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}


def load_set(out_dir: Path):
    items = [json.loads(x) for x in (out_dir / "eval_manifest.jsonl").read_text().splitlines() if x.strip()]
    index = {it["id"]: i for i, it in enumerate(items)}
    groups: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(it["group"], []).append(i)
    families = {}
    for fam in ("label", "paraphrase"):
        rows = read_queries(out_dir / f"queries_{fam}.tsv")
        families[fam] = [
            {
                "target": t,
                "text": q,
                "split": items[index[t]]["split"],
                "rel": np.array(groups[items[index[t]]["group"]]),
            }
            for t, q in rows
        ]
    return items, index, families


def gallery_pixels(items: list[dict], data: Path, color_mode: str, size: int = 224) -> np.ndarray:
    return np.stack(
        [decode_image((data / it["path"]).read_bytes(), size, MAX_PIXELS, color_mode) for it in items]
    )


def evaluate(args) -> dict:
    items, index, families = load_set(args.set)
    splits = ("tune", "heldout") if args.split == "all" else (args.split,)
    models = [PhotoPackage(args.package, args.threads), *extra_packages(args, args.threads)]
    models.append(ClipArtModel(args.threads))
    t0 = time.time()
    pix_cache: dict[tuple[str, int], np.ndarray] = {}
    for m in models:
        if (m.color_mode, m.size) not in pix_cache:
            pix_cache[m.color_mode, m.size] = gallery_pixels(items, args.data, m.color_mode, m.size)
    print(f"[evaluate] decoded {len(items)} gallery images in {time.time() - t0:.1f}s", flush=True)

    results: dict = {"models": {}}
    vocabulary = class_vocabulary(args.package)
    rng = np.random.default_rng(0)
    for m in models:
        t1 = time.time()
        gal = batched(m.encode_images, pix_cache[m.color_mode, m.size])
        res: dict = {}
        for fam, qs in families.items():
            sel = [q for q in qs if q["split"] in splits]
            template = args.query_template if isinstance(m, PhotoPackage) else "{}"
            txt = batched(m.encode_texts, [template.format(q["text"]) for q in sel], 32)
            ranks = ranks_of(txt @ gal["semantic"].T, [q["rel"] for q in sel])
            res[fam] = retrieval_metrics(ranks)
            res[f"{fam}_by_target_source"] = {
                src: retrieval_metrics(
                    [r for q, r in zip(sel, ranks, strict=True) if q["target"].startswith(src)]
                )
                for src in sorted({q["target"].split(":", 1)[0] for q in sel})
            }
            if fam == "label":
                res["label_by_vocabulary"] = by_vocabulary(sel, ranks, vocabulary)
            if fam == "paraphrase":
                res["paraphrase_misses_at_10"] = [
                    q["text"] for q, r in zip(sel, ranks, strict=True) if r[0] >= 10
                ]
        res["near_duplicate_hit@1"] = {}
        dup_ids = [i for i, it in enumerate(items) if it["split"] in splits]
        originals = [rgb_on_white(Image.open(args.data / items[i]["path"])) for i in dup_ids]
        for aug in AUGMENTATIONS:
            qpix = np.stack(
                [
                    decode_image(png_bytes(augment(im, aug)), m.size, MAX_PIXELS, m.color_mode)
                    for im in originals
                ]
            )
            q = batched(m.encode_images, qpix)
            entry = {}
            for vec in ("visual", "semantic") if isinstance(m, PhotoPackage) else ("visual",):
                top = np.argmax(q[vec] @ gal[vec].T, axis=1)
                hits = [items[t]["sha256"] == items[i]["sha256"] for t, i in zip(top, dup_ids, strict=True)]
                entry[vec] = round(sum(hits) / len(hits), 4)
            res["near_duplicate_hit@1"][aug] = entry
        res["seconds"] = round(time.time() - t1, 1)
        results["models"][m.name] = res
        print(f"[evaluate] {m.name}: {json.dumps(res)[:600]}", flush=True)

    chance: dict = {}
    for fam, qs in families.items():
        sel = [q for q in qs if q["split"] in splits]
        runs = [
            retrieval_metrics(ranks_of(rng.random((len(sel), len(items))), [q["rel"] for q in sel]))
            for _ in range(20)
        ]
        chance[fam] = {k: round(statistics.mean(r[k] for r in runs), 4) for k in runs[0]}
    chance["near_duplicate_hit@1"] = round(1 / len(items), 4)
    results["models"]["chance"] = chance
    results["set"] = {
        "images": len(items),
        "by_source": {
            s: sum(1 for it in items if it["source"] == s) for s in sorted({it["source"] for it in items})
        },
        "split": args.split,
        "queries": {f: sum(1 for q in qs if q["split"] in splits) for f, qs in families.items()},
        "near_duplicate_queries_per_augmentation": sum(1 for it in items if it["split"] in splits),
        "images_seen_in_training_by_clipart_model": sum(1 for it in items if it["seen_by_clipart_model"]),
    }
    results["command"] = " ".join(["python", "tools/photo_package/evaluate.py", *sys.argv[1:]])
    results["package"] = {
        "name": models[0].meta["name"],
        "version": models[0].meta["version"],
        "files_sha256": {
            k: v["sha256"] for k, v in models[0].meta["files"].items() if not k.startswith("skeleton")
        },
    }
    return results


def extra_packages(args, threads: int) -> list[PhotoPackage]:
    """--extra-package candidates, named photo[<package name> T=<top-T> temp=<temperature>], run beside the
    main package."""
    out = []
    for root in args.extra_package:
        meta = json.loads((root / "package.json").read_text())
        c = meta["towers"]["image"]["conse"]
        name = f"photo[{meta['name']} T={c['top_t']} temp={c.get('softmax_temperature', 1.0):g}]"
        out.append(PhotoPackage(root, threads, name))
    return out


def speed(args) -> dict:
    """Throughput of the raw ONNX Runtime towers (images pre-decoded; texts tokenized in the timed loop)."""
    items, _, families = load_set(args.set)
    texts = [q["text"] for q in families["paraphrase"]]
    out: dict = {"machine": f"{platform.machine()}, {platform.processor() or 'cpu'}", "runs": []}
    pix_cache: dict[tuple[str, int], np.ndarray] = {}
    for threads in args.speed_threads:
        photo = [PhotoPackage(args.package, threads), *extra_packages(args, threads)]
        for model in (*photo, ClipArtModel(threads)):
            key = (model.color_mode, model.size)
            if key not in pix_cache:
                pix_cache[key] = gallery_pixels(items[:64], args.data, *key)
            pix = pix_cache[key]
            for batch in (1, 8):
                row = {"model": model.name, "threads": threads, "batch": batch}
                for kind in ("images", "texts"):
                    n = 64 if kind == "images" else 128
                    data = pix if kind == "images" else texts
                    fn = model.encode_images if kind == "images" else model.encode_texts
                    fn(data[:batch])  # warm-up
                    reps = []
                    for _ in range(3):
                        t = time.perf_counter()
                        done = 0
                        while done < n:
                            chunk = data[done % len(data) : done % len(data) + batch]
                            if len(chunk) < batch:
                                chunk = data[:batch]
                            fn(chunk)
                            done += batch
                        reps.append(done / (time.perf_counter() - t))
                    row[f"{kind}_per_s"] = round(statistics.median(reps), 1)
                out["runs"].append(row)
                print(f"[speed] {row}", flush=True)
    return out


def class_vocabulary(package: Path) -> set[str]:
    """Every lemma of the package's classifier classes (ImageNet's 1,000), lower-cased."""
    classes = json.loads((package / "classes.json").read_text())
    return {lemma.lower().replace("_", " ") for c in classes for lemma in c["lemmas"]}


def by_vocabulary(queries: list[dict], ranks: list[np.ndarray], vocabulary: set[str]) -> dict:
    """Label-query metrics split by whether the query is a class name the classifier has, contains a
    word that is one, or neither: a ConSE model can only name what its classes cover."""

    def kind(text: str) -> str:
        text = text.lower()
        if text in vocabulary:
            return "names_a_class"
        return "has_a_class_word" if any(w in vocabulary for w in text.split()) else "no_class_word"

    kinds = [kind(q["text"]) for q in queries]
    return {
        k: retrieval_metrics([r for r, got in zip(ranks, kinds, strict=True) if got == k])
        for k in ("names_a_class", "has_a_class_word", "no_class_word")
        if k in kinds
    }


def print_table(results: dict) -> None:
    print(
        "\n| model | label R@1 | R@5 | R@10 | nDCG@10 | MRR | paraphrase R@1 | R@5 | R@10 | nDCG@10 | MRR |"
        " dup crop80 | half_jpeg40 | rot7_blur | grey |"
    )
    print("|---|" + "---|" * 14)
    for name, r in results["models"].items():
        cells = [name]
        for fam in ("label", "paraphrase"):
            cells += [f"{r[fam][k]:.3f}" for k in ("R@1", "R@5", "R@10", "nDCG@10", "MRR")]
        for aug in AUGMENTATIONS:
            d = r["near_duplicate_hit@1"]
            cells.append(f"{d:.4f}" if isinstance(d, float) else f"{d[aug]['visual']:.4f}")
        print("| " + " | ".join(cells) + " |")
    print("\nlabel R@1 by whether the query names one of the classifier's classes (queries):")
    for name, r in results["models"].items():
        split = r.get("label_by_vocabulary", {})
        print(f"  {name}: " + ", ".join(f"{k} {m['R@1']:.3f} ({m['n']})" for k, m in split.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", type=Path, default=DEFAULT_PACKAGE)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument(
        "--set", type=Path, default=OUT_DIR, help="folder with eval_manifest.jsonl and queries_*.tsv"
    )
    ap.add_argument("--split", choices=("heldout", "tune", "all"), default="heldout")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--query-template",
        default="{}",
        help="wrap each photo-package query, e.g. 'a photo of {}' (the service sends queries as typed)",
    )
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--speed", action="store_true", help="measure throughput instead of quality")
    ap.add_argument("--speed-threads", type=int, nargs="+", default=[1, 2], help="intra-op threads (--speed)")
    ap.add_argument(
        "--extra-package",
        type=Path,
        action="append",
        default=[],
        help="another photo package to evaluate in the same run (e.g. a backbone candidate)",
    )
    args = ap.parse_args(argv)
    results = speed(args) if args.speed else evaluate(args)
    if not args.speed:
        print_table(results)
    if args.json:
        previous = json.loads(args.json.read_text()) if args.json.exists() else {}
        previous["speed" if args.speed else f"quality_{args.split}"] = results
        args.json.write_text(json.dumps(previous, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
