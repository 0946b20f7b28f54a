"""Is this a whale of the catalogue at all? The matcher's new-whale score and its threshold.

A catalogue never holds every whale, so identify must be able to say "probably
no whale we know". The score is how little the best catalogue whale stands out
from the next ones (`novelty_score`); what "little" means is learnt from the catalogue itself:
each of its crops scored with its own crop left out (a known whale) and with
its whole whale left out (a new whale, `leave_whales_out`). The default
threshold is the one that costs known whales at most `KNOWN_LOSS` of top-1
(correctly named crops flagged new); the share of new whales it flags is
what the catalogue measured, not a hand-set number.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from rightwhale.core.config import Match
from rightwhale.scorers import matching

FOLDS = 5            # whales left out in turn, a fifth of them at a time
KNOWN_LOSS = 0.04    # default operating point: known-whale top-1 this much lower at most
BACKGROUND = 10      # whales after the best one that say how well anything matches a crop
EPS = 1e-3           # scores are sums of LNBNN weights (about 0.01-0.3 each); a crop with no votes scores 0


def novelty_score(scores: np.ndarray) -> np.ndarray:
    """(n, whales) matcher scores -> (n,) higher = less like any catalogue whale: how little the best whale
    stands out from the next `BACKGROUND`, log(their mean) - log(best). A ratio, not the best score alone:
    crops differ in how many keypoints match anything at all. On the real crops' catalogue (whales left out
    in turn) its ROC AUC is 0.78, the best score alone 0.71, the best minus the second 0.75."""
    s = -np.sort(-np.atleast_2d(np.asarray(scores, np.float64)), axis=1)
    best = s[:, 0] if s.shape[1] else np.zeros(len(s))
    rest = s[:, 1:1 + BACKGROUND].mean(axis=1) if s.shape[1] > 1 else np.zeros(len(s))
    return np.log(rest + EPS) - np.log(best + EPS)


def leave_whales_out(gallery: matching.Gallery, classes, cfg: Match, seed: int = 0, folds: int = FOLDS,
                     progress: bool = True, weights=None) -> np.ndarray:
    """Matcher scores of every gallery crop against the gallery without any crop of its whale: how a
    whale new to the catalogue scores. Whales go into `folds` groups; one matcher per group, with the
    whole gallery's keypoint `weights` (a table of place, size and rank, too coarse to remember a whale)."""
    whales = sorted(set(gallery.whales))
    group = dict(zip(whales, np.random.default_rng(seed).permutation(len(whales)) % folds))
    crop_group = np.array([group[w] for w in gallery.whales])
    scores = np.zeros((len(gallery), len(classes)))
    for g in tqdm(range(folds), disable=not progress, desc="whales left out", unit="fold"):
        out = np.flatnonzero(crop_group == g)
        if not len(out):
            continue
        matcher = matching.Matcher(gallery.subset(np.flatnonzero(crop_group != g)), classes, cfg, weights)
        scores[out] = matching.score_matrix(matcher.score_many([gallery.features(i) for i in out]), len(classes))
    return scores


@dataclass(frozen=True)
class Threshold:
    """Flag a crop `new?` when novelty_score > threshold."""
    threshold: float
    known_loss: float            # the operating point it was chosen for
    auc: float                   # known (own crop left out) against new (whole whale left out), on the catalogue
    new_flagged: float           # share of left-out whales flagged at this threshold, on the catalogue

    def is_new(self, scores: np.ndarray) -> np.ndarray:
        return novelty_score(scores) > self.threshold

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def fit_threshold(known_scores, known_labels, new_scores, known_loss: float = KNOWN_LOSS) -> Threshold:
    """The lowest threshold at which at most `known_loss` of the known crops are named correctly and
    flagged new. `known_scores` are leave-one-out scores, `new_scores` leave-whale-out scores."""
    known, new = novelty_score(known_scores), novelty_score(new_scores)
    if not len(known) or not len(new):
        raise ValueError("a new-whale threshold needs crops of known and of left-out whales")
    right = np.asarray(known_scores).argmax(axis=1) == np.asarray(known_labels)
    allowed = math.floor(known_loss * len(known))
    # flagged-and-right crops are those of a right crop's novelty above the threshold: keep `allowed` of them
    right_novelty = np.sort(known[right])[::-1]
    threshold = float(right_novelty[allowed]) if allowed < len(right_novelty) else float(known.min()) - 1
    return Threshold(threshold, known_loss, _auc(known, new), float(np.mean(new > threshold)))


def _auc(known: np.ndarray, new: np.ndarray) -> float:
    """ROC AUC of novelty scores, new whales the positives."""
    return float(roc_auc_score(np.r_[np.zeros(len(known)), np.ones(len(new))], np.r_[known, new]))


def open_set_scores(known_scores, known_labels, new_scores, threshold: Threshold) -> dict:
    """How a threshold does on held-out crops: known whales' top-1 with and without flagging, new whales
    flagged, and the ROC AUC of the novelty score."""
    known, new = novelty_score(known_scores), novelty_score(new_scores)
    right = np.asarray(known_scores).argmax(axis=1) == np.asarray(known_labels)
    flagged = known > threshold.threshold
    return {"known crops": int(len(known)), "new-whale crops": int(len(new)),
            "new-whale ROC AUC": _auc(known, new),
            "new-whale crops flagged new?": float(np.mean(new > threshold.threshold)),
            "known crops flagged new?": float(np.mean(flagged)),
            "known top-1, no new-whale flag": float(np.mean(right)),
            "known top-1 with the flag (flagged counts as wrong)": float(np.mean(right & ~flagged)),
            "threshold": threshold.threshold}
