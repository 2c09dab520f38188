"""The stored preview of an ingested image: EXIF-oriented first frame, longest side capped, JPEG.

Made from the original's bytes after `check_image` accepted them (the pixel cap is enforced before this
decodes anything); JPEG originals are decoded at a reduced scale (`draft`), so a large photo costs a
fraction of a full decode. Transparency is flattened onto white (JPEG has no alpha).
"""

from __future__ import annotations

import io

from PIL import Image, ImageOps

from services.common.errors import InvalidArgument

THUMBNAIL_MEDIA_TYPE = "image/jpeg"


def make_thumbnail(data: bytes, max_side: int, quality: int) -> bytes:
    try:
        opened = Image.open(io.BytesIO(data))
        opened.draft("RGB", (max_side, max_side))
        img = ImageOps.exif_transpose(opened)
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        rgb = _flatten(img)
    except Exception:
        raise InvalidArgument("image bytes are truncated or corrupt") from None
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


def _flatten(img: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, "white")
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")
