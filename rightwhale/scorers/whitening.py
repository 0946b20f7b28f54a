"""Descriptor whitening learnt from the catalogue's own matches: RootSIFT made more telling before the kNN.

RootSIFT's 128 components are strongly correlated, and the directions in which
two views of one callosity differ (blur, glare, water over the skin) are not the
directions in which different whales differ. The classical remedy in image
retrieval is a linear whitening learnt from matching pairs (Mikolajczyk & Matas
2010; Radenovic et al. 2016): divide out the covariance of the differences
between descriptors of the same physical point, then decorrelate what is left
(a PCA of the whitened descriptors, its axes scaled by eigenvalue ** -POWER),
and L2-normalise.

The pairs come from the gallery itself: for crops of one whale, mutual nearest
descriptors near the same place on the (aligned) crops, kept where a RANSAC
similarity agrees with them. No label beyond the gallery's own is needed, and
crops added to the catalogue later are whitened with the same matrix.

Measured on 2,000 real training crops by leave-one-out, the whitening learnt
from the other training crops (bench/tune_match.py): top-1 61.9% -> 65.2%,
top-5 69.3% -> 73.4%; on the real validation crops 67.9% -> 70.1%.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from rightwhale.core.errors import DataError

DIM = 128
PAIR_RADIUS = 0.1        # candidate pairs lie this near (fraction of the crop) on the two aligned crops
PAIR_RANSAC = 0.02       # a pair is kept when a RANSAC similarity maps one onto the other this closely
MIN_INLIERS = 6          # crop pairs with fewer agreeing descriptor pairs are no evidence
CROP_PAIRS = 30          # crop pairs per whale at most (a whale with 38 crops has 703)
MIN_PAIRS = 500          # fewer descriptor pairs than this: no whitening (too little to learn 128 x 128 from)
SHRINK = 0.1             # ridge added to the pairs' covariance, as a share of its mean eigenvalue
POWER = 0.25             # the decorrelated axes are scaled by eigenvalue ** -POWER (0: rotation only)
SAMPLE = 200_000         # descriptors whose covariance is decorrelated


@dataclass(frozen=True)
class Whitening:
    """y = normalise((x - mean) @ projection) for RootSIFT x in [0, 1]."""
    mean: np.ndarray          # (128,) float32
    projection: np.ndarray    # (128, 128) float32

    def apply(self, descriptors: np.ndarray) -> np.ndarray:
        """(n, 128) uint8 RootSIFT (or floats in [0, 1]) -> (n, 128) float32 of unit length."""
        x = np.asarray(descriptors, np.float32)
        if descriptors.dtype == np.uint8:
            x = x / np.float32(255.0)
        y = (x - self.mean) @ self.projection
        return (y / (np.linalg.norm(y, axis=1, keepdims=True) + 1e-9)).astype(np.float32)

    @classmethod
    def fit(cls, descriptors: np.ndarray, a: np.ndarray, b: np.ndarray, seed: int = 0,
            shrink: float = SHRINK, power: float = POWER) -> "Whitening":
        """From all descriptors (uint8) and pairs of rows (a[i], b[i]) showing one point of one whale."""
        x = lambda rows: np.asarray(descriptors[rows], np.float64) / 255.0      # noqa: E731
        diff = x(a) - x(b)
        within = diff.T @ diff / len(diff)
        within += shrink * np.trace(within) / DIM * np.eye(DIM)
        e, v = np.linalg.eigh(within)
        to_within = v @ np.diag(e ** -0.5) @ v.T
        rows = np.sort(np.random.default_rng(seed).permutation(len(descriptors))[:SAMPLE])
        sample = x(rows)
        mean = sample.mean(axis=0)
        e2, v2 = np.linalg.eigh(np.cov(((sample - mean) @ to_within).T))
        e2, v2 = e2[::-1], v2[:, ::-1]
        projection = to_within @ v2 * np.maximum(e2, 1e-12) ** -power
        return cls(mean.astype(np.float32), projection.astype(np.float32))

    def arrays(self) -> dict:
        return {"whitening_mean": self.mean, "whitening_projection": self.projection}

    @classmethod
    def from_arrays(cls, mean: np.ndarray, projection: np.ndarray, source) -> "Whitening | None":
        """Read back and check; empty arrays mean no whitening."""
        if not mean.size and not projection.size:
            return None
        if mean.shape != (DIM,) or projection.shape != (DIM, DIM) or not (
                np.isfinite(mean).all() and np.isfinite(projection).all()):
            raise DataError(f"{source}: corrupt descriptor whitening (mean {mean.shape}, projection "
                            f"{projection.shape}, finite: {bool(np.isfinite(projection).all())})")
        return cls(mean.astype(np.float32), projection.astype(np.float32))

    @staticmethod
    def none_arrays() -> dict:
        return {"whitening_mean": np.zeros(0, np.float32), "whitening_projection": np.zeros((0, DIM), np.float32)}


def positive_pairs(gallery, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows (a, b) of descriptor pairs that show one point of one whale: for up to CROP_PAIRS pairs of crops
    of each whale, the mutual nearest descriptors within PAIR_RADIUS of each other's place, kept where a
    RANSAC similarity fitted to them agrees (OpenCV)."""
    import cv2
    cv2.setNumThreads(1)
    cv2.setRNGSeed(seed)
    rng = np.random.default_rng(seed)
    offsets, keypoints, descriptors = gallery.offsets, gallery.keypoints, gallery.descriptors
    whales = np.asarray(gallery.whales)
    a_rows, b_rows = [], []
    for whale in sorted(set(whales.tolist())):
        crops = list(itertools.combinations(np.flatnonzero(whales == whale), 2))
        if len(crops) > CROP_PAIRS:
            crops = [crops[i] for i in np.sort(rng.permutation(len(crops))[:CROP_PAIRS])]
        for i, j in crops:
            ri, rj = np.arange(offsets[i], offsets[i + 1]), np.arange(offsets[j], offsets[j + 1])
            if len(ri) < MIN_INLIERS or len(rj) < MIN_INLIERS:
                continue
            xi, xj = descriptors[ri].astype(np.float32), descriptors[rj].astype(np.float32)
            dist = (xi ** 2).sum(1)[:, None] - 2 * xi @ xj.T + (xj ** 2).sum(1)[None]
            ki, kj = keypoints[ri, :2], keypoints[rj, :2]
            dist[np.linalg.norm(ki[:, None] - kj[None], axis=2) > PAIR_RADIUS] = np.inf
            to_j, to_i = dist.argmin(axis=1), dist.argmin(axis=0)
            mutual = np.flatnonzero((to_i[to_j] == np.arange(len(ri))) & np.isfinite(dist[np.arange(len(ri)), to_j]))
            if len(mutual) < MIN_INLIERS:
                continue
            model, mask = cv2.estimateAffinePartial2D(ki[mutual].astype(np.float64), kj[to_j[mutual]].astype(np.float64),
                                                      method=cv2.RANSAC, ransacReprojThreshold=PAIR_RANSAC,
                                                      maxIters=500, refineIters=0)
            if model is None or mask.sum() < MIN_INLIERS:
                continue
            kept = mutual[mask.ravel().astype(bool)]
            a_rows.append(ri[kept])
            b_rows.append(rj[to_j[kept]])
    if not a_rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(a_rows), np.concatenate(b_rows)


def learn(gallery, seed: int = 0) -> Whitening | None:
    """The whitening of a gallery's (matching.Gallery) descriptors, or None when its crops give fewer than
    MIN_PAIRS pairs (a catalogue of single crops: the matcher then compares raw RootSIFT)."""
    a, b = positive_pairs(gallery, seed)
    return Whitening.fit(gallery.descriptors, a, b, seed) if len(a) >= MIN_PAIRS else None
