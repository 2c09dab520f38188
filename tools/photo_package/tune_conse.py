"""Sweep the ConSE knobs (top-T classes, softmax temperature) of photo packages on the TUNE split only.

The image graph is run once per package with one extra output, the classifier logits (the input of its
Softmax node); the `semantic` vector is then recomputed in numpy for every (T, temperature):
`L2norm( sum over the top-T classes of softmax(logits / temperature) * labels )`, with `labels` the graph's
own 1000x384 label matrix. The package's own setting (T and temperature from package.json) must reproduce
the graph's `semantic` output (checked, max abs diff printed). Text queries go through the package's text
tower; metrics are evaluate.py's (R@k, nDCG@10, MRR over label groups). No torch; one ORT thread.

Held-out queries are never read: pick the knobs here, then build the package with them and run
tools/photo_package/evaluate.py once on the held-out split (docs/notes/backbone_study.md).

  python -m tools.photo_package.tune_conse --package /tmp/lite-pkg/lite0 /tmp/lite-pkg/lite1-t5 \
      --top-t 1 3 5 10 20 --temperature 0.5 1 2 --json /tmp/lite/tune.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from tools.photo_package.eval_set import DEFAULT_DATA, OUT_DIR
from tools.photo_package.evaluate import (
    PhotoPackage,
    batched,
    gallery_pixels,
    load_set,
    ranks_of,
    retrieval_metrics,
    session,
)


def with_logits(image_onnx: Path, out: Path) -> tuple[Path, np.ndarray, str]:
    """A copy of the image graph that also outputs its logits; the label matrix; the logits name."""
    m = onnx.load(str(image_onnx))
    (softmax,) = [n for n in m.graph.node if n.op_type == "Softmax"]
    logits = softmax.input[0]
    producer = {o: n for n in m.graph.node for o in n.output}[logits]
    if producer.op_type == "Div":  # a package built with a temperature: logits / T feeds the Softmax
        logits = producer.input[0]
    (labels,) = [numpy_helper.to_array(i) for i in m.graph.initializer if i.name == "labels"]
    m.graph.output.append(onnx.helper.make_tensor_value_info(logits, onnx.TensorProto.FLOAT, None))
    onnx.save(m, str(out))
    return out, labels, logits


def conse(logits: np.ndarray, labels: np.ndarray, top_t: int, temperature: float) -> np.ndarray:
    z = logits / temperature
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    kth = -np.partition(-p, top_t - 1, axis=1)[:, top_t - 1 : top_t]
    v = np.where(p >= kth, p, 0.0) @ labels
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", type=Path, nargs="+", required=True)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--set", type=Path, default=OUT_DIR)
    ap.add_argument("--top-t", type=int, nargs="+", default=[1, 3, 5, 10, 20])
    ap.add_argument("--temperature", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    items, _, families = load_set(args.set)
    queries = {fam: [q for q in qs if q["split"] == "tune"] for fam, qs in families.items()}
    results: dict = {"split": "tune", "queries": {f: len(q) for f, q in queries.items()}, "packages": {}}
    for root in args.package:
        t0 = time.time()
        pkg = PhotoPackage(root, 1)
        own = pkg.meta["towers"]["image"]["conse"]
        own_t, own_temp = int(own["top_t"]), float(own.get("softmax_temperature", 1.0))
        with tempfile.TemporaryDirectory() as tmp:
            path, labels, logits_name = with_logits(root / "image.onnx", Path(tmp) / "image.onnx")
            sess = session(path, 1)
            pix = gallery_pixels(items, args.data, pkg.color_mode, pkg.size)
            out = batched(
                lambda b, s=sess, n=logits_name: dict(
                    zip(("semantic", "logits"), s.run(["semantic", n], {"pixels": b}), strict=True)
                ),
                pix,
            )
        check = float(np.abs(conse(out["logits"], labels, own_t, own_temp) - out["semantic"]).max())
        text = {fam: batched(pkg.encode_texts, [q["text"] for q in qs], 32) for fam, qs in queries.items()}
        grid = []
        for top_t in args.top_t:
            for temp in args.temperature:
                gal = conse(out["logits"], labels, top_t, temp)
                row: dict = {"top_t": top_t, "temperature": temp}
                for fam, qs in queries.items():
                    m = retrieval_metrics(ranks_of(text[fam] @ gal.T, [q["rel"] for q in qs]))
                    row[fam] = {k: m[k] for k in ("R@1", "R@5", "R@10", "nDCG@10", "MRR")}
                grid.append(row)
                print(
                    f"[tune] {pkg.meta['name']} T={top_t:<2} temp={temp:<4} "
                    f"paraphrase R@10 {row['paraphrase']['R@10']:.3f} MRR {row['paraphrase']['MRR']:.3f} "
                    f"nDCG@10 {row['paraphrase']['nDCG@10']:.3f} | label R@1 {row['label']['R@1']:.3f} "
                    f"MRR {row['label']['MRR']:.3f}",
                    flush=True,
                )
        results["packages"][pkg.meta["name"]] = {
            "path": str(root),
            "graph_top_t": own_t,
            "graph_temperature": own_temp,
            "numpy_vs_graph_semantic_max_abs_diff": check,
            "seconds": round(time.time() - t0, 1),
            "grid": grid,
        }
        print(f"[tune] {pkg.meta['name']}: numpy vs graph semantic max abs diff {check:.2e}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
