"""Ingest-time image checks and analysis, in-process and off the event loop.

- `check_image`: validation (size cap, pixel cap read from the header before any decode, format
  allow-list); `decode_rgb`: one decode to RGB, shrunk to what the detectors need.
- `ImageAnalyzer`: content safety with NudeNet (the `320n.onnx` YOLOv8n detector shipped in the
  `nudenet` wheel) and text inside the image with RapidOCR (PP-OCRv4 det + rec ONNX models shipped in
  `rapidocr-onnxruntime`), both on ONNX Runtime with one intra-op thread each, run on a small thread
  pool (ONNX Runtime releases the GIL) so the event loop keeps acknowledging other items.

Why in-process rather than in Triton: both libraries wrap their models in Python pre/post-processing
(letterboxing + NMS for NudeNet; DB box extraction, crop/rotate and CTC decoding for OCR) that would
have to be re-implemented around a Triton python backend to gain nothing on CPU; the gateway is the
only caller. On a GPU host they are the first candidates to move next to the CLIP towers.
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from PIL import Image, ImageOps

from services.common.errors import InvalidArgument, ResourceExhausted
from services.gateway.domain import SafetyLabel

log = structlog.get_logger("analysis")

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"})

# NudeNet classes that make an image unsafe; the others (faces, covered parts, feet…) are reported as
# labels but do not raise safety_score.
UNSAFE_LABELS = frozenset(
    {
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "FEMALE_BREAST_EXPOSED",
        "BUTTOCKS_EXPOSED",
        "ANUS_EXPOSED",
    }
)

# Longest side of the RGB copy handed to the detectors (NudeNet letterboxes to 320; OCR caps itself).
_ANALYSIS_SIDE = 1024


@dataclass
class Inspected:
    width: int
    height: int
    format: str
    rgb: np.ndarray | None = None  # HxWx3 uint8, longest side <= _ANALYSIS_SIDE (when decoded)


def check_size(data: bytes, max_bytes: int) -> None:
    """The byte cap, checked before an image is hashed, parsed or forwarded."""
    if len(data) > max_bytes:
        raise ResourceExhausted(f"image is {len(data)} bytes, above the {max_bytes}-byte cap")


def check_image(data: bytes, max_bytes: int, max_pixels: int) -> Inspected:
    """Validate an encoded image from its header only (no pixel decode: cheap, bomb-safe).

    Raises InvalidArgument / ResourceExhausted with an actionable message.
    """
    if not data:
        raise InvalidArgument("image is empty: send the encoded file bytes (JPEG, PNG, WebP, GIF, BMP, TIFF)")
    check_size(data, max_bytes)
    try:
        with warnings.catch_warnings():  # our own cap below is the one that applies
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ResourceExhausted(f"image exceeds the {max_pixels}-pixel cap") from None
    except Exception:
        raise InvalidArgument(
            "image bytes are not a readable image (supported: JPEG, PNG, WebP, GIF, BMP, TIFF)"
        ) from None
    fmt = (img.format or "").upper()
    if fmt not in ALLOWED_FORMATS:
        raise InvalidArgument(
            f"image format {fmt or 'unknown'} is not supported (JPEG, PNG, WebP, GIF, BMP, TIFF)"
        )
    width, height = img.size
    if width * height > max_pixels:
        raise ResourceExhausted(f"image exceeds the {max_pixels}-pixel cap ({width}x{height})")
    return Inspected(width, height, fmt, None)


def decode_rgb(data: bytes) -> np.ndarray:
    """Decode (EXIF-oriented, first frame) to RGB uint8, longest side <= _ANALYSIS_SIDE.

    Call after `check_image` (which enforces the pixel cap before this allocates anything).
    """
    try:
        opened = Image.open(io.BytesIO(data))
        opened.draft("RGB", (_ANALYSIS_SIDE, _ANALYSIS_SIDE))  # JPEG: decode at a reduced scale
        img = ImageOps.exif_transpose(opened).convert("RGB")
        img.thumbnail((_ANALYSIS_SIDE, _ANALYSIS_SIDE))
        return np.asarray(img)
    except Image.DecompressionBombError:
        raise ResourceExhausted("image exceeds the decoder's pixel limit") from None
    except Exception:
        raise InvalidArgument("image bytes are truncated or corrupt") from None


def pad_short_side(rgb: np.ndarray, min_side: int) -> np.ndarray:
    """Pad (white) a side shorter than `min_side` up to it, keeping the pixels at their size.

    RapidOCR scales an image up until its shorter side reaches its `min_side_len`, whatever that does
    to the longer side: the 1024x1 analysis copy of a 4000x3 strip became 30720x30, letterboxed to
    30720x7680, about 2 s of OCR for an image that cannot hold a line of text. Padded, it is OCR'd as
    what it is (1024x30: ~10 ms of detection). Images with both sides >= `min_side` are unchanged.
    """
    h, w = rgb.shape[:2]
    if h >= min_side and w >= min_side:
        return rgb
    out = np.full((max(h, min_side), max(w, min_side), 3), 255, dtype=np.uint8)
    out[:h, :w] = rgb
    return out


@dataclass
class Analysis:
    safety_labels: list[SafetyLabel] = field(default_factory=list)
    safety_score: float = 0.0
    ocr_text: str = ""


def _session_options() -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return opts


class _SafetyDetector:
    def __init__(self) -> None:
        import nudenet
        import onnxruntime as ort
        from nudenet import NudeDetector

        # NudeDetector's own constructor gives ONNX Runtime every core; build its session with one
        # thread instead (the encoder shares these cores).
        detector = NudeDetector.__new__(NudeDetector)
        path = str(Path(str(nudenet.__file__)).parent / "320n.onnx")
        detector.onnx_session = ort.InferenceSession(
            path, sess_options=_session_options(), providers=["CPUExecutionProvider"]
        )
        detector.input_width = detector.input_height = 320
        detector.input_name = detector.onnx_session.get_inputs()[0].name
        self._detector = detector

    def __call__(self, rgb: np.ndarray) -> tuple[list[SafetyLabel], float]:
        import cv2
        from nudenet import nudenet as nn_module

        d = self._detector
        # NudeNet's own preprocessing (letterbox to 320, RGBA->BGR->RGB blob): hand it RGBA.
        rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, dtype=np.uint8)])
        blob, *_ = nn_module._read_image(rgba, d.input_width)
        output = d.onnx_session.run(None, {d.input_name: blob})[0]
        # Its post-processing, vectorised (the library loops over the rows in Python; docs/GATEWAY.md):
        # rows are [cx, cy, w, h, 18 class scores]; keep the best class >= 0.2, then NMS.
        rows = np.squeeze(output).T
        scores = rows[:, 4:]
        best = scores.argmax(axis=1)
        conf = scores[np.arange(len(rows)), best]
        keep = conf >= 0.2
        if not keep.any():
            return [], 0.0
        boxes = rows[keep, :4].copy()
        boxes[:, 0] -= boxes[:, 2] / 2
        boxes[:, 1] -= boxes[:, 3] / 2
        picked = cv2.dnn.NMSBoxes(boxes.tolist(), conf[keep].tolist(), 0.25, 0.45)
        names = nn_module.__dict__["__labels"]
        labels = [
            SafetyLabel(str(names[int(best[keep][i])]), round(float(conf[keep][i]), 4))
            for i in np.asarray(picked).reshape(-1)
        ]
        labels.sort(key=lambda s: -s.score)
        score = max((s.score for s in labels if s.label in UNSAFE_LABELS), default=0.0)
        return labels, score


class _TextReader:
    def __init__(self, max_side: int, min_confidence: float) -> None:
        from rapidocr_onnxruntime import RapidOCR

        self._ocr = RapidOCR(
            intra_op_num_threads=1,
            inter_op_num_threads=1,
            det_limit_side_len=max_side,
            det_limit_type="max",  # shrink large images, never upscale small ones
            use_cls=False,  # upright text is the common case; the classifier costs a third
        )
        self._min_confidence = min_confidence

    def __call__(self, rgb: np.ndarray) -> str:
        rgb = pad_short_side(rgb, self._ocr.min_side_len)
        result, _ = self._ocr(np.ascontiguousarray(rgb[:, :, ::-1]))  # BGR like cv2
        if not result:
            return ""
        lines = [str(text).strip() for _box, text, conf in result if float(conf) >= self._min_confidence]
        return " ".join(t for t in lines if t)


def _lower_priority(nice: int) -> None:
    """Raise the calling thread's niceness by `nice` (Linux schedules threads, so only this one)."""
    if nice > 0 and hasattr(os, "setpriority"):
        try:
            os.setpriority(
                os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + nice
            )
        except OSError as exc:
            log.warning("analysis threads keep their priority", error=str(exc))


