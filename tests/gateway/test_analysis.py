"""Image validation and the real ingest-time models (NudeNet, RapidOCR) on generated images."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from services.common.errors import InvalidArgument, ResourceExhausted
from services.gateway.analysis import (
    UNSAFE_LABELS,
    ImageAnalyzer,
    _SafetyDetector,
    _TextReader,
    check_image,
    decode_rgb,
    pad_short_side,
)
from services.gateway.settings import AnalysisSettings

DEFAULTS = AnalysisSettings()


def make_analyzer(*, safety: bool, ocr: bool) -> ImageAnalyzer:
    return ImageAnalyzer(
        safety=safety,
        ocr=ocr,
        threads=DEFAULTS.analysis_threads,
        ocr_max_side=DEFAULTS.ocr_max_side,
        ocr_min_confidence=DEFAULTS.ocr_min_confidence,
    )


FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


def encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's calling card)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def test_check_image_accepts_and_reports_size() -> None:
    info = check_image(encode(Image.new("RGB", (30, 20)), "JPEG"), 10**6, 10**6)
    assert (info.width, info.height, info.format) == (30, 20, "JPEG")


def test_check_image_rejects_precisely() -> None:
    with pytest.raises(InvalidArgument, match="empty"):
        check_image(b"", 100, 100)
    with pytest.raises(ResourceExhausted, match="100-byte cap"):
        check_image(b"x" * 101, 100, 100)
    with pytest.raises(InvalidArgument, match="not a readable image"):
        check_image(b"GIF89a garbage" * 3, 10**6, 10**6)
    with pytest.raises(ResourceExhausted, match=r"40000000-pixel cap \(10000x9000\)"):
        check_image(png_header_only(10_000, 9_000), 10**6, 40_000_000)
    with pytest.raises(ResourceExhausted, match="pixel cap"):
        check_image(png_header_only(100_000, 100_000), 10**6, 40_000_000)  # above Pillow's bomb limit
    with pytest.raises(InvalidArgument, match="format"):
        check_image(encode(Image.new("RGB", (8, 8)), "PPM"), 10**6, 10**6)


def test_decode_rgb_orients_and_shrinks() -> None:
    img = Image.new("RGB", (3000, 1000), (10, 20, 30))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° on display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    rgb = decode_rgb(buf.getvalue())
    assert rgb.shape == (1024, 341, 3) and rgb.dtype == np.uint8
    with pytest.raises(InvalidArgument, match="truncated or corrupt"):
        decode_rgb(buf.getvalue()[:200])


@pytest.fixture(scope="module")
def analyzer() -> ImageAnalyzer:
    a = make_analyzer(safety=True, ocr=True)
    a.warm_up()
    return a


async def test_ocr_reads_text_inside_an_image(analyzer: ImageAnalyzer) -> None:
    if not FONT.exists():
        pytest.skip("DejaVu font not installed")
    img = Image.new("RGB", (480, 160), "white")
    ImageDraw.Draw(img).text((20, 50), "EXIT 42", fill="black", font=ImageFont.truetype(str(FONT), 56))
    result = await analyzer.analyze(decode_rgb(encode(img)))
    assert "EXIT 42" in result.ocr_text.upper()
    blank = await analyzer.analyze(np.full((64, 64, 3), 255, dtype=np.uint8))
    assert blank.ocr_text == "" and blank.safety_score == 0.0


@pytest.mark.parametrize("size", [(4000, 3), (3, 4000), (4000, 1), (5, 5)])
def test_a_degenerate_strip_is_ocrd_at_its_own_size(size: tuple[int, int]) -> None:
    """P3: RapidOCR scales an image up until its short side reaches its minimum, so a 4000x3 strip
    (1024x1 after decode) was OCR'd as 30720x30, letterboxed to 30720x7680 (~2 s); padded, the work is
    that of a 1024x30 image."""
    reader = _TextReader(DEFAULTS.ocr_max_side, DEFAULTS.ocr_min_confidence)
    seen: list[tuple[int, ...]] = []
    preprocess = reader._ocr.preprocess

    def spy(img: np.ndarray) -> tuple[np.ndarray, float, float]:
        out = preprocess(img)
        seen.append(out[0].shape)
        return out  # type: ignore[no-any-return]

    reader._ocr.preprocess = spy
    rgb = decode_rgb(encode(Image.new("RGB", size, (40, 40, 40))))
    assert reader(rgb) == ""
    assert seen and max(seen[0][:2]) <= max(1024, reader._ocr.min_side_len), seen
    assert pad_short_side(rgb, 30).shape[:2] == (max(rgb.shape[0], 30), max(rgb.shape[1], 30))
    square = np.zeros((64, 64, 3), dtype=np.uint8)
    assert pad_short_side(square, 30) is square


def test_safety_detector_runs_the_real_model_and_scores_unsafe_labels_only() -> None:
    detector = _SafetyDetector()
    rng = np.random.default_rng(0)
    labels, score = detector(rng.integers(0, 255, size=(200, 300, 3), dtype=np.uint8))
    assert score == max((s.score for s in labels if s.label in UNSAFE_LABELS), default=0.0)
    assert all(0.0 <= s.score <= 1.0 for s in labels)
    # The model itself answers (no stub): its raw output has the YOLOv8 shape for 18 classes.
    blob = np.zeros((1, 3, 320, 320), dtype=np.float32)
    out = detector._detector.onnx_session.run(None, {detector._detector.input_name: blob})
    assert out[0].shape == (1, 22, 2100)


async def test_disabled_analysis_does_nothing() -> None:
    a = make_analyzer(safety=False, ocr=False)
    assert not a.enabled
    result = await a.analyze(np.zeros((8, 8, 3), dtype=np.uint8))
    assert result.ocr_text == "" and result.safety_labels == []


def test_vectorised_postprocessing_matches_nudenet() -> None:
    """Our NudeNet post-processing (vectorised) returns exactly what the library's detect() does."""
    from nudenet import NudeDetector

    from tests.gateway.suite import DATA_CACHE

    photos = sorted((DATA_CACHE / "rendered" / "skimage").glob("*.png"))[:8]
    if not photos:
        pytest.skip("scikit-image photos not in the data cache (tools/models/fetch_data.py)")
    ours, reference = _SafetyDetector(), NudeDetector()
    detections = 0
    for path in photos:
        rgb = decode_rgb(path.read_bytes())
        rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, dtype=np.uint8)])
        expected = sorted((d["class"], round(float(d["score"]), 4)) for d in reference.detect(rgba))
        got = sorted((s.label, s.score) for s in ours(rgb)[0])
        assert got == expected, path.name
        detections += len(got)
    assert detections > 0  # the photos include faces: the comparison is not vacuous
