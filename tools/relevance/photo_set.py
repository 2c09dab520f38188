"""The shipped judgement sets of the photo package (models/photo/judgements/) and the files they use.

    python -m tools.relevance.photo_set build                 # rewrite the four JSONL files (deterministic)
    python -m tools.relevance.photo_set materialise --out DIR # DIR/gallery (images + sidecars), DIR/queries

Built from the photo evaluation set (models/photo/eval_manifest.jsonl, 954 images fetched by
tools/models/fetch_data.py) and its hand-written queries, by rules fixed before any search was run:
- exact_caption: one per label group, the caption's first clause (queries_label.tsv); relevant: every
  asset whose caption holds all its content words (grade 2 in the query's own label group, else 1);
- paraphrase: the hand-written descriptions that avoid the caption's words (queries_paraphrase.tsv);
  relevant: the target's label group (target 2, others 1);
- mixed: an example image (a greyscale copy of the target) plus one caption word that at least three
  captions share (the most shared one), i.e. "this one, among the <word>s"; relevant: the target's
  label group (target 2, others 1);
- near_duplicate: an example image only (half size + JPEG q40, or 7 degree rotation + blur);
  relevant: the target's label group (target 2, others 1).
Splits follow the manifest (by label group): calibration uses `tune` only, results are quoted on
`heldout`. Asset ids are the gallery's relative paths, as `imagesearch ingest DIR/gallery` names them.
"""

from __future__ import annotations

import argparse
import io
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from PIL import Image

from tools.models.fetch_data import DEFAULT_CACHE
from tools.photo_package.eval_set import STOP, augment, rgb_on_white, stable_hash

REPO = Path(__file__).resolve().parents[2]
PHOTO = REPO / "models/photo"
OUT = PHOTO / "judgements"
SEED = "relevance-v1"
# Queries per split and family (a deterministic sample by stable hash; paraphrases: all of them).
SIZES = {"exact_caption": {"tune": 150, "heldout": 300}, "mixed": {"tune": 60, "heldout": 120},
         "near_duplicate": {"tune": 20, "heldout": 40}}  # fmt: skip
MIXED_MIN_SHARED = 3
QUERY_IMAGE_SIDE = 320


def words(text: str) -> list[str]:
    """The search's word tokens (lower case, no stemming), stop words dropped."""
    return [w for w in re.findall(r"[^\W_]+", text.lower()) if w not in STOP]


def asset_id(row: dict[str, Any]) -> str:
    source, _, rest = row["id"].partition(":")
    return f"{source}/{rest}{Path(row['path']).suffix.lower()}"


