"""Decode + resize of survey photos to 256x256: rightwhale.io.images.read_image against
scikit-image (imread + resize with anti_aliasing), the original's decoder, in the
same run. Target: >= 5x.

    python bench/bench_decode.py [--photos DIR | --synthetic] [--size 256] [--repeats 3]

Uses ../shared/data/real-photos/imgs when present, else writes synthetic
3072x2048 JPEGs to a temporary folder.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.io import imread
from skimage.transform import resize

from rightwhale.io.images import read_image

REAL_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-photos" / "imgs"


def synthetic_photos(folder: Path, count: int = 3) -> list[Path]:
    """Sea-like 3072x2048 JPEGs: smooth colour plus noise, so the file size is realistic."""
    rng = np.random.default_rng(0)
    paths = []
    for k in range(count):
        yy, xx = np.mgrid[0:2048, 0:3072].astype(np.float32)
        base = np.stack([40 + 20 * np.sin(xx / 300 + k), 70 + 20 * np.cos(yy / 200),
                         90 + 10 * np.sin((xx + yy) / 500)], axis=-1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        paths.append(folder / f"w_{k}.jpg")
        Image.fromarray(pixels).save(paths[-1], "JPEG", quality=90)
    return paths


def rate(decode, paths, repeats: int) -> float:
    """Images per second over `repeats` passes, after one warm-up decode."""
    decode(paths[0])
    start = time.perf_counter()
    for _ in range(repeats):
        for path in paths:
            decode(path)
    return repeats * len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, default=None,
                        help=f"folder of JPEGs (default: {REAL_PHOTOS} if present, else synthetic)")
    parser.add_argument("--synthetic", action="store_true",
                        help="use synthetic 3072x2048 JPEGs even when real photos are present")
    parser.add_argument("--size", type=int, default=256, help="output side in pixels (default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the photos (default 3)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.photos or (REAL_PHOTOS if REAL_PHOTOS.is_dir() and not args.synthetic
                                 else None)
        paths = sorted(folder.glob("*.jpg")) if folder else synthetic_photos(Path(tmp))
        if not paths:
            parser.error(f"no .jpg files in {folder}")
        sizes = sorted({Image.open(p).size for p in paths})
        print(f"{len(paths)} photos from {folder or 'synthetic'}, sizes {sizes}, "
              f"to {args.size}x{args.size}, {args.repeats} passes")
        ours = rate(lambda p: read_image(p, args.size), paths, args.repeats)
        peer = rate(lambda p: resize(imread(p), (args.size, args.size), anti_aliasing=True),
                    paths, args.repeats)
    print(f"read_image (DCT-scaled libjpeg-turbo + bicubic): {ours:8.2f} images/s")
    print(f"skimage imread + resize (antialias): {peer:8.2f} images/s")
    print(f"ratio: {ours / peer:.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
