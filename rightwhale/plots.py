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


def match_pairs(rows, path, cell: float = 2.2):
    """One row per query: the query crop beside a candidate crop, RANSAC inlier pairs joined by lines.
    `rows`: dicts with query, candidate (RGB arrays), query_xy, candidate_xy ((m, 2) pixel points of
    the pairs) and title."""
    fig, axes = plt.subplots(len(rows), 1, figsize=(2 * cell, cell * len(rows)), squeeze=False, dpi=100)
    for ax, row in zip(axes[:, 0], rows):
        q, c = np.asarray(row["query"]), np.asarray(row["candidate"])
        h = max(q.shape[0], c.shape[0])
        pad = lambda im: np.pad(im, ((0, h - im.shape[0]), (0, 0), (0, 0)))  # noqa: E731
        ax.imshow(np.concatenate([pad(q), np.full((h, 4, 3), 255, np.uint8), pad(c)], axis=1))
        dx = q.shape[1] + 4
        for (x0, y0), (x1, y1) in zip(np.asarray(row["query_xy"]), np.asarray(row["candidate_xy"])):
            ax.plot([x0, x1 + dx], [y0, y1], "-", lw=0.7, color="#60ff60", alpha=0.8)
            ax.plot([x0, x1 + dx], [y0, y1], "o", ms=2, color="#ffe030")
        ax.set_title(row["title"], fontsize=7)
        ax.axis("off")
    return save(fig, path)
