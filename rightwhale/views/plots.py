"""The pictures a user looks at instead of reading numbers: grids, histograms, overlays.

Figures are matplotlib Figure objects drawn without pyplot (no screen needed, and importing this leaves
matplotlib's backend as the user set it), written atomically as PNG. The two pictures identify draws for every photo of a
batch (`contact_sheet`, `match_pairs`) are drawn with Pillow instead: the same
picture in a few milliseconds rather than half a second, which is what lets a
thousand-photo batch finish in minutes.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image, ImageDraw, ImageFont

from rightwhale.core import atomic

POINT_COLOURS = ("#ff3030", "#30c0ff", "#ffe030", "#60ff60")  # bonnet, blowhead, ...
TITLE_PX, GAP_PX = 16, 4        # Pillow pictures: a title line above each cell, a gap between cells


def save(fig, path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, bbox_inches="tight")
    atomic.write_bytes(path, buf.getvalue())
    return Path(path)


def image_grid(images, path, titles=None, points=None, true_points=None, boxes=None,
               ncols: int = 6, cell: float = 2.0):
    """A grid of images; optional (K, 2) points per image (filled = predicted, rings = truth)
    and (x, y, w, h) boxes per image (solid) drawn on top."""
    n = len(images)
    nrows = max(1, -(-n // ncols))
    ncols = min(ncols, max(n, 1))
    fig = Figure(figsize=(cell * ncols, cell * nrows * _aspect(images)), dpi=100)
    axes = fig.subplots(nrows, ncols, squeeze=False)
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
                ax.add_patch(Rectangle(b[:2], b[2], b[3], fill=False, lw=1.2, ec=colour))
    return save(fig, path)


def _aspect(images) -> float:
    h, w = np.asarray(images[0]).shape[:2] if len(images) else (1, 1)
    return h / w


def histogram(values, path, xlabel: str, title: str = "", bins: int = 20, range_=None):
    fig = Figure(figsize=(5, 3.2), dpi=100)
    ax = fig.subplots()
    ax.hist(np.asarray(values), bins=bins, range=range_, color="#3070b0", edgecolor="white")
    ax.axvline(float(np.mean(values)), color="#d03030", lw=1.5, label=f"mean {np.mean(values):.3f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend()
    return save(fig, path)


def history_curves(path, history: list[dict], headline: str | None) -> Path:
    """Loss curves of a training history (train, train no-dropout, valid) and the headline metric on a second
    axis, the best epoch marked: history.png."""
    fig = Figure(figsize=(10, 5), dpi=80)
    ax = fig.subplots()
    epochs = [r["epoch"] for r in history]
    for key, label in (("train_loss", "train"), ("train_eval_loss", "train (dropout off)"), ("valid_loss", "valid")):
        ax.plot(epochs, [r[key] for r in history], label=label)
    best = [r["epoch"] for r in history if r.get("best")]
    if best:
        ax.axvline(best[-1], color="grey", linestyle=":", label=f"best (epoch {best[-1]})")
    ax.set(xlabel="epoch", ylabel="loss")
    handles, labels = ax.get_legend_handles_labels()
    if headline:
        ax2 = ax.twinx()
        ax2.plot(epochs, [r[f"valid_{headline}"] for r in history], color="tab:red", linestyle="--",
                 label=f"valid {headline}")
        ax2.set_ylabel(headline)
        handles2, labels2 = ax2.get_legend_handles_labels()
        handles, labels = handles + handles2, labels + labels2
    ax.legend(handles, labels, loc="upper right")
    return save(fig, path)


def weight_map(background, weights, path, title: str) -> Path:
    """A grid of weights (rows down the crop) over a crop: where on the head keypoints are worth most."""
    fig = Figure(figsize=(4.6, 3.6), dpi=100)
    ax = fig.subplots()
    ax.imshow(np.asarray(background), extent=(0, 1, 1, 0))
    shown = ax.imshow(np.asarray(weights), extent=(0, 1, 1, 0), cmap="magma", alpha=0.6, interpolation="nearest")
    fig.colorbar(shown, ax=ax, label="vote weight (gallery mean 1)")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    return save(fig, path)


def saliency_overlays(images, heatmaps, path, titles=None, ncols: int = 4):
    """Photos with their occlusion maps over them (red: occluding this hurts)."""
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig = Figure(figsize=(3 * min(ncols, n), 3 * nrows * _aspect(images)), dpi=100)
    axes = fig.subplots(nrows, min(ncols, n), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n]):
        ax.imshow(images[i])
        heat = np.clip(heatmaps[i] / max(np.abs(heatmaps[i]).max(), 1e-9), 0, 1)
        ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
    return save(fig, path)


def _png(image, path) -> Path:
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=1)     # zlib's fastest: 5x quicker than the default, files ~30% larger
    atomic.write_bytes(path, buf.getvalue())
    return Path(path)


def _pil(image) -> Image.Image:
    """RGB Pillow image of an (H, W), (H, W, 1) or (H, W, 3) array, uint8 or float in [0, 1]."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(np.round(a * 255 if a.size and a.max() <= 1.0 else a), 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    return Image.fromarray(a).convert("RGB")


