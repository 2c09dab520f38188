"""Regenerate the CLIP reference fixtures used by the parity tests (needs torch + open_clip).

    # any environment with open-clip-torch, torch, torchvision, pillow, numpy, ftfy, regex, e.g.
    /work/venvs/train/bin/python -m tests.encoder.make_reference_fixtures

Writes
- tests/encoder/fixtures/clip_tokenizer_reference.json: texts and OpenCLIP `tokenize()` ids;
- tests/encoder/fixtures/clip_preprocess_reference.json: for every case of `parity_images.CASES`,
  the sha256 (and channel means) of the uint8 pixels OpenCLIP's inference transform produces, recovered
  exactly from its normalised tensor.

The reference code is imported from OpenCLIP, never copied into the project.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import io
import json
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tests.encoder import parity_images

HERE = Path(__file__).resolve().parent

FIXTURES = HERE / "fixtures"
COMMAND = "python -m tests.encoder.make_reference_fixtures  (in an environment with open-clip-torch)"

CURATED_TEXTS = [
    "a photo of a cat",
    "A Red Vintage Car parked by the SEA.",
    "",
    "   ",
    "\t\n  multiple   spaces\tand\nnewlines  ",
    "don't you'll we've I'm she'd they're it's",
    "café naïve résumé Ångström façade",
    "日本語のテキスト 中文文本 한국어 텍스트",
    "emoji 😀🐱🚗 with ZWJ 👩‍👩‍👧 and skin tone 👍🏽 and flags 🇫🇷🇯🇵",
    "&amp; &lt;tag&gt; &quot;quoted&quot; &#39;apos&#39; &amp;amp;lt;",
    "mojibake: The Mona Lisa doesnâ€™t have eyebrows.",
    "<start_of_text> literal special tokens <end_of_text> inside <<end_of_text>>",
    "numbers 1234567890 and 3.14159 and 1,000,000",
    "hyphen-ated snake_case camelCase UPPER lower MiXeD",
    "punctuation!!! ??? ... --- *** @#$%^&*()",
    "Ünïcödé ÀÉÎÕÜ straße ΑΒΓ αβγ Привет мир",
    "combining e\u0301 a\u0308 and zero\u200bwidth\u200djoiner\ufeffbom",
    "control \x00\x01\x1b[31m chars \x7f",
    "x" * 300,
    "word " * 100,
    "the quick brown fox jumps over the lazy dog " * 10,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "a",
    "!",
    "🐱" * 80,
]


def fuzz_texts(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    pools = [
        "abcdefghijklmnopqrstuvwxyz",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789",
        " \t\n\r\u00a0\u2003\u3000\x1c\x1f",
        "'\".,;:!?-_()[]{}<>/\\@#$%^&*+=~`|",
        "éèêëàâäôöûüçñßøåæœÿ",
        "абвгдежзийклмнопрстуфхцчшщыэюя",
        "日本語中文漢字ひらがなカタカナ한국어",
        "😀🐱🚗🌍👍🏽👩‍👩‍👧❤️🇫🇷",
        "\u0301\u0308\u200b\u200d\ufeff",
        "&amp;&lt;&gt;&quot;&#39;&nbsp;",
        "<start_of_text><end_of_text>",
        "'s 't 're 've 'm 'll 'd",
    ]
    return ["".join(rnd.choice(rnd.choice(pools)) for _ in range(rnd.randint(0, 160))) for _ in range(n)]


def make_tokenizer_fixture() -> None:
    from open_clip.tokenizer import tokenize

    texts = CURATED_TEXTS + fuzz_texts(250, seed=20241122)
    ids = tokenize(texts).tolist()
    # Each row ends with its last <end_of_text> (49407) followed by zero padding; id 0 ("!") can occur inside.
    cases = [
        {"text": t, "ids": row[: len(row) - row[::-1].index(49407)]}
        for t, row in zip(texts, ids, strict=True)
    ]
    out = {
        "command": COMMAND,
        "reference": f"open_clip.tokenizer.tokenize (open-clip-torch {md.version('open-clip-torch')})",
        "context_length": 77,
        "cases": cases,
    }
    _write_compact(FIXTURES / "clip_tokenizer_reference.json", out)
    print(f"tokenizer: {len(cases)} texts")


def _write_compact(path: Path, out: dict[str, object]) -> None:
    """JSON with one case per line (reviewable diffs, small file)."""
    head = {k: v for k, v in out.items() if k != "cases"}
    lines = [json.dumps(c, ensure_ascii=False) for c in out["cases"]]  # type: ignore[attr-defined]
    body = json.dumps(head, ensure_ascii=False, indent=1)[:-2]
    path.write_text(body + ',\n "cases": [\n' + ",\n".join(lines) + "\n ]\n}\n")


def _to_8bit_rule(im: Image.Image) -> Image.Image:
    """The documented 16-bit rule (value >> 8), written independently of services/encoder."""
    arr = np.asarray(im).astype(np.int64)
    return Image.fromarray((np.clip(arr, 0, 65535) >> 8).astype(np.uint8))


def make_preprocess_fixture() -> None:
    import torch
    from open_clip.transform import image_transform

    transform = image_transform(224, is_train=False)
    mean = torch.tensor(transform.transforms[-1].mean).view(3, 1, 1)
    std = torch.tensor(transform.transforms[-1].std).view(3, 1, 1)

    def reference_pixels(im: Image.Image) -> tuple[np.ndarray, torch.Tensor]:
        t = transform(im)
        pixels = torch.round((t * std + mean) * 255).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        return pixels, t

    cases = {}
    for name in parity_images.CASES:
        data = parity_images.case_bytes(name)
        im = Image.open(io.BytesIO(data))
        source_mode, source_size = im.mode, list(im.size)
        im.load()
        im = ImageOps.exif_transpose(im)  # our contract applies EXIF orientation first
        entry: dict[str, object] = {"source_mode": source_mode, "source_size": source_size}
        if name in parity_images.WIDE_INT_CASES:
            raw, _ = reference_pixels(im)
            entry["reference_on_raw_mean"] = float(raw.mean())
            im = _to_8bit_rule(im)
        entry["decoded_sha256"] = hashlib.sha256(np.ascontiguousarray(np.asarray(im)).tobytes()).hexdigest()
        pixels, normalised = reference_pixels(im)
        # The uint8 recovery must be exact: renormalising gives the reference tensor back.
        back = (torch.from_numpy(pixels).permute(2, 0, 1).float() / 255 - mean) / std
        assert float((back - normalised).abs().max()) < 1e-5, name
        entry["sha256"] = hashlib.sha256(pixels.tobytes()).hexdigest()
        entry["channel_mean"] = [round(float(v), 4) for v in pixels.reshape(-1, 3).mean(0)]
        cases[name] = entry
    out = {
        "command": COMMAND,
        "reference": (
            f"open_clip.transform.image_transform(224, is_train=False) (open-clip-torch "
            f"{md.version('open-clip-torch')}, torchvision {md.version('torchvision')}, "
            f"Pillow {md.version('pillow')}), applied to the first frame after ImageOps.exif_transpose"
        ),
        "cases": cases,
    }
    (FIXTURES / "clip_preprocess_reference.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"preprocess: {len(cases)} images")


if __name__ == "__main__":
    FIXTURES.mkdir(parents=True, exist_ok=True)
    make_tokenizer_fixture()
    make_preprocess_fixture()
