"""Decoding survey photos: fast, always RGB uint8, loud about broken files.

Photos are large JPEGs (3072x2048 typical) and every model wants them small, so libjpeg's DCT scaling
decodes at the smallest power-of-two reduction still at least the target size (the reduction Pillow's
draft mode picks), then a bicubic resize finishes. EXIF orientation is ignored on purpose: annotations
use stored pixel order.

What cannot be decoded faithfully is refused, naming the file: JPEGs are decoded by libjpeg-turbo
through simplejpeg in strict mode, so its "corrupt data" and "premature end" warnings (which Pillow
ignores, returning half an image of garbage) become a skip with the reason; JPEG has no checksum, so
corruption libjpeg cannot notice still passes. 16-bit greyscale PNGs are scaled to 8 bits (Pillow alone
clips them to white); 32-bit integer and float images are refused; photos above MAX_MEGAPIXELS are
refused before decoding (the limit is documented, Pillow's raw warning never shown).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from rightwhale.core.errors import DataError

MAX_MEGAPIXELS = 100          # a 3072x2048 survey photo has 6.3; above this a photo is refused
Image.MAX_IMAGE_PIXELS = None   # our limit (checked from the header) replaces Pillow's warning
SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}
JPEG_FORMATS = ("JPEG", "MPO")   # MPO: a JPEG with multi-picture data (many Nikon and Fuji cameras)


class BadImage(DataError):
    """A photo that is missing, empty, unreadable, truncated, corrupt or too large."""


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
    if im.width * im.height > MAX_MEGAPIXELS * 1e6:
        im.close()
        raise BadImage(f"{path}: {im.width}x{im.height} is {im.width * im.height / 1e6:.0f} megapixels, above "
                       f"the limit of {MAX_MEGAPIXELS} (rightwhale.io.images.MAX_MEGAPIXELS); downscale it first")
    if check_end and im.format in JPEG_FORMATS:
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
            rgb = _jpeg(path, im, wh) if im.format in JPEG_FORMATS else None
            if rgb is None:
                rgb = _other(path, im, wh)
            if wh is not None and rgb.size != wh:
                rgb = rgb.resize(wh, Image.Resampling.BICUBIC)
            return np.array(rgb, dtype=np.uint8)   # a writable copy
        except (OSError, ValueError, SyntaxError) as e:
            raise BadImage(f"{path}: cannot decode image ({e})") from e


def read_bounded(path, max_side: int) -> np.ndarray:
    """The photo decoded at most `max_side` pixels on its longer side (DCT-scaled, aspect kept): memory stays
    bounded for any photo under the pixel limit."""
    w, h = photo_size(path)
    if max(w, h) <= max_side:
        return read_image(path)
    scale = max_side / max(w, h)
    return read_image(path, (max(1, round(w * scale)), max(1, round(h * scale))))


def _jpeg(path: Path, im: Image.Image, wh) -> Image.Image | None:
    """libjpeg-turbo, strict, at Pillow's draft reduction (so pixels equal Pillow's); None for JPEGs it cannot
    turn into RGB (CMYK), which Pillow then decodes."""
    import simplejpeg
    data = path.read_bytes()
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in ("Gray", "YCbCr", "RGB"):
        return None
    reduction = 1
    if wh is not None:
        fits = min(width // wh[0], height // wh[1])
        reduction = next((r for r in (8, 4, 2, 1) if fits >= r), 1)      # 1: no reduction, or an upscale
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=-(-width // reduction),
                                        min_height=-(-height // reduction), strict=True)
    except ValueError as e:
        raise BadImage(f"{path}: corrupt JPEG data ({e}); re-download or re-copy it") from e
    return Image.fromarray(pixels)


def _other(path: Path, im: Image.Image, wh) -> Image.Image:
    """Pillow for PNG, CMYK JPEGs and the rest, with the modes its convert("RGB") gets wrong handled."""
    if im.mode in SIXTEEN_BIT:            # convert("RGB") would clip to 255: scale 0..65535 to 0..255
        grey = np.asarray(im, dtype=np.uint16)
        return Image.fromarray(((grey.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)).convert("RGB")
    if im.mode in ("I", "F"):
        raise BadImage(f"{path}: {im.mode} ({'32-bit integer' if im.mode == 'I' else 'floating-point'}) pixels "
                       "have no agreed 8-bit rendering; convert the photo to 8-bit RGB first")
    if wh is not None:
        im.draft("RGB", wh)               # DCT scaling for JPEGs Pillow decodes: result stays >= (w, h)
    return im.convert("RGB")              # raises on truncated data as long as LOAD_TRUNCATED_IMAGES is off


def model_input(images01):
    """What the networks see: images in [0, 1] centred on 0 (training, TTA and saliency alike)."""
    return images01 - 0.5
