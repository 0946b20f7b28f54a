"""The pictures a user looks at instead of reading numbers: grids, histograms, overlays.

All figures go through matplotlib's Agg backend (no screen needed) and are
written atomically as PNG.
"""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rightwhale import atomic  # noqa: E402

POINT_COLOURS = ("#ff3030", "#30c0ff", "#ffe030", "#60ff60")  # bonnet, blowhead, ...


def save(fig, path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, bbox_inches="tight")
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())
    return Path(path)


def image_grid(images, path, titles=None, points=None, true_points=None, boxes=None,
               ncols: int = 6, cell: float = 2.0):
    """A grid of images; optional (K, 2) points per image (filled = predicted, rings = truth)
    and (x, y, w, h) boxes per image (solid) drawn on top."""
    n = len(images)
    nrows = max(1, -(-n // ncols))
    ncols = min(ncols, max(n, 1))
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, cell * nrows * _aspect(images)),
                             squeeze=False, dpi=100)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n]):
        ax.imshow(images[i])
        h, w = np.asarray(images[i]).shape[:2]
        ax.set_xlim(-0.5, w - 0.5)          # points off the image must not resize the panel
        ax.set_ylim(h - 0.5, -0.5)
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
        for pts, style in ((points, dict(s=18, edgecolors="black", linewidths=0.5)),
                           (true_points, dict(s=40, facecolors="none", linewidths=1.2))):
            if pts is not None and pts[i] is not None:
                p = np.asarray(pts[i]).reshape(-1, 2)
                colours = [POINT_COLOURS[k % len(POINT_COLOURS)] for k in range(len(p))]
                key = "edgecolors" if "facecolors" in style else "c"
                ax.scatter(p[:, 0], p[:, 1], **{key: colours}, **style)
        if boxes is not None and boxes[i] is not None:
            for b, colour in zip(np.asarray(boxes[i]).reshape(-1, 4), ("#ffe030", "#60ff60")):
                ax.add_patch(plt.Rectangle(b[:2], b[2], b[3], fill=False, lw=1.2, ec=colour))
    return save(fig, path)


def _aspect(images) -> float:
    h, w = np.asarray(images[0]).shape[:2] if len(images) else (1, 1)
    return h / w


def histogram(values, path, xlabel: str, title: str = "", bins: int = 20, range_=None):
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.hist(np.asarray(values), bins=bins, range=range_, color="#3070b0", edgecolor="white")
    ax.axvline(float(np.mean(values)), color="#d03030", lw=1.5, label=f"mean {np.mean(values):.3f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend()
    return save(fig, path)


def saliency_overlays(images, heatmaps, path, titles=None, ncols: int = 4):
    """Photos with their occlusion maps over them (red: occluding this hurts)."""
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, min(ncols, n), figsize=(3 * min(ncols, n), 3 * nrows * _aspect(images)),
                             squeeze=False, dpi=100)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n]):
        ax.imshow(images[i])
        heat = np.clip(heatmaps[i] / max(np.abs(heatmaps[i]).max(), 1e-9), 0, 1)
        ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
    return save(fig, path)
