"""Decoding survey photos: fast, always RGB uint8, loud about broken files.

Survey photos are large JPEGs (3072x2048 typical) and every model wants them
small, so decoding uses libjpeg's DCT scaling (Pillow's draft mode) to decode
at the smallest power-of-two reduction that is still at least the target
size, then resizes with an antialiasing filter. EXIF orientation is ignored
on purpose: the annotations are in the stored pixel order.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from rightwhale.data import DataError

# libjpeg never writes 0xFF 0xD9 inside entropy-coded data, so a JPEG whose
# tail lacks the end-of-image marker was cut short. The window allows for
# padding some writers append after the marker.
_JPEG_END = b"\xff\xd9"
_TAIL_BYTES = 4096


class BadImage(DataError):
    """A photo that is missing, empty, unreadable or truncated."""


def _as_wh(size) -> tuple[int, int]:
    w, h = (size, size) if np.isscalar(size) else size
    if int(w) < 1 or int(h) < 1:
        raise ValueError(f"image size must be positive, got {size!r}")
    return int(w), int(h)


def _open(path: Path) -> Image.Image:
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
    return im


def _check_jpeg_end(path: Path, im: Image.Image) -> None:
    if im.format != "JPEG":
        return
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - _TAIL_BYTES))
        if _JPEG_END not in f.read():
            raise BadImage(f"{path}: truncated JPEG (no end-of-image marker; "
                           "the file was cut short, re-download or re-copy it)")


def photo_size(path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding pixels."""
    with _open(Path(path)) as im:
        return im.size


def check_image(path) -> tuple[int, int]:
    """Cheap validity check (header and JPEG trailer); returns (w, h)."""
    path = Path(path)
    with _open(path) as im:
        _check_jpeg_end(path, im)
        return im.size


def read_image(path, size=None) -> np.ndarray:
    """Decode to uint8 HxWx3 RGB; `size` (int or (w, h)) resizes to exactly that."""
    path, wh = Path(path), None if size is None else _as_wh(size)
    with _open(path) as im:
        _check_jpeg_end(path, im)
        try:
            if wh is not None:
                im.draft("RGB", wh)       # DCT scaling: result stays >= (w, h)
            # Pillow raises on truncated data as long as LOAD_TRUNCATED_IMAGES is off.
            rgb = im.convert("RGB")
            if wh is not None and rgb.size != wh:
                rgb = rgb.resize(wh, Image.Resampling.BICUBIC)
            return np.array(rgb, dtype=np.uint8)   # a writable copy
        except (OSError, ValueError, SyntaxError) as e:
            raise BadImage(f"{path}: cannot decode image ({e})") from e
