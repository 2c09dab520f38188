"""Deterministic test images covering the modes and shapes CLIP's preprocessing must handle.

Shared by the parity tests and by `make_reference_fixtures.py` (which runs the reference, OpenCLIP's
transform, on the same bytes). Needs only numpy and Pillow. Lossless formats are used except where the
case is about JPEG itself (EXIF orientation, CMYK), so the decoded pixels do not depend on the codec build.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image


def _scene(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A smooth colour scene with edges and fine texture (uint8 HxWx3), so resampling differences show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 128 + 100 * np.sin(x / max(w, 1) * 6.0 + seed)
    g = 128 + 100 * np.cos(y / max(h, 1) * 5.0)
    b = 255 * ((x + y) / max(w + h, 1))
    img = np.stack([r, g, b], axis=-1)
    cx, cy, rad = w * 0.6, h * 0.4, max(2.0, min(w, h) * 0.25)
    mask = (x - cx) ** 2 + (y - cy) ** 2 < rad**2
    img[mask] = [250, 30, 40]
    img[(x.astype(int) // 7 + y.astype(int) // 7) % 2 == 0] *= 0.9
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _save(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_rgb16(arr: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one), encoded by hand."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def _exif_jpeg(orientation: int) -> bytes:
    im = Image.fromarray(_scene(400, 300, seed=orientation))
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    return _save(im, "JPEG", quality=92, exif=exif.tobytes())


def _palette(transparency: bool) -> bytes:
    im = Image.fromarray(_scene(320, 240, seed=3)).quantize(colors=64)
    if transparency:
        return _save(im, "PNG", transparency=0)
    return _save(im, "PNG")


def _animated(fmt: str) -> bytes:
    frames = [Image.fromarray(_scene(200, 150, seed=s)) for s in (11, 12, 13)]
    kw: dict[str, object] = {"save_all": True, "append_images": frames[1:], "duration": 100, "loop": 0}
    if fmt == "WEBP":
        kw["lossless"] = True
    return _save(frames[0], fmt, **kw)


def _rgba() -> bytes:
    rgb = _scene(320, 240, seed=4)
    alpha = np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))
    return _save(Image.fromarray(np.dstack([rgb, alpha])), "PNG")


def _la() -> bytes:
    gray = _scene(300, 200, seed=5)[..., 1]
    alpha = np.tile(np.linspace(255, 0, 200, dtype=np.uint8)[:, None], (1, 300))
    return _save(Image.fromarray(np.dstack([gray, alpha])), "PNG")


def _gray16(fmt: str) -> bytes:
    g = _scene(300, 220, seed=6)[..., 0].astype(np.uint16) * 257 + 100
    return _save(Image.fromarray(g), fmt)


def _cmyk(fmt: str) -> bytes:
    im = Image.fromarray(_scene(360, 240, seed=7)).convert("CMYK")
    return _save(im, fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def _rgb(w: int, h: int, fmt: str, seed: int = 1, **kw: object) -> Callable[[], bytes]:
    return lambda: _save(Image.fromarray(_scene(w, h, seed)), fmt, **kw)


# name -> bytes factory. The reference fixture is keyed by these names.
CASES: dict[str, Callable[[], bytes]] = {
    "rgb_landscape_png": _rgb(640, 480, "PNG"),
    "rgb_portrait_png": _rgb(480, 640, "PNG", seed=2),
    "rgb_exact_224_png": _rgb(224, 224, "PNG"),
    "rgb_odd_225x301_png": _rgb(225, 301, "PNG"),  # centre-crop offsets round half to even
    "rgb_227x224_bmp": _rgb(227, 224, "BMP"),
    "rgb_webp_lossless": _rgb(500, 350, "WEBP", lossless=True),
    "rgb_tiff": _rgb(300, 420, "TIFF"),
    "rgb_jpeg": _rgb(640, 427, "JPEG", quality=90),
    "grayscale_L_png": lambda: _save(Image.fromarray(_scene(300, 400, seed=8)[..., 2]), "PNG"),
    "bilevel_1_png": lambda: _save(Image.fromarray(_scene(310, 230, seed=9)[..., 0] > 128), "PNG"),
    "rgba_png": _rgba,
    "la_png": _la,
    "palette_png": lambda: _palette(False),
    "palette_transparency_png": lambda: _palette(True),
    "palette_gif": lambda: _save(Image.fromarray(_scene(260, 260, seed=10)).quantize(colors=32), "GIF"),
    "animated_gif": lambda: _animated("GIF"),
    "animated_webp": lambda: _animated("WEBP"),
    "cmyk_jpeg": lambda: _cmyk("JPEG"),
    "cmyk_tiff": lambda: _cmyk("TIFF"),
    "gray16_png": lambda: _gray16("PNG"),
    "gray16_tiff": lambda: _gray16("TIFF"),
    "rgb48_png": lambda: _png_rgb16(_scene(280, 210, seed=14).astype(np.uint16) * 257),
    "exif_orientation_3_jpeg": lambda: _exif_jpeg(3),
    "exif_orientation_6_jpeg": lambda: _exif_jpeg(6),
    "exif_orientation_8_jpeg": lambda: _exif_jpeg(8),
    "tiny_1x1_png": _rgb(1, 1, "PNG"),
    "tiny_3x2_png": _rgb(3, 2, "PNG"),
    "tiny_17x9_png": _rgb(17, 9, "PNG"),
    "wide_2000x40_png": _rgb(2000, 40, "PNG"),
    "tall_30x1500_png": _rgb(30, 1500, "PNG"),
    "wide_64to1_14336x224_png": _rgb(14336, 224, "PNG"),  # the widest the exact path resizes
}

# Cases whose pixels come from the documented 16-bit rule, not from the reference on the raw image.
WIDE_INT_CASES = ("gray16_png", "gray16_tiff")


def case_bytes(name: str) -> bytes:
    return CASES[name]()