def read_tsv(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            target, text = line.split("\t", 1)
            rows.append((target, text.strip()))
    return rows


def sample(items: list[dict[str, Any]], family: str) -> list[dict[str, Any]]:
    out = []
    for split, n in SIZES[family].items():
        pool = sorted(
            (q for q in items if q["split"] == split), key=lambda q: stable_hash(SEED, family, q["id"])
        )
        out += pool[:n]
    return sorted(out, key=lambda q: q["id"])


def group_relevance(target: dict[str, Any], by_group: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    return {asset_id(r): (2 if r["id"] == target["id"] else 1) for r in by_group[target["group"]]}


def gallery_rows() -> list[dict[str, Any]]:
    """The manifest's items, less byte-identical copies: ingest stores one asset per content (the
    first in file order, as `imagesearch ingest` walks the folder sorted), so only it can be judged."""
    rows = [json.loads(line) for line in (PHOTO / "eval_manifest.jsonl").read_text().splitlines() if line]
    kept: dict[str, dict[str, Any]] = {}
    for r in sorted(rows, key=asset_id):
        kept.setdefault(r["sha256"], r)
    return sorted(kept.values(), key=lambda r: r["id"])


def build() -> dict[str, list[dict[str, Any]]]:
    rows = gallery_rows()
    by_id = {r["id"]: r for r in rows}
    by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_group[r["group"]].append(r)
    caption_words = {r["id"]: set(words(r["caption"])) for r in rows}
    families: dict[str, list[dict[str, Any]]] = {}

    exact = []
    for target_id, text in read_tsv(PHOTO / "queries_label.tsv"):
        if target_id not in by_id:  # a byte-identical copy of another item
            continue
        target, need = by_id[target_id], set(words(text))
        if not need:
            continue
        relevant = {
            asset_id(r): (2 if r["group"] == target["group"] else 1)
            for r in rows
            if need <= caption_words[r["id"]]
        }
        exact.append({"id": f"exact:{target_id}", "family": "exact_caption", "text": text,
                      "relevant": relevant, "split": target["split"]})  # fmt: skip
    families["exact_caption"] = sample(exact, "exact_caption")

    families["paraphrase"] = [
        {"id": f"paraphrase:{n}:{target_id}", "family": "paraphrase", "text": text,
         "relevant": group_relevance(by_id[target_id], by_group), "split": by_id[target_id]["split"]}
        for n, (target_id, text) in enumerate(read_tsv(PHOTO / "queries_paraphrase.tsv"))
        if target_id in by_id
    ]  # fmt: skip

    shared = Counter(w for ws in caption_words.values() for w in ws)
    mixed = []
    for r in rows:
        candidates = sorted((w for w in caption_words[r["id"]] if shared[w] >= MIXED_MIN_SHARED),
                            key=lambda w: (-shared[w], w))  # fmt: skip
        if candidates:
            mixed.append({"id": f"mixed:{r['id']}", "family": "mixed", "text": candidates[0],
                          "image": f"queries/mixed/{asset_id(r)}.jpg",
                          "relevant": group_relevance(r, by_group), "split": r["split"]})  # fmt: skip
    families["mixed"] = sample(mixed, "mixed")

    near = [
        {"id": f"near:{r['id']}", "family": "near_duplicate", "image": f"queries/near/{asset_id(r)}.jpg",
         "relevant": group_relevance(r, by_group), "split": r["split"]}
        for r in rows
    ]  # fmt: skip
    families["near_duplicate"] = sample(near, "near_duplicate")
    return families


def write(families: dict[str, list[dict[str, Any]]]) -> None:
    OUT.mkdir(exist_ok=True)
    for family, queries in families.items():
        lines = [json.dumps(q, sort_keys=True) for q in queries]
        (OUT / f"{family}.jsonl").write_text("\n".join(lines) + "\n")
        print(f"{family}: {len(queries)} queries ({sum(q['split'] == 'heldout' for q in queries)} held out)")


def query_image(source: Path, kind: str) -> bytes:
    im = rgb_on_white(Image.open(source))
    im.thumbnail((QUERY_IMAGE_SIDE, QUERY_IMAGE_SIDE))
    buf = io.BytesIO()
    augment(im, kind).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def materialise(out: Path, data: Path) -> None:
    """The gallery to ingest (original files, caption sidecars) and the judgements' query images."""
    rows = gallery_rows()
    by_asset = {asset_id(r): r for r in rows}
    gallery = {asset_id(r) for r in rows}
    for stale in (p for p in (out / "gallery").rglob("*") if p.is_file() and p.suffix != ".json"):
        if stale.relative_to(out / "gallery").as_posix() not in gallery:
            stale.unlink()
            stale.with_suffix(".json").unlink(missing_ok=True)
    for r in rows:
        dest = out / "gallery" / asset_id(r)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            dest.write_bytes((data / r["path"]).read_bytes())
        sidecar = {"caption": r["caption"], "license": r["license"], "source": r["source"]}
        dest.with_suffix(".json").write_text(json.dumps(sidecar))
    for family, kinds in (("mixed", ("grey",)), ("near_duplicate", ("half_jpeg40", "rot7_blur"))):
        for n, line in enumerate((OUT / f"{family}.jsonl").read_text().splitlines()):
            q = json.loads(line)
            target = by_asset[q["image"].split("/", 2)[2].removesuffix(".jpg")]
            dest = out / q["image"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(query_image(data / target["path"], kinds[n % len(kinds)]))
    print(f"gallery: {len(rows)} images under {out / 'gallery'}; query images under {out / 'queries'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build")
    m = sub.add_parser("materialise")
    m.add_argument("--out", type=Path, default=Path.home() / ".cache/imagesearch/eval/photo")
    m.add_argument("--data", type=Path, default=DEFAULT_CACHE)
    args = p.parse_args(argv)
    if args.cmd == "build":
        write(build())
    else:
        materialise(args.out, args.data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
