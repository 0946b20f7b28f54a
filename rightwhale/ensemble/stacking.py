"""Stage 5: stack the GAP features of several classifiers with a logistic regression.

The writeup's lesson: features the classifiers extracted from their own
training images are separable by construction (the stacker reaches ~100%
training accuracy and learns nothing transferable). The stacker must be
fitted on out-of-fold features: images the feature models never trained
on. Here those are the stored validation split; C is tuned and the held-out
loss measured by nested cross-validation over it.

Out-of-fold images are few (one or two per whale), so a cross-validation
fold often lacks a whale entirely; the logistic regression then gives it
probability zero. The stacker therefore mixes its softmax with the class
prior of what it was fitted on: p = (1 - floor) * softmax + floor * prior,
with C and floor tuned together.

`Stacker` is a scikit-learn estimator, so GridSearchCV chooses (C, floor) and
cross_validate nests that choice; it is saved as plain arrays (npz, no
pickle): scaler mean and scale, coefficients, intercepts, prior and the
hyper-parameters.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
from sklearn.utils.validation import check_is_fitted

from rightwhale.core import atomic
from rightwhale.core.errors import DataError
from rightwhale.core.metrics import class_prior, log_loss

C_GRID = (0.003, 0.03, 0.3)
FLOOR_GRID = (0.05, 0.2, 0.5)
GRID = tuple((C, floor) for C in C_GRID for floor in FLOOR_GRID)


# GridSearchCV fits every (C, floor) pair afresh, but the floor only mixes the fitted softmax with the prior
# at prediction: the logistic regressions of one C on one fold are the same fit, three times. lbfgs is
# deterministic, so a small cache of fits by (C, data) returns what refitting would (on the real crops'
# 447 whales it cuts ensemble.py's fits threefold).
_FITS: dict = {}
_FITS_KEPT = 32


def _logistic_fit(C: float, max_iter: int, standardised: np.ndarray, labels: np.ndarray):
    """(coef, intercept, classes) of a multinomial logistic regression, fitted once per (C, data)."""
    digest = hashlib.sha1(np.ascontiguousarray(standardised).tobytes() + np.ascontiguousarray(labels).tobytes())
    key = (C, max_iter, standardised.shape, digest.hexdigest())
    if key in _FITS:
        return _FITS[key]
    lr = LogisticRegression(C=C, max_iter=max_iter)
    with warnings.catch_warnings():   # one or two images per whale is what out-of-fold data looks like
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        lr.fit(standardised, labels)
    while _FITS and len(_FITS) >= _FITS_KEPT:      # the oldest fit goes first
        _FITS.pop(next(iter(_FITS)))
    if _FITS_KEPT:
        _FITS[key] = (lr.coef_, lr.intercept_, lr.classes_)
    return lr.coef_, lr.intercept_, lr.classes_


class Stacker(ClassifierMixin, BaseEstimator):
    """Standardise, multinomial logistic regression over `num_classes` columns, prior floor.

    A scikit-learn estimator (clone, GridSearchCV): the constructor keeps the hyper-parameters only, and
    fit sets every learnt attribute (ending in `_`) afresh. Columns are the class indices 0..num_classes-1
    whatever the labels seen, so folds missing whales still give every whale a column.
    """

    def __init__(self, num_classes, C=0.1, floor=0.2, max_iter=2000):
        self.num_classes = num_classes
        self.C = C
        self.floor = floor
        self.max_iter = max_iter

    def fit(self, features, labels) -> "Stacker":
        features, labels = np.asarray(features, np.float64), np.asarray(labels)
        if labels.ndim != 1 or len(labels) != len(features) or not len(labels):
            raise ValueError(f"Stacker.fit: {len(labels)} labels for {len(features)} feature rows")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"Stacker.fit: labels must be class indices in [0, {self.num_classes})")
        self.classes_ = np.arange(self.num_classes)
        self.mean_ = features.mean(axis=0)
        self.scale_ = features.std(axis=0) + 1e-8
        seen = np.unique(labels)
        self.prior_ = class_prior(labels, self.num_classes)       # add-one smoothed frequencies of the labels
        self.coef_ = np.zeros((self.num_classes, features.shape[1]))   # unseen classes get zeros
        self.intercept_ = np.full(self.num_classes, -np.inf)      # and -inf: only the floor reaches them
        if len(seen) == 1:            # one class: it gets everything
            self.intercept_[seen[0]] = 0.0
            return self
        coef, intercept, classes = _logistic_fit(self.C, self.max_iter, (features - self.mean_) / self.scale_, labels)
        if len(seen) == 2:            # sklearn's binary form: one row for the second class
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
        self.coef_[classes] = coef
        self.intercept_[classes] = intercept
        return self

    def predict_proba(self, features) -> np.ndarray:
        check_is_fitted(self)
        z = ((np.asarray(features, np.float64) - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return (1 - self.floor) * z / z.sum(axis=1, keepdims=True) + self.floor * self.prior_

    def predict(self, features) -> np.ndarray:
        return self.classes_[self.predict_proba(features).argmax(axis=1)]

    def save(self, path) -> None:
        check_is_fitted(self)
        atomic.write_npz(path, num_classes=self.num_classes, C=self.C, floor=self.floor, mean=self.mean_,
                         scale=self.scale_, coef=self.coef_, intercept=self.intercept_, prior=self.prior_)

    @classmethod
    def load(cls, path) -> "Stacker":
        z = atomic.read_npz(path, ["num_classes", "C", "floor", "mean", "scale", "coef", "intercept", "prior"],
                            "python ensemble.py")
        _check_finite(path, z)
        stacker = cls(int(z["num_classes"]), float(z["C"]), float(z["floor"]))
        stacker.classes_ = np.arange(stacker.num_classes)
        stacker.mean_, stacker.scale_, stacker.coef_ = z["mean"], z["scale"], z["coef"]
        stacker.intercept_, stacker.prior_ = z["intercept"], z["prior"]
        return stacker


def _check_finite(path, arrays: dict) -> None:
    """No NaN, no infinity but the -inf intercepts of classes the stacker never saw."""
    bad = [k for k, v in arrays.items() if v.dtype.kind == "f" and (np.isnan(v).any() or np.isinf(
        v if k != "intercept" else np.where(v == -np.inf, 0, v)).any())]
    if bad:
        raise DataError(f"{path}: non-finite {', '.join(bad)}; make it again with `python ensemble.py`")


class _KFold(KFold):
    """KFold with no more folds than images, so the small fit sets inside the nested search still split."""

    def get_n_splits(self, X=None, y=None, groups=None):
        return self.n_splits if X is None else min(self.n_splits, len(X))

    def split(self, X, y=None, groups=None):
        return KFold(self.get_n_splits(X), shuffle=self.shuffle, random_state=self.random_state).split(X, y, groups)


def _summed_log_loss(estimator, features, labels) -> float:
    """Scorer: minus the log loss summed over the fold's images, over all num_classes columns. Fold sums add
    up to the loss of the pooled out-of-fold probabilities; a mean of fold means would weigh folds of
    unequal size unequally."""
    return -log_loss(estimator.predict_proba(features), labels) * len(labels)


def _search(num_classes, grid, folds, seed, refit) -> GridSearchCV:
    """(C, floor) of `grid` (pairs, in order) tried by cross-validated log loss."""
    return GridSearchCV(Stacker(num_classes), [{"C": [C], "floor": [floor]} for C, floor in grid],
                        scoring=_summed_log_loss, cv=_KFold(folds, shuffle=True, random_state=seed),
                        refit=refit, error_score="raise")


def choose_params(features, labels, num_classes, grid=GRID, folds=5, seed=0) -> tuple[tuple, dict]:
    """The (C, floor) of lowest cross-validated log loss, and the loss of every pair tried."""
    search = _search(num_classes, grid, folds, seed, refit=False).fit(features, labels)
    res = search.cv_results_
    losses = {(p["C"], p["floor"]): -mean * search.n_splits_ / len(labels)
              for p, mean in zip(res["params"], res["mean_test_score"])}
    best = res["params"][int(np.argmin(res["rank_test_score"]))]    # GridSearchCV's own best_index_ rule
    return (best["C"], best["floor"]), losses


def nested_cv_proba(features, labels, num_classes, grid=GRID, folds=5, seed=0) -> np.ndarray:
    """Held-out probabilities with (C, floor) chosen inside each outer fold: an honest estimate.

    cross_validate rather than cross_val_predict: the latter re-encodes the labels to those present, and
    out-of-fold data lacks whales, so its columns would no longer be the class indices."""
    features, labels = np.asarray(features), np.asarray(labels)
    res = cross_validate(_search(num_classes, grid, folds, seed, refit=True), features, labels,
                         cv=_KFold(folds, shuffle=True, random_state=seed), scoring=_summed_log_loss,
                         return_estimator=True, return_indices=True, error_score="raise")
    out = np.zeros((len(labels), num_classes))
    for search, held in zip(res["estimator"], res["indices"]["test"]):
        out[held] = search.predict_proba(features[held])
    return out


@dataclass
class LogLinearPool:
    """p ∝ exp(sum_m w_m log p_m), mixed with the prior by `floor`: the members' probabilities stacked with
    one weight per member, shared by every whale.

    A stacker over concatenated features needs images of every whale to learn that whale's columns, and
    out-of-fold data has one or two; these few weights are learnt from all images at once, so a matcher
    and a CNN can be combined by how far each is to be trusted.
    """
    weights_: np.ndarray | None = None     # (members,)
    floor: float = 0.0
    prior_: np.ndarray | None = None

    def _log_proba(self, log_probs, weights, floor):
        z = log_softmax(np.tensordot(weights, log_probs, axes=1), axis=1)
        return np.logaddexp(np.log1p(-floor) + z, np.log(floor) + np.log(self.prior_))

    def fit(self, probs: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> "LogLinearPool":
        """probs: (members, N, K) probabilities of the same images."""
        log_probs = np.log(np.clip(probs, 1e-15, 1))
        self.prior_ = class_prior(labels, num_classes or probs.shape[2])
        rows = np.arange(len(labels))

        def loss(theta):
            return -self._log_proba(log_probs, np.exp(theta[:-1]), expit(theta[-1]))[rows, labels].mean()
        m = len(probs)
        best = minimize(loss, x0=[*np.full(m, np.log(1 / m)), -4.0], method="L-BFGS-B",
                        bounds=[(-8, 3)] * m + [(-12, 0)])
        self.weights_, self.floor = np.exp(best.x[:-1]), float(expit(best.x[-1]))
        return self

    def predict_proba(self, probs: np.ndarray) -> np.ndarray:
        return np.exp(self._log_proba(np.log(np.clip(probs, 1e-15, 1)), self.weights_, self.floor))

    def save(self, path) -> None:
        atomic.write_npz(path, weights=self.weights_, floor=self.floor, prior=self.prior_)

    @classmethod
    def load(cls, path) -> "LogLinearPool":
        z = atomic.read_npz(path, ["weights", "floor", "prior"], "python ensemble.py")
        _check_finite(path, z)
        return cls(z["weights"], float(z["floor"]), z["prior"])


def cross_val_pool(probs, labels, num_classes, folds=5, seed=0) -> np.ndarray:
    """Held-out probabilities of the log-linear pool: each row from a pool fitted without it."""
    out = np.zeros((len(labels), num_classes))
    for fit_idx, held_idx in _KFold(folds, shuffle=True, random_state=seed).split(labels):
        pool = LogLinearPool().fit(probs[:, fit_idx], labels[fit_idx], num_classes)
        out[held_idx] = pool.predict_proba(probs[:, held_idx])
    return out


def cross_val_choice(candidates: dict, labels, folds=5, seed=0) -> np.ndarray:
    """Choosing the lowest validation loss among several held-out estimates flatters the one chosen (the
    same images chose it). Here each fold's images get the probabilities of the candidate that the other
    folds' images chose, so the choice itself is held out. `candidates`: name -> (N, K) out-of-fold
    probabilities of the same N images."""
    labels = np.asarray(labels)
    chosen = np.empty_like(next(iter(candidates.values())))
    for fit_idx, held_idx in _KFold(folds, shuffle=True, random_state=seed).split(labels):
        best = min(candidates, key=lambda name: log_loss(candidates[name][fit_idx], labels[fit_idx]))
        chosen[held_idx] = candidates[best][held_idx]
    return chosen
