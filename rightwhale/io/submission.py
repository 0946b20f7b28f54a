"""Kaggle submissions: `Image`, then one probability column per whale; gzipped when the name ends in .gz
(Kaggle accepted that). Header and row order come from sample_submission.csv, so every model and the
stacker write the same table."""
import csv
import gzip
from pathlib import Path

import numpy as np

from rightwhale.core import atomic


def normalise(probs: np.ndarray, eps: float = 1e-15) -> np.ndarray:
    """Clip and renormalise rows, as Kaggle did before scoring."""
    probs = np.clip(np.asarray(probs, np.float64), eps, 1 - eps)
    return probs / probs.sum(axis=1, keepdims=True)


def write_submission(path, images: list[str], classes: list[str], probs: np.ndarray) -> Path:
    """Write `images` x `classes` probabilities; gzip when the name ends in .gz."""
    if not np.isfinite(np.asarray(probs, np.float64)).all():
        raise ValueError(f"{path}: refusing to write non-finite probabilities (a corrupt checkpoint or a "
                         "diverged run upstream)")
    path, probs = Path(path), normalise(probs)
    if probs.shape != (len(images), len(classes)):
        raise ValueError(f"probabilities of shape {probs.shape} for {len(images)} images x {len(classes)} classes")
    body = "".join(name + "," + ",".join(f"{p:.8g}" for p in row) + "\n" for name, row in zip(images, probs))
    data = (",".join(["Image", *classes]) + "\n" + body).encode()
    atomic.write_bytes(path, gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


def read_submission(path) -> tuple[list[str], list[str], np.ndarray]:
    """(images, classes, probabilities) of a submission or sample submission."""
    path = Path(path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "rt", newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][:1] != ["Image"]:
        raise ValueError(f"{path}: first column must be 'Image'")
    header, body = rows[0], rows[1:]
    for i, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}:{i}: {len(row)} fields, header has {len(header)}")
    try:
        probs = np.array([[float(v) for v in row[1:]] for row in body], np.float64).reshape(len(body), len(header) - 1)
    except ValueError as e:
        raise ValueError(f"{path}: non-numeric probability ({e})") from None
    return [row[0] for row in body], header[1:], probs


def check_submission(path, sample_path) -> None:
    """Raise ValueError unless `path` has the sample's header and rows, rows summing to 1."""
    images, classes, probs = read_submission(path)
    s_images, s_classes, _ = read_submission(sample_path)
    if classes != s_classes:
        raise ValueError(f"{path}: class columns differ from {sample_path}")
    if images != s_images:
        raise ValueError(f"{path}: image rows differ from {sample_path}")
    if not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise ValueError(f"{path}: probabilities must be finite and non-negative")
    bad = np.flatnonzero(np.abs(probs.sum(axis=1) - 1) > 1e-4)
    if bad.size:
        raise ValueError(f"{path}: row {bad[0] + 2} ({images[bad[0]]}) sums to {probs[bad[0]].sum():.6f}, not 1")