def _fit_width(im: Image.Image, width: int) -> Image.Image:
    return im.resize((width, max(1, round(im.height * width / max(im.width, 1)))), Image.Resampling.BILINEAR)


def _titled(image: np.ndarray, title: str, width: int) -> Image.Image:
    """An image scaled to `width` with a line of title above it."""
    im = _fit_width(_pil(image), width)
    cell = Image.new("RGB", (width, im.height + TITLE_PX), "white")
    cell.paste(im, (0, TITLE_PX))
    ImageDraw.Draw(cell).text((2, 1), title, fill="black", font=_font())
    return cell


def _font():
    try:
        return ImageFont.load_default(size=TITLE_PX - 4)
    except TypeError:                # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def contact_sheet(images, path, titles, ncols: int = 4, cell: int = 160) -> Path:
    """Images in a grid of `ncols` columns, each `cell` pixels wide with its title above (Pillow); an image
    None leaves its cell blank."""
    cells = [_titled(im, t, cell) if im is not None else Image.new("RGB", (cell, cell), "white")
             for im, t in zip(images, titles)]
    rows = max(1, -(-len(cells) // ncols))
    height = max((c.height for c in cells), default=cell)
    sheet = Image.new("RGB", (ncols * (cell + GAP_PX), rows * (height + GAP_PX)), "white")
    for k, c in enumerate(cells):
        sheet.paste(c, ((k % ncols) * (cell + GAP_PX), (k // ncols) * (height + GAP_PX)))
    return _png(sheet, path)


def match_pairs(rows, path, cell: int = 224) -> Path:
    """One row per query: the query crop beside a candidate crop, RANSAC inlier pairs joined by lines (Pillow).
    `rows`: dicts with query, candidate (RGB arrays), query_xy, candidate_xy ((m, 2) pixel points of
    the pairs, in the arrays' own pixels) and title."""
    drawn = []
    for row in rows:
        q, c = _pil(row["query"]), _pil(row["candidate"])
        sq, sc = cell / max(q.width, 1), cell / max(c.width, 1)
        q, c = _fit_width(q, cell), _fit_width(c, cell)
        pair = Image.new("RGB", (2 * cell + GAP_PX, max(q.height, c.height) + TITLE_PX), "white")
        pair.paste(q, (0, TITLE_PX))
        pair.paste(c, (cell + GAP_PX, TITLE_PX))
        draw = ImageDraw.Draw(pair)
        draw.text((2, 1), row["title"], fill="black", font=_font())
        for (x0, y0), (x1, y1) in zip(np.asarray(row["query_xy"]), np.asarray(row["candidate_xy"])):
            a, b = (x0 * sq, y0 * sq + TITLE_PX), (x1 * sc + cell + GAP_PX, y1 * sc + TITLE_PX)
            draw.line([a, b], fill=(96, 255, 96), width=1)
            for x, y in (a, b):
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(255, 224, 48))
        drawn.append(pair)
    sheet = Image.new("RGB", (2 * cell + GAP_PX, sum(p.height + GAP_PX for p in drawn)), "white")
    top = 0
    for p in drawn:
        sheet.paste(p, (0, top))
        top += p.height + GAP_PX
    return _png(sheet, path)
