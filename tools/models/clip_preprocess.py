"""Image preprocessing for the ONNX image contract (pure Pillow + numpy, no torch).

The image ONNX graphs take uint8 [B,224,224,3] RGB pixels prepared like CLIP's reference transform:
torchvision Resize(224, bicubic) on the decoded PIL image, CenterCrop(224), convert("RGB")
(`reference`, what the service does). For transparent images (PNG/WebP icons, emoji) that means:
Pillow resizes RGBA with premultiplied alpha, so fully transparent areas come out BLACK after
convert("RGB"); palette images are resized nearest-neighbour (Pillow's rule for mode "P").
`on_white` flattens transparency onto white first (what a person sees in a browser). The demo model
is trained on both backgrounds (and some random colours), so it works with either.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SIZE = 224


def has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "RGBa", "La", "PA") or (im.mode == "P" and "transparency" in im.info)


def to_rgb_on_white(im: Image.Image) -> Image.Image:
    if has_alpha(im):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")


def resized_size(w: int, h: int, size: int = SIZE) -> tuple[int, int]:
    """torchvision.transforms.Resize(size) with an int size: shortest side -> size, the long side
    truncated like torchvision does (int(size * long / short))."""
    if w <= h:
        return size, int(size * h / w)
    return int(size * w / h), size


def center_crop_box(w: int, h: int, size: int = SIZE) -> tuple[int, int, int, int]:
    left = int(round((w - size) / 2.0))
    top = int(round((h - size) / 2.0))
    return left, top, left + size, top + size


def clip_resize_crop(im: Image.Image, size: int = SIZE) -> Image.Image:
    w, h = im.size
    nw, nh = resized_size(w, h, size)
    im = im.resize((nw, nh), Image.BICUBIC)
    return im.crop(center_crop_box(nw, nh, size))


def preprocess(im: Image.Image, size: int = SIZE) -> np.ndarray:
    """PIL image -> uint8 [size,size,3] RGB, as the image ONNX input expects (add a batch axis)."""
    return np.asarray(clip_resize_crop(to_rgb_on_white(im), size), dtype=np.uint8)


def reference(im: Image.Image, size: int = SIZE) -> np.ndarray:
    """CLIP's own inference transform up to ToTensor: resize/crop in the decoded mode, then RGB."""
    return np.asarray(clip_resize_crop(im, size).convert("RGB"), dtype=np.uint8)


def load(path, size: int = SIZE, background: str = "reference") -> np.ndarray:
    """background: "reference" (CLIP's transform, as the service does) or "white"."""
    with Image.open(path) as im:
        im.load()
        return reference(im, size) if background == "reference" else preprocess(im, size)


def load_white(path, size: int = SIZE) -> np.ndarray:
    return load(path, size, "white")


def premultiplied_rgba(path, size: int = SIZE) -> np.ndarray:
    """uint8 [size,size,4]: premultiplied RGB + alpha after the CLIP resize/crop. Flattening onto a
    background colour c is then rgb = prem + (1 - alpha/255) * c (used for training augmentation;
    c = white reproduces `load`)."""
    with Image.open(path) as im:
        im.load()
        if has_alpha(im):
            im = im.convert("RGBA").convert("RGBa")
        else:
            im = im.convert("RGB").convert("RGBA").convert("RGBa")
        im = clip_resize_crop(im, size)
        return np.asarray(im, dtype=np.uint8)
