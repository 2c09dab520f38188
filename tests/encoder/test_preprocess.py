"""Image preprocessing: bit-exact parity with CLIP's reference and with the demo model's training
pipeline, and a precise error for every kind of bad image."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from services.common.errors import InvalidArgument, ResourceExhausted
from services.encoder.preprocess import EXACT_RESIZE_MAX_LONG_SIDE, _to_8bit, decode_image, resize_center_crop
from tests.encoder import parity_images

REPO = Path(__file__).resolve().parents[2]
REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "clip_preprocess_reference.json").read_text())
CAP = 40_000_000


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _opened(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return ImageOps.exif_transpose(im)


@pytest.mark.parametrize("name", sorted(parity_images.CASES))
def test_clip_reference_mode_is_identical_to_open_clip(name: str) -> None:
    expected = REFERENCE["cases"][name]
    data = parity_images.case_bytes(name)
    source = _opened(data)
    if name in parity_images.WIDE_INT_CASES:
        source = _to_8bit(source)
    # The fixture was made from these very pixels (else the generator or the decoder changed).
    assert (
        _sha(np.asarray(source)) == expected["decoded_sha256"]
    ), f"{name}: test image differs from the one the reference saw; rerun {REFERENCE['command']}"
    pixels = decode_image(data, 224, CAP, "clip_reference")
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
    channel_mean = [round(float(v), 4) for v in pixels.reshape(-1, 3).mean(0)]
    assert _sha(pixels) == expected["sha256"], f"{name}: means {channel_mean} vs {expected['channel_mean']}"


def test_reference_whitens_16_bit_images_which_is_why_they_are_scaled() -> None:
    for name in parity_images.WIDE_INT_CASES:
        case = REFERENCE["cases"][name]
        assert case["source_mode"] == "I;16"
        assert case["reference_on_raw_mean"] > 250  # convert("RGB") clipped the 16-bit values
        assert 100 < np.mean(case["channel_mean"]) < 200  # ours keeps the picture


@pytest.mark.parametrize("name", sorted(parity_images.CASES))
def test_rgb_on_white_mode_is_identical_to_the_training_pipeline(name: str) -> None:
    from tools.models import clip_preprocess  # the demo model's training-time preprocessing

    data = parity_images.case_bytes(name)
    source = _opened(data)
    if name in parity_images.WIDE_INT_CASES:
        source = _to_8bit(source)
    assert np.array_equal(decode_image(data, 224, CAP, "rgb_on_white"), clip_preprocess.preprocess(source))
    if hasattr(clip_preprocess, "reference"):  # the trainer's copy of CLIP's order agrees too
        assert np.array_equal(
            decode_image(data, 224, CAP, "clip_reference"), clip_preprocess.reference(source)
        )


def test_modes_differ_where_transparency_is() -> None:
    data = parity_images.case_bytes("rgba_png")
    ref = decode_image(data, 224, CAP, "clip_reference")
    white = decode_image(data, 224, CAP, "rgb_on_white")
    # Column 0 of the source is fully transparent (alpha ramps left to right).
    assert white[:, 0].mean() > ref[:, 0].mean() + 50
    assert white[:, 0].min() > 200


def test_animated_images_use_the_first_frame() -> None:
    for name in ("animated_gif", "animated_webp"):
        data = parity_images.case_bytes(name)
        first = Image.open(io.BytesIO(data))
        first.load()
        expected = np.asarray(resize_center_crop(first, 224).convert("RGB"))
        assert np.array_equal(decode_image(data, 224, CAP), expected)
        first.seek(1)
        second = np.asarray(resize_center_crop(first.convert("RGB"), 224))
        assert not np.array_equal(expected, second)  # the frames do differ


def test_exif_orientation_is_applied() -> None:
    upright = decode_image(parity_images.case_bytes("exif_orientation_6_jpeg"), 224, CAP)
    stored = Image.open(io.BytesIO(parity_images.case_bytes("exif_orientation_6_jpeg")))
    assert stored.size == (400, 300)  # stored landscape, displayed portrait
    as_stored = np.asarray(resize_center_crop(stored.convert("RGB"), 224))
    assert not np.array_equal(upright, as_stored)


def test_beyond_64_to_1_only_the_centre_is_resampled_and_stays_close() -> None:
    im = Image.fromarray(parity_images._scene(100 * 10, 10, seed=3))  # resized long side 22400 > 14336
    assert 224 * 100 > EXACT_RESIZE_MAX_LONG_SIDE
    buf = io.BytesIO()
    im.save(buf, "PNG")
    ours = decode_image(buf.getvalue(), 224, CAP).astype(int)
    full = np.asarray(im.resize((22400, 224), Image.Resampling.BICUBIC).crop((11088, 0, 11312, 224))).astype(
        int
    )
    diff = np.abs(ours - full)
    assert diff.max() <= 3 and (diff > 0).mean() < 0.01


def test_extreme_strip_within_the_cap_is_bounded() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (200_000, 1), (10, 200, 30)).save(buf, "PNG")  # would resize to 44.8M x 224
    pixels = decode_image(buf.getvalue(), 224, CAP)
    assert pixels.shape == (224, 224, 3) and (pixels == [10, 200, 30]).all()


# ---- bad images -----------------------------------------------------------------------------------


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (the pixel data never needs to be read)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))


def _gif_header(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b"\x2c" + b"\x00" * 9 + b"\x3b"


def _bomb_png() -> bytes:
    """A real decompression bomb: 10000 x 10000 black pixels (100 Mpx) in ~100 KB."""
    row = b"\x00" + b"\x00" * 10000
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(10000)) + comp.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 10000, 10000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "error", "fragment"),
    [
        (b"", InvalidArgument, "empty (0 bytes)"),
        (b"this is not an image", InvalidArgument, "unsupported or unrecognised image format"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", InvalidArgument, "looks like PDF"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', InvalidArgument, "looks like SVG"),
        (b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00", InvalidArgument, "looks like HEIC"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00", InvalidArgument, "looks like AVIF"),
        (b"8BPS\x00\x01" + b"\x00" * 40, InvalidArgument, "looks like Photoshop PSD"),
        (_png_header_only(50_000, 50_000), ResourceExhausted, "2500000000 pixels (declared in its header)"),
        (_png_header_only(8000, 6000), ResourceExhausted, "PNG is 8000x6000 = 48000000 pixels, above the"),
        (_gif_header(65_535, 65_535), ResourceExhausted, "above the 40000000-pixel cap"),
        (_bomb_png(), ResourceExhausted, "10000x10000 = 100000000 pixels"),
    ],
    ids=[
        "zero-bytes",
        "garbage",
        "pdf",
        "svg",
        "heic",
        "avif",
        "psd",
        "huge-png",
        "big-png",
        "huge-gif",
        "bomb",
    ],
)
def test_bad_images_get_a_precise_error(data: bytes, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error) as info:
        decode_image(data, 224, CAP)
    assert fragment in str(info.value)


def test_truncated_and_corrupt_files_are_invalid_argument() -> None:
    jpeg = parity_images.case_bytes("rgb_jpeg")
    png = parity_images.case_bytes("rgb_landscape_png")
    with pytest.raises(InvalidArgument, match="JPEG data is corrupt or truncated"):
        decode_image(jpeg[: len(jpeg) // 2], 224, CAP)
    with pytest.raises(InvalidArgument, match="PNG data is corrupt or truncated"):
        decode_image(png[: len(png) // 3], 224, CAP)
    corrupt = bytearray(png)
    corrupt[100:400] = b"\xff" * 300  # inside the compressed pixel data
    with pytest.raises(InvalidArgument, match="PNG"):
        decode_image(bytes(corrupt), 224, CAP)


def test_the_cap_is_exclusive_of_the_limit_itself() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (100, 50)).save(buf, "PNG")
    assert decode_image(buf.getvalue(), 224, 5000).shape == (224, 224, 3)
    with pytest.raises(ResourceExhausted, match="100x50 = 5000 pixels, above the 4999-pixel cap"):
        decode_image(buf.getvalue(), 224, 4999)


def test_unreadable_exif_does_not_fail_the_image() -> None:
    data = bytearray(parity_images.case_bytes("exif_orientation_6_jpeg"))
    start = data.index(b"Exif\x00\x00")
    data[start + 6 : start + 30] = b"\xde\xad" * 12  # garbage TIFF header inside the EXIF segment
    assert decode_image(bytes(data), 224, CAP).shape == (224, 224, 3)