class ImageAnalyzer:
    """Safety labels and OCR text for decoded images, on `threads` worker threads."""

    def __init__(
        self,
        *,
        safety: bool,
        ocr: bool,
        threads: int,
        ocr_max_side: int,
        ocr_min_confidence: float,
        nice: int = 0,
    ) -> None:
        """`nice`: the analysis threads' niceness (Linux, per thread; 0 = as the process): with deferred
        analysis the detectors take the CPU the acknowledgements leave."""
        self.safety_enabled = safety
        self.ocr_enabled = ocr
        self._pool = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="analysis", initializer=_lower_priority, initargs=(nice,)
        )
        self._local = threading.local()
        self._ocr_max_side = ocr_max_side
        self._ocr_min_confidence = ocr_min_confidence

    @property
    def enabled(self) -> bool:
        return self.safety_enabled or self.ocr_enabled

    @property
    def executor(self) -> ThreadPoolExecutor:
        return self._pool

    def warm_up(self) -> None:
        """Load the models now (start-up) rather than on the first ingested image."""
        self._analyze_sync(np.full((64, 64, 3), 255, dtype=np.uint8))

    def _models(self) -> tuple[_SafetyDetector | None, _TextReader | None]:
        # One model instance per worker thread: ONNX Runtime sessions are thread-safe, but the
        # libraries' Python wrappers keep per-call state on the instance.
        models = getattr(self._local, "models", None)
        if models is None:
            models = (
                _SafetyDetector() if self.safety_enabled else None,
                _TextReader(self._ocr_max_side, self._ocr_min_confidence) if self.ocr_enabled else None,
            )
            self._local.models = models
        return models  # type: ignore[no-any-return]

    def _analyze_sync(self, rgb: np.ndarray) -> Analysis:
        safety, reader = self._models()
        out = Analysis()
        if safety is not None:
            out.safety_labels, out.safety_score = safety(rgb)
        if reader is not None:
            out.ocr_text = reader(rgb)
        return out

    async def analyze(self, rgb: np.ndarray) -> Analysis:
        if not (self.safety_enabled or self.ocr_enabled):
            return Analysis()
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._analyze_sync, rgb)

    async def warm_up_async(self) -> None:
        if self.safety_enabled or self.ocr_enabled:
            await asyncio.get_running_loop().run_in_executor(self._pool, self.warm_up)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
