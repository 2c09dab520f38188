"""Build the photo/object evaluation set of issue 15 from open data already fetched by
tools/models/fetch_data.py (`~/.cache/imagesearch/data`, listed in models/demo/manifest.jsonl).

Gallery (every image is a retrieval candidate for every query):
- Tux Paint photo stamps (GPL-2): PNG stamps outside `cartoon/` folders whose 128-px thumbnail has at
  least PHOTO_MIN_COLOURS distinct colours (5 bits per channel) over its opaque pixels: photo cut-outs,
  not flat drawings. Caption = the stamp's English description ("A lion").
- fluent-emoji-3d renders (MIT) of Emojibase groups animals & nature, food & drink, activities and objects,
  with their Emojibase names.
- scikit-image's sample photos (public domain / CC0) with the captions fetch_data.py gives them.

Queries (models/photo/queries_*.tsv, written before any model was run on this set):
- label: one per label group, the caption itself ("a lion");
- paraphrase: hand-written descriptions that avoid the caption's content words (checked here);
- near-duplicate: each gallery image augmented four ways (see `augment`), the original is the target.

Split: by label group (stable hash), TUNE_FRACTION to `tune`, the rest `heldout`. Results are reported on
`heldout`; the gallery is always the whole set.

Usage (service venv, no torch): python -m tools.photo_package.eval_set [--data ~/.cache/imagesearch/data]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

REPO = Path(__file__).resolve().parents[2]
OUT_DIR = REPO / "models" / "photo"
DEMO_MANIFEST = REPO / "models" / "demo" / "manifest.jsonl"
DEFAULT_DATA = Path.home() / ".cache" / "imagesearch" / "data"
PHOTO_MIN_COLOURS = 250
EMOJI_GROUPS = {3: "animals & nature", 4: "food & drink", 6: "activities", 7: "objects"}
TUNE_FRACTION = 0.3
SEED = "photo-eval-v1"
AUGMENTATIONS = ("crop80", "half_jpeg40", "rot7_blur", "grey")
STOP = set(
    "a an the of and or with in on at to for from by its it is are this that as into over under "
    "our your their his her some one two three four five".split()
)


def stable_hash(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode()).digest()[:8], "big")


def split_of(group: str) -> str:
    return "tune" if stable_hash(SEED, group) % 10_000 < TUNE_FRACTION * 10_000 else "heldout"


def content_words(text: str) -> set[str]:
    """Lower-case word stems (plural 's' dropped) without stop words."""
    words = re.findall(r"[a-z]+", text.lower())
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words if w not in STOP}


def label_query(caption: str) -> str:
    """The caption's first clause, lower case ("Jupiter—the largest planet ..." -> "jupiter")."""
    first = re.split(r"[.!?(\u2014;:]", caption, maxsplit=1)[0]
    first = first.replace("\u201c", "").replace("\u201d", "").replace('"', "")
    return " ".join(first.lower().split()) or " ".join(caption.lower().split())


def photo_colours(path: Path) -> int:
    im = Image.open(path).convert("RGBA")
    im.thumbnail((128, 128))
    a = np.asarray(im)
    px = a[..., :3][a[..., 3] > 128]
    return 0 if not len(px) else len(np.unique(px.reshape(-1, 3) // 8, axis=0))


def emoji_groups(data: Path) -> dict[str, int]:
    d = json.loads((data / "x/emojibase/package/en/data.json").read_text())
    out = {}
    for e in d:
        key = "-".join(p for p in e["hexcode"].upper().split("-") if p not in ("FE0F", "FE0E"))
        out[key] = e.get("group")
    return out


def select(data: Path) -> list[dict]:
    recs = [json.loads(line) for line in DEMO_MANIFEST.read_text().splitlines() if line.strip()]
    groups = emoji_groups(data)
    items = []
    for r in recs:
        src, path = r["source"], r["path"]
        keep = False
        if src == "tuxpaint":
            keep = path.endswith(".png") and path.startswith("x/") and "/cartoon/" not in path
            keep = keep and photo_colours(data / path) >= PHOTO_MIN_COLOURS
        elif src == "fluent3d":
            keep = groups.get(r["id"].split(":", 1)[1]) in EMOJI_GROUPS
        elif src == "skimage":
            keep = r["id"] != "skimage:text"  # a page of letters: no object to describe
        if not keep:
            continue
        caption = r["caption"]
        group = " ".join(content_words(caption) and sorted(content_words(caption)))
        items.append(
            {
                "id": r["id"],
                "source": src,
                "path": path,
                "caption": caption,
                "group": group or label_query(caption),
                "license": r["license"],
                "sha256": hashlib.sha256((data / path).read_bytes()).hexdigest(),
                # the clip-art demo model was trained on its manifest's "train" split
                "seen_by_clipart_model": r.get("split") == "train",
            }
        )
    for it in items:
        it["split"] = split_of(it["group"])
    return items


def augment(im: Image.Image, kind: str) -> Image.Image:
    """The four near-duplicate transforms of issue 15, deterministic. Input: RGB."""
    w, h = im.size
    if kind == "crop80":  # central 80 % of each side
        dw, dh = round(w * 0.1), round(h * 0.1)
        return im.crop((dw, dh, w - dw, h - dh))
    if kind == "half_jpeg40":
        small = im.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        small.save(buf, format="JPEG", quality=40)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if kind == "rot7_blur":
        rot = im.rotate(7, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=(255, 255, 255))
        return rot.filter(ImageFilter.GaussianBlur(radius=1.5))
    if kind == "grey":
        return ImageOps.grayscale(im).convert("RGB")
    raise ValueError(kind)


def rgb_on_white(im: Image.Image) -> Image.Image:
    """Flatten transparency onto white (how a person sees a cut-out) before augmenting."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")


def read_queries(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        target, text = line.split("\t", 1)
        rows.append((target.strip(), text.strip()))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--list-captions", action="store_true", help="print id<TAB>caption and exit")
    args = ap.parse_args(argv)

    items = select(args.data)
    if args.list_captions:
        for it in items:
            print(f"{it['id']}\t{it['caption']}\t{it['split']}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    by_id = {it["id"]: it for it in items}
    problems = []
    para_path = args.out / "queries_paraphrase.tsv"
    if para_path.exists():
        for target, text in read_queries(para_path):
            if target not in by_id:
                problems.append(f"paraphrase target not in gallery: {target}")
                continue
            clash = content_words(text) & content_words(by_id[target]["caption"])
            if clash:
                problems.append(f"paraphrase for {target} uses label words {sorted(clash)}: {text}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    with (args.out / "eval_manifest.jsonl").open("w") as f:
        for it in items:
            f.write(json.dumps(it, sort_keys=True) + "\n")
    labels = {}
    for it in items:
        labels.setdefault(it["group"], it)
    with (args.out / "queries_label.tsv").open("w") as f:
        f.write("# one query per label group: the caption of the group's first item (target: that item)\n")
        for it in labels.values():
            f.write(f"{it['id']}\t{label_query(it['caption'])}\n")
    n_split = {s: sum(1 for it in items if it["split"] == s) for s in ("tune", "heldout")}
    by_src = {}
    for it in items:
        by_src[it["source"]] = by_src.get(it["source"], 0) + 1
    print(f"[eval_set] {len(items)} images {by_src}, {len(labels)} label groups, split {n_split}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
