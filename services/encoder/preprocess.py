"""Image bytes -> the image tower's input: uint8 [size, size, 3] RGB, as the model's contract says.

CLIP's reference is OpenCLIP's inference transform (`image_transform(224, is_train=False)`, OpenAI's
`_transform`): torchvision `Resize(224, BICUBIC)` (shortest side to 224, long side truncated),
`CenterCrop(224)` (offsets rounded half-to-even), `convert("RGB")`, `ToTensor`, `Normalize(mean, std)`,
applied to the PIL image as decoded. We make the same Pillow calls in the same order and send the uint8
pixels; `ToTensor` and `Normalize` are folded into the model graph.

Colour handling is part of each model's contract (package.json `preprocessing.image.color_mode`):
- "clip_reference": exactly the reference: resize and crop in the decoded mode, then convert("RGB")
  (transparency is dropped, exposing whatever colour transparent pixels hold; palette images are
  resized nearest-neighbour, as Pillow does for mode P). For models trained with CLIP's pipeline.
- "rgb_on_white": convert to RGB first, compositing transparent pixels over white, then the
  reference's resize and crop. The demo model was trained this way (tools/models/clip_preprocess.py),
  on clip-art and emoji whose transparent background a person sees as white.
`tests/encoder/test_preprocess.py` checks both bit for bit: the first against OpenCLIP's transform, the
second against the training pipeline, on grayscale, RGBA, palette, CMYK, 16-bit, EXIF-rotated, animated,
tiny and extreme-aspect images.

Before either (the reference takes an already-opened image):
- only the first frame of an animation is used;
- EXIF orientation is applied (`ImageOps.exif_transpose`), so phone photos are upright;
- integer images wider than 8 bits (Pillow modes "I;16*" and "I") are scaled to 8 bits (value >> 8).
  A deliberate deviation: `convert("RGB")` clips them at 255, which turns a typical 16-bit image white
  (see the fixture's `reference_on_raw_mean`).
And one bound the reference does not have: when the resized long side would exceed
`EXACT_RESIZE_MAX_LONG_SIDE` (aspect ratio above 64:1), only the centre square is resampled (Pillow's
`box`), which keeps memory bounded (a 40000x1 strip would otherwise become 8960000x224) and differs from
the reference by at most a few units on a few pixels.

The pixel cap is checked on the header's dimensions, before any pixel is decoded.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

import numpy as np
import structlog
from PIL import Image, ImageOps, UnidentifiedImageError

from services.common.errors import InvalidArgument, ResourceExhausted

log = structlog.get_logger("encoder.preprocess")

# Pillow plugin names; MPO is the multi-picture JPEG many cameras write. Image.init() registers every
# plugin up front (Image.open(formats=...) looks the names up in the registry).
Image.init()
ALLOWED_FORMATS = tuple(f for f in ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF") if f in Image.OPEN)
ALLOWED_FORMATS_TEXT = "JPEG, PNG, WebP, GIF, BMP or TIFF"
# Resized long side (in pixels) up to which the reference's full resize is done exactly: 64 x 224.
EXACT_RESIZE_MAX_LONG_SIDE = 64 * 224
# Pillow modes holding more than 8 bits per sample as integers.
_WIDE_INT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")

# Our own cap (checked on the header) replaces Pillow's decompression-bomb warning; Pillow still raises
# DecompressionBombError above twice its own limit, which is mapped to the same status. Set once here:
# warnings.catch_warnings() is not safe in the decoding threads.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# Signatures of formats we do not decode, to say what was sent.
_OTHER_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"%PDF", 0, "PDF"),
    (b"8BPS", 0, "Photoshop PSD"),
    (b"<svg", 0, "SVG"),
    (b"<?xml", 0, "XML/SVG"),
    (b"ftypheic", 4, "HEIC"),
    (b"ftypheix", 4, "HEIC"),
    (b"ftypmif1", 4, "HEIF"),
    (b"ftypavif", 4, "AVIF"),
    (b"\x00\x00\x01\x00", 0, "ICO"),
    (b"\xff\x0a", 0, "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", 0, "JPEG XL"),
    (b"qoif", 0, "QOI"),
)


COLOR_MODES = {
    "clip_reference": "resize and crop in the decoded mode, then convert('RGB') (CLIP's reference)",
    "rgb_on_white": "convert to RGB first, transparency composited over white, then resize and crop",
}
_COMMON_STEPS = "first frame; EXIF orientation applied; >8-bit integer samples scaled to 8 bits (>>8); "


@dataclass(frozen=True)
class ImagePreprocessing:
    """The image half of a model's preprocessing contract (versioned with the model)."""

    size: int = 224
    resize_mode: str = "shortest_side_center_crop"
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    color_mode: str = "clip_reference"

    @property
    def color_conversion(self) -> str:
        return f"{self.color_mode}: {_COMMON_STEPS}{COLOR_MODES[self.color_mode]}"


