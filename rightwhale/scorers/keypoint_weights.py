"""Where on a head crop a keypoint names its whale: a weight for each keypoint's votes, learnt from the gallery.

Not every SIFT keypoint of a head crop is callosity. Those on water, splash
and the crop's margins match the water of other whales' crops as readily as
their own whale's, and LNBNN counts their votes like any other. HotSpotter's
successors weight features by "foregroundness" with a CNN; here the weight is
a table over what every keypoint has without one: its place on the crop
(12 x 12 cells), its size and its strength rank (5 bins each). A cell's weight
is the share of the LNBNN weight its keypoints gave their own whale in the
gallery's leave-one-out scores, the sums blurred over neighbouring cells and
drawn toward the overall share where they are thin, divided by its mean over
the gallery. A vote counts the geometric mean of its two keypoints' weights.

Measured on 2,000 real training crops of ../shared/data/rightwhale-heads by
leave-one-out, the table learnt from the other training crops' votes among
themselves (bench/tune_match.py): top-1 59.9% -> 61.9% (62.9% with their votes
over the whole gallery); on the real validation crops 64.0% -> 68.1%. Gradient
boosting on the same axes (63.4%), colour at the keypoint (63.6%) or a second
table over visual words (62.4%) were not worth their weight (core/config.py,
Match, lists more).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from rightwhale.core.errors import DataError

PLACE_BINS = 12         # cells across and down the crop
SIZE_BINS = RANK_BINS = 5
SMOOTH = 0.6            # cells: the Gaussian blur of the weight sums
PRIOR = 5.0             # keypoints' worth of the overall share added to every (blurred) cell


def _describe(keypoints: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """(n, 4): x, y, log size, strength rank: the table's axes."""
    return np.c_[keypoints[:, 0], keypoints[:, 1], np.log(np.maximum(keypoints[:, 2], 1e-6)), ranks]


@dataclass(frozen=True)
class KeypointWeights:
    """A table of vote weights; `edges[j]` are the inner bin edges of axis j (x, y, log size, rank)."""
    edges: tuple[np.ndarray, ...]
    table: np.ndarray

    def cells(self, keypoints: np.ndarray, ranks: np.ndarray) -> np.ndarray:
        x = _describe(np.asarray(keypoints, np.float64), np.asarray(ranks, np.float64))
        bins = [np.searchsorted(e, x[:, j], side="right") for j, e in enumerate(self.edges)]
        return np.ravel_multi_index(bins, self.table.shape)

    def of(self, keypoints: np.ndarray, ranks: np.ndarray | None = None) -> np.ndarray:
        """(n,) weights of a crop's keypoints; ranks default to their order (crop_features lists the
        strongest first)."""
        ranks = np.arange(len(keypoints)) if ranks is None else ranks
        return self.table.ravel()[self.cells(keypoints, ranks)].astype(np.float32)

    def by_place(self) -> np.ndarray:
        """(down, across) mean weight of each place on the crop, over sizes and ranks: for the picture."""
        return self.table.mean(axis=(2, 3)).T

    @classmethod
    def fit(cls, keypoints, ranks, own, other, max_keypoints: int, prior: float = PRIOR) -> "KeypointWeights":
        """From query keypoints (n, 4) with their ranks, the LNBNN weight each gave its own whale (`own`)
        and all other whales (`other`) in leave-one-out scores."""
        keypoints, own, other = np.asarray(keypoints, np.float64), np.asarray(own), np.asarray(other)
        if not len(keypoints) or own.sum() <= 0:
            raise ValueError("keypoint weights need leave-one-out votes for the crops' own whales")
        log_size = np.log(np.maximum(keypoints[:, 2], 1e-6))
        inner = lambda bins: np.arange(1, bins) / bins        # noqa: E731
        edges = (inner(PLACE_BINS), inner(PLACE_BINS), np.quantile(log_size, inner(SIZE_BINS)),
                 max_keypoints * inner(RANK_BINS))
        shape = (PLACE_BINS, PLACE_BINS, SIZE_BINS, RANK_BINS)
        cell = cls(edges, np.zeros(shape)).cells(keypoints, ranks)
        # weight sums per cell, blurred across neighbouring cells so that a thin cell borrows from them
        t, o = (ndimage.gaussian_filter(np.bincount(cell, v, int(np.prod(shape))).reshape(shape), SMOOTH,
                                        mode="nearest") for v in (own, other))
        share, mean = own.sum() / (own.sum() + other.sum()), float((own + other).mean())
        table = (t + prior * mean * share) / (t + o + prior * mean)
        return cls(edges, table / table.ravel()[cell].mean())

    def to_dict(self) -> dict:
        return {"axes": ["x", "y", "log size", "rank"], "edges": [e.tolist() for e in self.edges],
                "table": self.table.tolist()}

    @classmethod
    def from_dict(cls, d: dict, source) -> "KeypointWeights":
        """Read back and check (calibration.json of a match run)."""
        try:
            edges = tuple(np.asarray(e, np.float64) for e in d["edges"])
            table = np.asarray(d["table"], np.float64)
            axes_ok = all(e.ndim == 1 and len(e) == n - 1 and np.isfinite(e).all() and (np.diff(e) >= 0).all()
                          for e, n in zip(edges, table.shape))
            ok = (len(edges) == table.ndim == 4 and axes_ok and np.isfinite(table).all() and (table > 0).all()
                  and (table < 1e6).all())
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{source}: unreadable keypoint weights ({type(e).__name__}: {e})") from e
        if not ok:
            raise DataError(f"{source}: keypoint weights are not a 4-axis table of positive weights (below "
                            "1e6) with finite, matching bin edges")
        return cls(edges, table)
