"""Decoding survey photos: fast, always RGB uint8, loud about broken files.

Photos are large JPEGs (3072x2048 typical) and every model wants them small, so libjpeg's DCT scaling
(Pillow's draft mode) decodes at the smallest power-of-two reduction still at least the target size,
then a bicubic resize finishes. EXIF orientation is ignored on purpose: annotations use stored pixel order.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from rightwhale.data import DataError

class BadImage(DataError):
    """A photo that is missing, empty, unreadable or truncated."""


def _open(path: Path, check_end: bool = True) -> Image.Image:
    if not path.is_file():
        raise BadImage(f"{path}: image file does not exist")
    if path.stat().st_size == 0:
        raise BadImage(f"{path}: image file is empty (0 bytes)")
    try:
        im = Image.open(path)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise BadImage(f"{path}: not a readable image ({e})") from e
    if im.width < 1 or im.height < 1:
        raise BadImage(f"{path}: image has zero size ({im.width}x{im.height})")
    if check_end and im.format == "JPEG":
        # libjpeg never writes the end-of-image marker 0xFF 0xD9 inside entropy-coded data, so a JPEG whose
        # last 4 KiB (room for the padding some writers append) lack it was cut short
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 4096))
            if b"\xff\xd9" not in f.read():
                im.close()
                raise BadImage(f"{path}: truncated JPEG (no end-of-image marker; the file was cut short, "
                               "re-download or re-copy it)")
    return im


def photo_size(path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding pixels."""
    with _open(Path(path), check_end=False) as im:
        return im.size


def check_image(path) -> tuple[int, int]:
    """Cheap validity check (header and JPEG trailer); returns (w, h)."""
    with _open(Path(path)) as im:
        return im.size


def read_image(path, size=None) -> np.ndarray:
    """Decode to uint8 HxWx3 RGB; `size` (int or (w, h)) resizes to exactly that."""
    path, wh = Path(path), None
    if size is not None:
        w, h = (size, size) if np.isscalar(size) else size
        if int(w) < 1 or int(h) < 1:
            raise ValueError(f"image size must be positive, got {size!r}")
        wh = int(w), int(h)
    with _open(path) as im:
        try:
            if wh is not None:
                im.draft("RGB", wh)       # DCT scaling: result stays >= (w, h)
            rgb = im.convert("RGB")       # raises on truncated data as long as LOAD_TRUNCATED_IMAGES is off
            if wh is not None and rgb.size != wh:
                rgb = rgb.resize(wh, Image.Resampling.BICUBIC)
            return np.array(rgb, dtype=np.uint8)   # a writable copy
        except (OSError, ValueError, SyntaxError) as e:
            raise BadImage(f"{path}: cannot decode image ({e})") from e
