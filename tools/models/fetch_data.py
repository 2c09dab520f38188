#!/usr/bin/env python3
"""Fetch the open, captioned image data used to train the demo CLIP-style model.

Reproduces the dataset from pinned packages on the package registries only (Debian apt, npm,
PyPI's scikit-image wheel): nothing is scraped from the web and no image is committed to the repo.

    python -m tools.models.fetch_data                      # cache: ~/.cache/imagesearch/data
    python -m tools.models.fetch_data --cache DIR --out models/demo

Steps (each one is skipped when its output is already in the cache):
  1. download the pinned archives (`apt-get download pkg=ver`, `npm pack pkg@ver`) into CACHE/raw
     and check them against the sha256 sums below;
  2. extract them into CACHE/x;
  3. render the SVG-only images (OpenMoji, a few Tux Paint stamps) to PNG into CACHE/rendered;
  4. build one record per image (source, path relative to CACHE, English caption, extra texts,
     license, split group) and write `models/demo/manifest.jsonl`, the seeded held-out split
     (`split_train.txt` / `split_heldout.txt`, ids one per line) and `models/demo/sources.json`.

Needs: apt-get + dpkg-deb (Debian), npm, and in the running Python: pillow, cairosvg (needs
libcairo2), scikit-image (only for its bundled sample photos). See tools/models/README.md.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = Path(os.environ.get("IMAGESEARCH_DATA_CACHE", Path.home() / ".cache/imagesearch/data"))

# name -> (kind, spec, file name, sha256, license)
ARCHIVES = {
    "tuxpaint": (
        "apt",
        "tuxpaint-stamps-default=2022.06.04-1",
        "tuxpaint-stamps-default_2022.06.04-1_all.deb",
        "",
        "GPL-2.0 (Tux Paint stamps, (c) Bill Kendrick and contributors)",
    ),
    "openclipart-png": (
        "apt",
        "openclipart-png=1:0.18+dfsg-19",
        "openclipart-png_1%3a0.18+dfsg-19_all.deb",
        "",
        "Public domain (Open Clip Art Library)",
    ),
    "openclipart-svg": (
        "apt",
        "openclipart-svg=1:0.18+dfsg-19",
        "openclipart-svg_1%3a0.18+dfsg-19_all.deb",
        "",
        "Public domain (Open Clip Art Library)",
    ),
    "fluent3d": (
        "npm",
        "@lobehub/fluent-emoji-3d@1.1.0",
        "lobehub-fluent-emoji-3d-1.1.0.tgz",
        "",
        "MIT (Microsoft Fluent Emoji, packaged by LobeHub)",
    ),
    "emojibase": ("npm", "emojibase-data@17.0.0", "emojibase-data-17.0.0.tgz", "", "MIT (Emojibase)"),
    "openmoji": (
        "npm",
        "openmoji@17.0.0",
        "openmoji-17.0.0.tgz",
        "",
        "CC-BY-SA-4.0 (OpenMoji, openmoji.org)",
    ),
    "google": (
        "npm",
        "emoji-datasource-google@16.0.0",
        "emoji-datasource-google-16.0.0.tgz",
        "",
        "Apache-2.0 (Noto Color Emoji images by Google; emoji-data package MIT)",
    ),
}
# sha256 of the archives as first fetched (2025); a mismatch means the registry served something else.
SHA256 = {
    "tuxpaint": "6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34",
    "openclipart-png": "f07f1545a2970c2cf3fa339bc2405da1a95cf2b1827bfa05bf73eb1c20291c02",
    "openclipart-svg": "989712d90d57dfa3230049f553bb43b76c30ee4d4b8c5f6e106e33f7db5cbdc5",
    "fluent3d": "c1bb7eee7de090205a232518a9ab4adb3df458bfbe8a1f78232991194c8b2e58",
    "emojibase": "d01d0e2ca4e22cb402679532155342c71e2e871f25c32223c013b8b166ebdf5a",
    "openmoji": "55ee7d13485dec86e9f38c1f3a645a13382d33ff97c0cd845ee824b0aef45e68",
    "google": "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438",
}

# short license id per source (the record carries the id; models/demo/sources.json the long text)
LICENSES = {
    "tuxpaint": "GPL-2.0-only",
    "openclipart": "LicenseRef-PublicDomain",
    "fluent3d": "MIT",
    "openmoji": "CC-BY-SA-4.0",
    "google": "Apache-2.0",
    "skimage": "LicenseRef-PublicDomain-or-CC0",
}
LICENSE_TEXT = {
    "tuxpaint": ARCHIVES["tuxpaint"][4],
    "openclipart": ARCHIVES["openclipart-png"][4],
    "fluent3d": ARCHIVES["fluent3d"][4] + "; names/tags: " + ARCHIVES["emojibase"][4],
    "openmoji": ARCHIVES["openmoji"][4],
    "google": ARCHIVES["google"][4] + "; names/tags: " + ARCHIVES["emojibase"][4],
    "skimage": "scikit-image sample data (BSD-3-Clause package); images public domain or CC0, "
    "see the skimage.data docstrings",
}

# scikit-image bundled photos (ship in the wheel, no download) with hand-written captions.
SKIMAGE = {
    "astronaut.png": ("an astronaut in a space suit", ["astronaut", "woman", "portrait", "photo"]),
    "chelsea.png": ("a cat", ["tabby cat", "cat face", "kitten", "pet", "animal", "photo"]),
    "coffee.png": ("a cup of coffee", ["coffee", "cup", "drink", "saucer", "photo"]),
    "rocket.jpg": ("a rocket on the launch pad", ["rocket", "launch", "space", "photo"]),
    "motorcycle_left.png": ("a motorcycle", ["motorbike", "vehicle", "photo"]),
    "hubble_deep_field.jpg": ("galaxies in deep space", ["galaxy", "stars", "space", "hubble", "photo"]),
    "camera.png": ("a man with a camera", ["cameraman", "photographer", "black and white photo"]),
    "coins.png": ("old coins", ["coins", "money", "black and white photo"]),
    "moon.png": ("the surface of the moon", ["moon", "craters", "black and white photo"]),
    "horse.png": ("a horse silhouette", ["horse", "silhouette", "black and white"]),
    "brick.png": ("a brick wall", ["bricks", "wall", "texture"]),
    "grass.png": ("grass", ["grass texture", "lawn"]),
    "gravel.png": ("gravel", ["stones", "gravel texture"]),
    "retina.jpg": ("a retina", ["eye", "retina scan", "medical image"]),
    "text.png": ("text", ["letters", "writing", "words"]),
}

MAX_PIXELS = 16_000_000  # skip the giant openclipart PNGs (10k x 16k px, one is a "bomb")
OPENCLIPART_CAP_PER_DIR = 120  # e.g. shapes/stars has 1,378 near-identical stars
OPENCLIPART_SKIP_DIRS = ("special/", "unsorted/duplicates")
SKIN_TONES = {"1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"}


def log(msg: str) -> None:
    print(f"[fetch_data] {msg}", file=sys.stderr, flush=True)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stable_hash(*parts: str) -> int:
    return int(hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:12], 16)


# ---------------------------------------------------------------------------------------------
# 1-2. download + extract
# ---------------------------------------------------------------------------------------------
def download(cache: Path, verify: bool) -> dict:
    raw = cache / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    info = {}
    for name, (kind, spec, fname, _, lic) in ARCHIVES.items():
        dest = raw / fname
        if not dest.exists():
            log(f"downloading {spec}")
            if kind == "apt":
                subprocess.run(["apt-get", "download", "-q", spec], cwd=raw, check=True)
            else:
                subprocess.run(
                    ["npm", "pack", "--silent", spec], cwd=raw, check=True, stdout=subprocess.DEVNULL
                )
            if not dest.exists():
                raise SystemExit(f"expected {dest} after downloading {spec}")
        digest = sha256_of(dest)
        want = SHA256.get(name)
        if verify and want and want != digest:
            raise SystemExit(f"sha256 mismatch for {fname}: got {digest}, expected {want}")
        info[name] = {"kind": kind, "spec": spec, "file": fname, "sha256": digest, "license": lic}
    return info


def extract(cache: Path) -> None:
    x = cache / "x"
    x.mkdir(parents=True, exist_ok=True)
    for name, (kind, _spec, fname, _, _lic) in ARCHIVES.items():
        dest = x / name
        if (dest / ".done").exists():
            continue
        log(f"extracting {fname}")
        dest.mkdir(parents=True, exist_ok=True)
        if kind == "apt":
            subprocess.run(["dpkg-deb", "-x", str(cache / "raw" / fname), str(dest)], check=True)
        else:
            with tarfile.open(cache / "raw" / fname) as tf:
                tf.extractall(dest, filter="data")
        (dest / ".done").write_text("ok\n")


# ---------------------------------------------------------------------------------------------
# caption helpers
# ---------------------------------------------------------------------------------------------
def clean_text(s: str) -> str:
    s = s.replace("_", " ").replace("\n", " ")
    s = re.sub(r"\s+", " ", s).strip()
    return s


def strip_period(s: str) -> str:
    s = s.strip()
    while s.endswith((".", "!")):
        s = s[:-1].rstrip()
    return s


def dir_tags(rel_dir: str, stop: set[str]) -> list[str]:
    out = []
    for part in rel_dir.split("/"):
        part = clean_text(part.replace("-", " "))
        if part and part.lower() not in stop and not re.fullmatch(r"\d+\w*", part):
            out.append(part.lower())
    return out


def group_key(caption: str) -> str:
    """Concept key for the split: all images of one concept (e.g. "A lion", "lion") stay together."""
    c = re.sub(r"[^\w\s]", " ", caption.lower())
    c = re.sub(r"^(a|an|the)\s+", "", re.sub(r"\s+", " ", c).strip())
    return c


def render_svg(svg: Path, png: Path, size: int = 256) -> bool:
    import cairosvg

    if png.exists():
        return True
    png.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            cairosvg.svg2png(url=str(svg), write_to=str(png), output_width=size, output_height=size)
        except Exception:
            # a few SVGs declare XML entities: retry with entity expansion (local, packaged files)
            cairosvg.svg2png(
                url=str(svg), write_to=str(png), output_width=size, output_height=size, unsafe=True
            )
        return True
    except Exception as e:  # a few SVGs are broken
        log(f"cannot render {svg}: {e}")
        return False


# ---------------------------------------------------------------------------------------------
# 3-4. records per source
# ---------------------------------------------------------------------------------------------
def records_tuxpaint(cache: Path) -> list[dict]:
    root = cache / "x/tuxpaint/usr/share/tuxpaint/stamps"
    stop = {"00 symbols", "cartoon", "photo", "misc", "other"}
    recs = []
    for txt in sorted(root.rglob("*.txt")):
        lines = txt.read_text(encoding="utf-8", errors="replace").splitlines()
        if not lines or not lines[0].strip():
            continue
        caption = strip_period(clean_text(lines[0]))
        base = txt.with_suffix("")
        png, svg = base.with_suffix(".png"), base.with_suffix(".svg")
        if png.exists():
            path = png
        elif svg.exists():
            path = cache / "rendered/tuxpaint" / (str(base.relative_to(root)) + ".png")
            if not render_svg(svg, path, 512):
                continue
        else:
            continue
        rel = base.relative_to(root)
        name = clean_text(re.sub(r"[-_]?\d+$", "", rel.name).replace("-", " "))
        tags = [name, *dir_tags(str(rel.parent), stop)]
        recs.append(
            {
                "id": f"tuxpaint:{rel}",
                "source": "tuxpaint",
                "path": str(path.relative_to(cache)),
                "caption": caption,
                "texts": tags,
                "style": "drawing",
                "license": LICENSES["tuxpaint"],
                "group": group_key(caption),
            }
        )
    return recs


GENERIC_TITLE = re.compile(
    r"(collection|theme|icon ?set|iconset|icons|cliparts|sibmission|submission|symbol.signs|"
    r"road signs|map symbols|rpg map|^card$|^people$|^advertising$|^gramastar$|^sallite$)",
    re.I,
)


def _openclipart_meta(svg_text: str) -> tuple[str, list[str], str]:
    meta = svg_text.split("</metadata>", 1)[0]
    titles = re.findall(r"<dc:title>(.*?)</dc:title>", meta, re.S)
    title = clean_text(titles[0]) if titles else ""
    kws = [clean_text(k) for k in re.findall(r"<rdf:li>(.*?)</rdf:li>", meta, re.S)]
    creator = ""
    m = re.search(r"<dc:creator>.*?<dc:title>(.*?)</dc:title>", meta, re.S)
    if m:
        creator = clean_text(m.group(1))
    return title, kws, creator


def _name_from_file(stem: str, creator: str) -> str:
    cwords = [w.lower() for w in re.split(r"[\s._-]+", creator) if len(w) >= 2]
    toks = [t for t in re.split(r"[_\s]+", stem) if t]
    out = []
    for t in toks:
        tl = t.lower().strip(".")
        if re.fullmatch(r"\d+|r|s|[a-z]?\d+", tl):
            continue
        if any(w.startswith(tl) for w in cwords) and len(tl) >= 2:
            continue
        out.append(re.sub(r"\d+$", "", t))
    name = clean_text(" ".join(out).replace("-", " "))
    return name


def records_openclipart(cache: Path) -> list[dict]:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # we only read headers here and skip the big ones ourselves
    proot = cache / "x/openclipart-png/usr/share/openclipart/png"
    sroot = cache / "x/openclipart-svg/usr/share/openclipart/svg"
    stop = {"unsorted", "misc", "special", "other", "various"}
    junk_kw = {
        "",
        "unsorted",
        "hash",
        "symbol",
        "icon",
        "icons",
        "theme",
        "clip art",
        "clipart",
        "image",
        "media",
        "png",
        "svg",
        "public domain",
        "externalsource",
    }
    items = []
    title_count: collections.Counter = collections.Counter()
    for png in sorted(proot.rglob("*.png")):
        rel = png.relative_to(proot).with_suffix("")
        if str(rel).startswith(OPENCLIPART_SKIP_DIRS):
            continue
        svg = sroot / (str(rel) + ".svg")
        title, kws, creator = ("", [], "")
        if svg.exists():
            title, kws, creator = _openclipart_meta(svg.read_text(encoding="utf-8", errors="replace")[:60000])
        title = re.sub(r"^clipart by [^-]+-\s*", "", title, flags=re.I)
        items.append((png, rel, title, kws, creator))
        title_count[title.lower()] += 1
    # cap very large directories deterministically
    by_dir = collections.defaultdict(list)
    for it in items:
        by_dir[str(it[1].parent)].append(it)
    kept = []
    for _d, its in sorted(by_dir.items()):
        its = sorted(its, key=lambda it: stable_hash("oc-cap", str(it[1])))[:OPENCLIPART_CAP_PER_DIR]
        kept.extend(sorted(its, key=lambda it: str(it[1])))
    recs = []
    skipped_big = 0
    for png, rel, title, kws, creator in kept:
        try:
            with Image.open(png) as im:
                w, h = im.size
        except Exception:
            continue
        if w * h > MAX_PIXELS:
            skipped_big += 1
            continue
        fname = _name_from_file(rel.name, creator)
        use_title = (
            title
            and title_count[title.lower()] <= 3
            and not GENERIC_TITLE.search(title)
            and not re.fullmatch(r"[\W\d_]*", title)
        )
        caption = clean_text(title if use_title else fname)
        if not re.search(r"[a-zA-Z]{3,}", caption):
            continue
        dtags = dir_tags(str(rel.parent), stop)
        tags = []
        for k in [fname, *kws, *dtags]:
            k = clean_text(k.replace("-", " ")).lower()
            if k and k not in junk_kw and k != caption.lower() and k not in tags and not k.isdigit():
                tags.append(k)
        recs.append(
            {
                "id": f"openclipart:{rel}",
                "source": "openclipart",
                "path": str(png.relative_to(cache)),
                "caption": caption,
                "texts": tags[:8],
                "style": "clipart",
                "license": LICENSES["openclipart"],
                "author": creator,
                "group": group_key(caption),
            }
        )
    log(f"openclipart: kept {len(recs)}, skipped {skipped_big} images over {MAX_PIXELS} px")
    return recs


def _norm_hex(h: str) -> str:
    parts = [p.upper() for p in re.split(r"[-_ ]", h) if p and p.upper() not in ("FE0F", "FE0E")]
    return "-".join(parts)


def emoji_table(cache: Path) -> dict[str, dict]:
    """hexcode (FE0F stripped) -> {label, tags} from Emojibase (en) + OpenMoji annotations."""
    table: dict[str, dict] = {}
    d = json.loads((cache / "x/emojibase/package/en/data.json").read_text())
    for e in d:
        table[_norm_hex(e["hexcode"])] = {
            "label": e["label"],
            "tags": e.get("tags", []),
            "group": e.get("group"),
        }
    o = json.loads((cache / "x/openmoji/package/data/openmoji.json").read_text())
    for e in o:
        k = _norm_hex(e["hexcode"])
        tags = [
            t.strip() for t in (e.get("tags", "") + "," + e.get("openmoji_tags", "")).split(",") if t.strip()
        ]
        if k not in table:
            table[k] = {"label": e.get("annotation") or "", "tags": tags, "group": e.get("group")}
        else:
            for t in tags:
                if t not in table[k]["tags"]:
                    table[k]["tags"].append(t)
    return table


def _emoji_ok(key: str) -> bool:
    parts = key.split("-")
    if SKIN_TONES & set(parts):
        return False
    if all("1F1E6" <= p <= "1F1FF" for p in parts) and len(parts) == 1:  # lone regional indicators
        return False
    return True


def _emoji_caption(label: str) -> str:
    label = clean_text(label)
    if label.lower().startswith("flag:"):
        return "flag of " + label.split(":", 1)[1].strip()
    if label.lower().startswith("keycap:"):
        return "keycap " + label.split(":", 1)[1].strip()
    return label.replace(":", "")


def records_emoji(cache: Path) -> list[dict]:
    table = emoji_table(cache)
    recs = []

    def add(source, key, path, style, author=""):
        if not _emoji_ok(key):
            return
        meta = table.get(key)
        if not meta or not meta["label"]:
            return
        if meta.get("group") in (2, "component"):  # skin tone / hair components
            return
        cap = _emoji_caption(meta["label"])
        tags = [t for t in meta["tags"] if t.lower() != cap.lower()][:8]
        r = {
            "id": f"{source}:{key}",
            "source": source,
            "path": str(path.relative_to(cache)),
            "caption": cap,
            "texts": tags,
            "style": style,
            "license": LICENSES[source],
            "group": group_key(cap),
        }
        if author:
            r["author"] = author
        recs.append(r)

    for p in sorted((cache / "x/fluent3d/package/assets").glob("*.webp")):
        add("fluent3d", _norm_hex(p.stem), p, "3d emoji")
    for p in sorted((cache / "x/google/package/img/google/64").glob("*.png")):
        add("google", _norm_hex(p.stem), p, "emoji")
    o = json.loads((cache / "x/openmoji/package/data/openmoji.json").read_text())
    authors = {e["hexcode"]: e.get("openmoji_author", "") for e in o}
    for svg in sorted((cache / "x/openmoji/package/color/svg").glob("*.svg")):
        key = _norm_hex(svg.stem)
        if not _emoji_ok(key) or key not in table:
            continue
        out = cache / "rendered/openmoji" / (svg.stem + ".png")
        if render_svg(svg, out, 256):
            add("openmoji", key, out, "flat emoji icon", authors.get(svg.stem, ""))
    return recs


def records_skimage(cache: Path) -> list[dict]:
    try:
        import skimage
    except ImportError:
        log("scikit-image not installed: skipping its sample photos")
        return []
    from PIL import Image

    ddir = Path(skimage.__file__).parent / "data"
    out = cache / "rendered/skimage"
    out.mkdir(parents=True, exist_ok=True)
    recs = []
    for fname, (cap, tags) in sorted(SKIMAGE.items()):
        src = ddir / fname
        if not src.exists():
            continue
        dst = out / (Path(fname).stem + ".png")
        if not dst.exists():
            Image.open(src).convert("RGB").save(dst)
        recs.append(
            {
                "id": f"skimage:{Path(fname).stem}",
                "source": "skimage",
                "path": str(dst.relative_to(cache)),
                "caption": cap,
                "texts": tags,
                "style": "photo",
                "license": LICENSES["skimage"],
                "group": group_key(cap),
            }
        )
    return recs


# ---------------------------------------------------------------------------------------------
def split_of(group: str, seed: int, heldout_frac: float) -> str:
    return "heldout" if stable_hash(str(seed), group) % 10_000 < heldout_frac * 10_000 else "train"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--out", type=Path, default=REPO / "models/demo")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--heldout-frac", type=float, default=0.10)
    ap.add_argument("--no-verify", action="store_true", help="do not check archive sha256 sums")
    args = ap.parse_args(argv)

    cache = args.cache.expanduser().resolve()
    info = download(cache, verify=not args.no_verify)
    extract(cache)

    recs = []
    for fn in (records_tuxpaint, records_openclipart, records_emoji, records_skimage):
        r = fn(cache)
        log(f"{fn.__name__}: {len(r)} records")
        recs.extend(r)
    seen = set()
    uniq = []
    for r in recs:
        if r["id"] in seen:
            continue
        seen.add(r["id"])
        r["split"] = split_of(r["group"], args.seed, args.heldout_frac)
        uniq.append(r)
    recs = sorted(uniq, key=lambda r: r["id"])

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "manifest.jsonl", "w", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
    for split in ("train", "heldout"):
        ids = [r["id"] for r in recs if r["split"] == split]
        (args.out / f"split_{split}.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    counts = collections.Counter((r["source"], r["split"]) for r in recs)
    summary = {
        "archives": info,
        "seed": args.seed,
        "heldout_frac": args.heldout_frac,
        "licenses": LICENSE_TEXT,
        "split_rule": "heldout iff int(sha1(f'{seed}\\x1f{group}')[:12],16) % 10000 < frac*10000; "
        "group = caption lower-cased, punctuation and a leading article removed "
        "(all renderings of one emoji, and 'A lion'/'lion', share a group)",
        "counts": {f"{s}/{sp}": n for (s, sp), n in sorted(counts.items())},
        "total": len(recs),
        "train": sum(r["split"] == "train" for r in recs),
        "heldout": sum(r["split"] == "heldout" for r in recs),
    }
    (args.out / "sources.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {len(recs)} records ({summary['train']} train / {summary['heldout']} held-out) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
