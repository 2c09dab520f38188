"""Write the CI recall subset of the photo/object evaluation set (tests/encoder/fixtures/photo_recall/).

A small committed slice of models/photo's held-out split, so the recall floor test
(tests/encoder/test_photo_recall.py) runs on a fresh clone without the data cache:
- TARGETS held-out items that have a hand-written paraphrase query (every source represented), plus
  DISTRACTORS other held-out items; each flattened onto white, resized (shortest side 224, bicubic) and
  centre-cropped to 224 x 224, the encoder's own geometry, saved as JPEG quality 85 (~10 KB each);
- their paraphrase queries (queries_paraphrase.tsv) and a manifest with every image's source, licence
  and original path.
Licences: Tux Paint stamps GPL-2.0-only, fluent-emoji-3d MIT, scikit-image samples public domain / CC0
(models/photo/README.md lists the sources).

Usage: python -m tools.photo_package.ci_subset [--data ~/.cache/imagesearch/data]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from PIL import Image

from tools.photo_package.eval_set import DEFAULT_DATA, OUT_DIR, read_queries, rgb_on_white

REPO = Path(__file__).resolve().parents[2]
DEST = REPO / "tests" / "encoder" / "fixtures" / "photo_recall"
TARGETS = {"skimage": 6, "tuxpaint": 12, "fluent3d": 12}
DISTRACTORS = {"tuxpaint": 9, "fluent3d": 9}
SIZE = 224


def _order(item_id: str) -> str:
    return hashlib.sha256(item_id.encode()).hexdigest()


def _square(im: Image.Image) -> Image.Image:
    w, h = im.size
    scale = SIZE / min(w, h)
    im = im.resize((max(SIZE, round(w * scale)), max(SIZE, round(h * scale))), Image.Resampling.BICUBIC)
    left, top = (im.width - SIZE) // 2, (im.height - SIZE) // 2
    return im.crop((left, top, left + SIZE, top + SIZE))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args(argv)
    items = {r["id"]: r for r in map(json.loads, (OUT_DIR / "eval_manifest.jsonl").read_text().splitlines())}
    queries = [
        (t, q) for t, q in read_queries(OUT_DIR / "queries_paraphrase.tsv") if items[t]["split"] == "heldout"
    ]
    chosen: list[str] = []
    for source, n in TARGETS.items():
        ids = sorted({t for t, _ in queries if items[t]["source"] == source}, key=_order)
        chosen += ids[:n]
    targets = set(chosen)
    for source, n in DISTRACTORS.items():
        ids = sorted(
            (
                i
                for i, r in items.items()
                if r["source"] == source and r["split"] == "heldout" and i not in targets
            ),
            key=_order,
        )
        chosen += ids[:n]
    (DEST / "images").mkdir(parents=True, exist_ok=True)
    manifest = []
    for item_id in chosen:
        record = items[item_id]
        source_path = args.data / record["path"]
        if not source_path.is_file():
            print(f"[ci subset] {source_path} is missing: run tools/models/fetch_data.py", file=sys.stderr)
            return 1
        name = item_id.replace(":", "_").replace("/", "_") + ".jpg"
        _square(rgb_on_white(Image.open(source_path))).save(DEST / "images" / name, "JPEG", quality=85)
        manifest.append(
            {
                "id": item_id,
                "file": f"images/{name}",
                "caption": record["caption"],
                "source": record["source"],
                "license": record["license"],
                "original": record["path"],
            }
        )
    (DEST / "manifest.jsonl").write_text("".join(json.dumps(m, sort_keys=True) + "\n" for m in manifest))
    with (DEST / "queries_paraphrase.tsv").open("w") as f:
        f.write("# held-out paraphrase queries of models/photo/queries_paraphrase.tsv whose target is here\n")
        for target, query in queries:
            if target in targets:
                f.write(f"{target}\t{query}\n")
    print(f"[ci subset] {len(manifest)} images, {len(targets)} targets -> {DEST}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
