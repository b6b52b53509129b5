"""Decoding image files into 8-bit RGB.

Grayscale is repeated, alpha is composited over white, 16-bit samples are
scaled down (PIL would clip them).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ALPHA_BACKGROUND = (255, 255, 255)


def load_rgb(path: str | os.PathLike):
    """Decode an image file fully into an 8-bit RGB PIL image."""
    return decode_rgb(Path(path).read_bytes())


def decode_rgb(data: bytes, min_side: int | None = None):
    """Decode image bytes into an 8-bit RGB PIL image; PIL's errors propagate (OSError and friends).

    With ``min_side`` a JPEG is decoded at the smallest DCT scale (1/2, 1/4 or 1/8) that keeps both sides
    >= ``min_side`` (PIL's draft), 2-3x faster for photos much larger than that. PNG and the other formats
    have no reduced decoding and are decoded in full.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:  # its message names the BytesIO object, not the file
        raise ValueError("not an image format PIL can read") from None
    with image:
        if min_side and image.format == "JPEG":
            image.draft(image.mode, (min_side, min_side))
        image.load()  # decode now, so a truncated file fails here and not later
        return to_rgb(image)


def decode_rgb_sizes(data: bytes, min_sides: Sequence[int]) -> dict[int, object]:
    """``decode_rgb(data, side)`` for each of ``min_sides``, decoding once where the side makes no difference (every
    format but JPEG, and a single side)."""
    sides = list(dict.fromkeys(min_sides))
    if len(sides) > 1 and _format(data) == "JPEG":
        return {side: decode_rgb(data, side) for side in sides}
    return dict.fromkeys(sides, decode_rgb(data, sides[0]))


def _format(data: bytes) -> str | None:
    """The image format from the header (no decoding); None where PIL cannot tell (decode_rgb then says why)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format
    except Exception:  # PIL raises OSError, SyntaxError, ValueError... for bad files
        return None


def to_rgb(image):
    from PIL import Image

    if image.mode.startswith("I"):  # 16-bit grayscale (I;16) or 32-bit ints holding 16-bit samples (I)
        samples = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(samples / 257.0), 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