def _describe_unknown(data: bytes) -> str:
    head = data[:32]
    for sig, offset, name in _OTHER_SIGNATURES:
        if head[offset : offset + len(sig)] == sig:
            return f" (looks like {name})"
    return ""


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "RGBa", "La", "PA") or (im.mode == "P" and "transparency" in im.info)


def _rgb_on_white(im: Image.Image) -> Image.Image:
    if _has_alpha(im):
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return im.convert("RGB")


def _to_8bit(im: Image.Image) -> Image.Image:
    if im.mode not in _WIDE_INT_MODES:
        return im
    arr = np.asarray(im)
    return Image.fromarray((np.clip(arr, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8))


def resize_center_crop(im: Image.Image, size: int) -> Image.Image:
    """torchvision Resize(size, BICUBIC) + CenterCrop(size) on a PIL image (same Pillow calls)."""
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    if new_long <= EXACT_RESIZE_MAX_LONG_SIDE:
        if (new_w, new_h) != (w, h):
            im = im.resize((new_w, new_h), Image.Resampling.BICUBIC)
        return im.crop((left, top, left + size, top + size))
    # Resample only the source region that lands in the crop (see module docstring).
    sx, sy = w / new_w, h / new_h
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return im.resize((size, size), Image.Resampling.BICUBIC, box=box)


def decode_image(data: bytes, size: int, max_pixels: int, color_mode: str = "clip_reference") -> np.ndarray:
    """Encoded image bytes -> uint8 [size, size, 3] RGB pixels.

    Raises InvalidArgument (empty, corrupt, unsupported format) or ResourceExhausted (above the pixel
    cap), with a message that says which.
    """
    if not data:
        raise InvalidArgument("image data is empty (0 bytes)")
    try:
        opened = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:  # Pillow's own limit (2x its MAX_IMAGE_PIXELS) hit first
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size_text = f"{found.group(1)} pixels" if found else "too large"
        raise ResourceExhausted(
            f"image is {size_text} (declared in its header), above the {max_pixels}-pixel cap; "
            "downscale it first"
        ) from None
    except UnidentifiedImageError:
        raise InvalidArgument(
            f"unsupported or unrecognised image format{_describe_unknown(data)}; "
            f"send {ALLOWED_FORMATS_TEXT} ({len(data)} bytes received)"
        ) from None
    except Exception as exc:  # Pillow raises many types for malformed headers
        # Pillow's own words (exception types, its internals) stay in the log: the caller is told
        # what to do about it.
        log.info("image header unreadable", size=len(data), error=repr(exc))
        raise InvalidArgument(
            f"image header is corrupt or unreadable ({len(data)} bytes received); "
            f"send a complete {ALLOWED_FORMATS_TEXT} file"
        ) from None

    fmt = opened.format or "image"
    w, h = opened.size
    if w <= 0 or h <= 0:
        raise InvalidArgument(f"{fmt} has invalid dimensions {w}x{h}")
    if w * h > max_pixels:
        raise ResourceExhausted(
            f"{fmt} is {w}x{h} = {w * h} pixels, above the {max_pixels}-pixel cap; downscale it first"
        )
    try:
        opened.load()  # the first frame of an animation only
    except MemoryError:
        raise ResourceExhausted(f"not enough memory to decode this {w}x{h} {fmt}") from None
    except Exception as exc:
        log.info("image data unreadable", format=fmt, size=len(data), error=repr(exc))
        raise InvalidArgument(
            f"{fmt} data is corrupt or truncated ({len(data)} bytes received); "
            "send the complete file (re-encode it if it was damaged)"
        ) from None
    im: Image.Image = opened
    try:
        transposed = ImageOps.exif_transpose(opened)
        if transposed is not None:
            im = transposed
    except Exception:  # unreadable EXIF metadata: the pixels are fine, keep them as stored
        pass
    try:
        im = _to_8bit(im)
        if color_mode == "rgb_on_white":
            im = resize_center_crop(_rgb_on_white(im), size)
        else:
            im = resize_center_crop(im, size).convert("RGB")
        pixels = np.asarray(im, dtype=np.uint8)
    except MemoryError:
        raise ResourceExhausted(f"not enough memory to resize this {w}x{h} {fmt}") from None
    except Exception as exc:
        log.info("image not convertible to RGB", format=fmt, mode=im.mode, error=repr(exc))
        raise InvalidArgument(
            f"{fmt} ({w}x{h}) has a pixel format that cannot be converted to RGB; "
            "re-encode it as 8-bit RGB or grayscale"
        ) from None
    return pixels
