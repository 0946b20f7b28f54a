"""Scores of the pipeline: Kaggle's log loss, top-k accuracy, box IoU, point errors. The per-example
ones (`top_k_hits`, `iou`, `point_errors`) take numpy arrays and, unchanged, JAX arrays inside a
jitted step, so the training loop and the offline evaluation share one definition."""
import math

import jax
import jax.numpy as jnp
import numpy as np


def _xp(*arrays, dtype=None):
    if any(isinstance(a, jax.Array) for a in arrays):  # tracers in a jitted step are jax.Arrays too
        return jnp, *arrays
    return np, *(np.asarray(a, dtype=dtype) for a in arrays)


def _coords(what, a, b):
    xp, a, b = _xp(a, b, dtype=np.float64)
    if a.shape != b.shape or a.shape[-1:] != (4,):
        raise ValueError(f"{what}: expected two arrays of the same shape (..., 4), got {a.shape} and {b.shape}")
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


def log_loss(probs, labels, eps: float = 1e-15) -> float:
    """Kaggle's multiclass log loss: rows rescaled to sum 1, clipped to [eps, 1 - eps], renormalised (as sklearn)."""
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
    xp, scores, labels = _xp(scores, labels)
    true_score = xp.take_along_axis(scores, labels[:, None].astype(xp.int32), axis=1)
    return (scores > true_score).sum(axis=1) < k


def top_k_accuracy(probs, labels, k: int = 1) -> float:
    """Fraction of examples whose true class is among the k most probable."""
    return float(np.mean(top_k_hits(*_check_scores(probs, labels, "top_k_accuracy"), k)))


def iou(boxes_a, boxes_b):
    """Intersection over union of paired boxes (..., 4) given as (x, y, width, height)."""
    xp, a, b = _coords("iou", boxes_a, boxes_b)
    (ax, ay, aw, ah), (bx, by, bw, bh) = xp.moveaxis(a, -1, 0), xp.moveaxis(b, -1, 0)
    inter = (xp.clip(xp.minimum(ax + aw, bx + bw) - xp.maximum(ax, bx), 0, None)
             * xp.clip(xp.minimum(ay + ah, by + bh) - xp.maximum(ay, by), 0, None))
    return inter / xp.maximum(aw * ah + bw * bh - inter, 1e-12)


def point_errors(pred, true):
    """Distances of the predicted bonnet and blowhead (..., 4 as bonnet x, y, blowhead x, y) from the
    truth: (pixels, fraction), both (..., 2), fraction relative to the true bonnet-blowhead distance."""
    xp, pred, true = _coords("point_errors", pred, true)
    pixels = xp.sqrt(((pred - true).reshape(pred.shape[:-1] + (2, 2)) ** 2).sum(axis=-1))
    length = xp.sqrt(((true[..., 0:2] - true[..., 2:4]) ** 2).sum(axis=-1, keepdims=True))
    return pixels, pixels / xp.maximum(length, 1e-12)


def classification_scores(probs, labels, prior) -> dict:
    """What every classifier's results.json reports: Kaggle's log loss next to chance and the class prior."""
    k = probs.shape[1]
    loss = log_loss(probs, labels)
    return {"validation images": len(labels), "classes": k,
            "log loss": loss, "log loss / ln K": loss / math.log(k),
            "top-1 accuracy": top_k_accuracy(probs, labels, 1),
            "top-5 accuracy": top_k_accuracy(probs, labels, min(5, k)),
            "chance log loss (ln K)": math.log(k),
            "class-prior log loss": log_loss(np.tile(prior, (len(labels), 1)), labels)}
