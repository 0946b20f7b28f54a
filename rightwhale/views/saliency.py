"""Occlusion saliency (Zeiler & Fergus), as the writeup used to expose the naive model.

Slide a black square over the photo and record how much the probability of
the true whale drops: large drops mark what the classifier looks at. The
writeup's map lit up the waves, not the whale.
"""
from __future__ import annotations

import numpy as np


def occlusion_boxes(height: int, width: int, patch: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of the occluding squares, covering the whole image."""
    ys = list(range(0, max(height - patch, 0) + 1, stride))
    xs = list(range(0, max(width - patch, 0) + 1, stride))
    if ys[-1] + patch < height:
        ys.append(height - patch)
    if xs[-1] + patch < width:
        xs.append(width - patch)
    return [(y, x) for y in ys for x in xs]


def occlusion_map(predict_proba, image: np.ndarray, label: int, patch: int, stride: int,
                  batch_size: int = 64) -> np.ndarray:
    """Drop in P(label) when each pixel is occluded, averaged over the squares covering it.

    predict_proba: uint8 images (N, H, W, 3) -> probabilities (N, K).
    Returns an (H, W) float map; positive where occlusion hurts.
    """
    h, w = image.shape[:2]
    corners = occlusion_boxes(h, w, patch, stride)
    base = float(predict_proba(image[None])[0, label])
    drops = np.empty(len(corners))
    for start in range(0, len(corners), batch_size):
        chunk = corners[start:start + batch_size]
        batch = np.repeat(image[None], len(chunk), axis=0)
        for b, (y, x) in enumerate(chunk):
            batch[b, y:y + patch, x:x + patch] = 0
        drops[start:start + len(chunk)] = base - predict_proba(batch)[:, label]
    total = np.zeros((h, w))
    count = np.zeros((h, w))
    for d, (y, x) in zip(drops, corners):
        total[y:y + patch, x:x + patch] += d
        count[y:y + patch, x:x + patch] += 1
    return total / np.maximum(count, 1)
