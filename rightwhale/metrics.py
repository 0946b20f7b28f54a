"""Scores of the pipeline: Kaggle's log loss, top-k accuracy, box IoU, point errors.

`log_loss` and `top_k_accuracy` summarise a whole prediction set (numpy). The
per-example functions (`top_k_hits`, `iou`, `point_errors`) work on numpy
arrays and, unchanged, on JAX arrays inside a jitted step, so the training
loop's per-example metrics and the offline evaluation share one definition.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

KAGGLE_EPS = 1e-15


def _xp(*arrays):
    """jax.numpy when any input is a JAX array (or tracer), numpy otherwise."""
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def _coords(what, a, b):
    """Paired (..., 4) coordinate arrays in the namespace they came in (numpy as float64)."""
    xp = _xp(a, b)
    if xp is np:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.shape[-1:] != (4,):
        raise ValueError(f"{what}: expected two arrays of the same shape (..., 4), "
                         f"got {a.shape} and {b.shape}")
    return xp, a, b


def _check_scores(probs, labels, what):
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if probs.ndim != 2:
        raise ValueError(f"{what}: expected probabilities of shape (N, classes), got {probs.shape}")
    if labels.shape != (probs.shape[0],):
        raise ValueError(f"{what}: {labels.shape[0] if labels.ndim else 0} labels for "
                         f"{probs.shape[0]} rows of probabilities (labels shape {labels.shape})")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what}: labels must be integer class indices, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"{what}: labels must lie in [0, {probs.shape[1]}), "
                         f"got range [{labels.min()}, {labels.max()}]")
    return probs, labels


def log_loss(probs, labels, eps: float = KAGGLE_EPS) -> float:
    """Multiclass log loss as Kaggle scored it: rows rescaled to sum 1, clipped to
    [eps, 1 - eps], renormalised (the last step as scikit-learn's log_loss did).
    """
    probs, labels = _check_scores(probs, labels, "log_loss")
    if (probs < 0).any() or not (probs.sum(axis=1) > 0).all():
        raise ValueError("log_loss: probabilities must be non-negative with a positive sum per row")
    p = np.clip(probs / probs.sum(axis=1, keepdims=True), eps, 1 - eps)
    p /= p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(labels)), labels])))


def class_prior(labels, num_classes: int) -> np.ndarray:
    """Add-one smoothed training frequencies: the baseline that knows no pixels."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes) + 1.0
    return counts / counts.sum()


def top_k_hits(scores, labels, k: int = 1):
    """Per example: is the true class among the k highest scores? (ties count as hits)"""
    xp = _xp(scores, labels)
    if xp is np:
        scores, labels = np.asarray(scores), np.asarray(labels)
    true_score = xp.take_along_axis(scores, labels[:, None].astype(xp.int32), axis=1)
    return (scores > true_score).sum(axis=1) < k


def top_k_accuracy(probs, labels, k: int = 1) -> float:
    """Fraction of examples whose true class is among the k most probable."""
    probs, labels = _check_scores(probs, labels, "top_k_accuracy")
    return float(np.mean(top_k_hits(probs, labels, k)))


def iou(boxes_a, boxes_b):
    """Intersection over union of paired boxes (..., 4) given as (x, y, width, height)."""
    xp, boxes_a, boxes_b = _coords("iou", boxes_a, boxes_b)
    ax, ay, aw, ah = (boxes_a[..., i] for i in range(4))
    bx, by, bw, bh = (boxes_b[..., i] for i in range(4))
    iw = xp.clip(xp.minimum(ax + aw, bx + bw) - xp.maximum(ax, bx), 0, None)
    ih = xp.clip(xp.minimum(ay + ah, by + bh) - xp.maximum(ay, by), 0, None)
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / xp.maximum(union, 1e-12)


def point_errors(pred, true):
    """Distances of predicted bonnet and blowhead from the truth.

    pred, true: (..., 4) as (bonnet x, y, blowhead x, y). Returns (pixels, fraction):
    both (..., 2) for (bonnet, blowhead); pixels in the inputs' unit, fraction
    relative to the true bonnet-blowhead distance (scale-free, comparable
    across photo sizes).
    """
    xp, pred, true = _coords("point_errors", pred, true)
    diff = (pred - true).reshape(pred.shape[:-1] + (2, 2))
    pixels = xp.sqrt((diff ** 2).sum(axis=-1))
    head = true[..., 0:2] - true[..., 2:4]
    length = xp.sqrt((head ** 2).sum(axis=-1, keepdims=True))
    return pixels, pixels / xp.maximum(length, 1e-12)
