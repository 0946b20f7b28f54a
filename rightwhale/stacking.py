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

`Stacker` follows scikit-learn's estimator API (fit / predict_proba) and is
saved as plain arrays (npz, no pickle): scaler mean and scale, coefficients,
intercepts, prior and the hyper-parameters.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_softmax
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold

from rightwhale import atomic
from rightwhale.errors import DataError
from rightwhale.metrics import class_prior, log_loss

C_GRID = (0.003, 0.03, 0.3)
FLOOR_GRID = (0.05, 0.2, 0.5)
GRID = tuple((C, floor) for C in C_GRID for floor in FLOOR_GRID)


@dataclass
class Stacker:
    """Standardise, multinomial logistic regression over `num_classes` columns, prior floor."""
    num_classes: int
    C: float = 0.1
    floor: float = 0.2
    max_iter: int = 2000
    mean_: np.ndarray | None = None
    scale_: np.ndarray | None = None
    coef_: np.ndarray | None = None        # (num_classes, features); unseen classes get zeros
    intercept_: np.ndarray | None = None   # unseen classes get -inf: only the floor reaches them
    prior_: np.ndarray | None = None       # add-one smoothed frequencies of the fitted labels

    def fit(self, features: np.ndarray, labels: np.ndarray) -> "Stacker":
        features = np.asarray(features, np.float64)
        self.mean_ = features.mean(axis=0)
        self.scale_ = features.std(axis=0) + 1e-8
        seen = np.unique(labels)
        self.prior_ = class_prior(labels, self.num_classes)
        self.coef_ = np.zeros((self.num_classes, features.shape[1]))
        self.intercept_ = np.full(self.num_classes, -np.inf)
        if len(seen) == 1:            # one class: it gets everything
            self.intercept_[seen[0]] = 0.0
            return self
        lr = LogisticRegression(C=self.C, max_iter=self.max_iter)
        with warnings.catch_warnings():   # one or two images per whale is what out-of-fold data looks like
            warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
            lr.fit((features - self.mean_) / self.scale_, labels)
        coef, intercept = lr.coef_, lr.intercept_
        if len(seen) == 2:            # sklearn's binary form: one row for the second class
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
        self.coef_[lr.classes_] = coef
        self.intercept_[lr.classes_] = intercept
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        z = ((np.asarray(features, np.float64) - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return (1 - self.floor) * z / z.sum(axis=1, keepdims=True) + self.floor * self.prior_

    def save(self, path) -> None:
        atomic.write_npz(path, num_classes=self.num_classes, C=self.C, floor=self.floor, mean=self.mean_,
                         scale=self.scale_, coef=self.coef_, intercept=self.intercept_, prior=self.prior_)

    @classmethod
    def load(cls, path) -> "Stacker":
        z = atomic.read_npz(path, ["num_classes", "C", "floor", "mean", "scale", "coef", "intercept", "prior"],
                            "python ensemble.py")
        _check_finite(path, z)
        return cls(int(z["num_classes"]), float(z["C"]), float(z["floor"]), mean_=z["mean"],
                   scale_=z["scale"], coef_=z["coef"], intercept_=z["intercept"], prior_=z["prior"])


def _check_finite(path, arrays: dict) -> None:
    """No NaN, no infinity but the -inf intercepts of classes the stacker never saw."""
    bad = [k for k, v in arrays.items() if v.dtype.kind == "f" and (np.isnan(v).any() or np.isinf(
        v if k != "intercept" else np.where(v == -np.inf, 0, v)).any())]
    if bad:
        raise DataError(f"{path}: non-finite {', '.join(bad)}; make it again with `python ensemble.py`")


def cross_val_probas(features, labels, num_classes, grid=GRID, folds=5, seed=0) -> dict:
    """Out-of-fold probabilities of each (C, floor) of `grid`: each row predicted by a stacker that never saw
    it. One fit per C and fold: the floor only mixes the fitted softmax with the prior."""
    out = {params: np.zeros((len(labels), num_classes)) for params in grid}
    for fit_idx, held_idx in KFold(min(folds, len(labels)), shuffle=True, random_state=seed).split(features):
        for C in dict.fromkeys(c for c, _ in grid):
            stacker = Stacker(num_classes, C).fit(features[fit_idx], labels[fit_idx])
            for params in [p for p in grid if p[0] == C]:
                stacker.floor = params[1]
                out[params][held_idx] = stacker.predict_proba(features[held_idx])
    return out


def choose_params(features, labels, num_classes, grid=GRID, folds=5, seed=0) -> tuple[tuple, dict]:
    """The (C, floor) of lowest cross-validated log loss, and the loss of every pair tried."""
    probas = cross_val_probas(features, labels, num_classes, grid, folds, seed)
    losses = {params: log_loss(p, labels) for params, p in probas.items()}
    return min(losses, key=losses.get), losses


def nested_cv_proba(features, labels, num_classes, grid=GRID, folds=5, seed=0) -> np.ndarray:
    """Held-out probabilities with (C, floor) chosen inside each outer fold: an honest estimate."""
    out = np.zeros((len(labels), num_classes))
    for fit_idx, held_idx in KFold(min(folds, len(labels)), shuffle=True, random_state=seed).split(features):
        params, _ = choose_params(features[fit_idx], labels[fit_idx], num_classes, grid, folds, seed)
        stacker = Stacker(num_classes, *params).fit(features[fit_idx], labels[fit_idx])
        out[held_idx] = stacker.predict_proba(features[held_idx])
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
    for fit_idx, held_idx in KFold(min(folds, len(labels)), shuffle=True, random_state=seed).split(labels):
        pool = LogLinearPool().fit(probs[:, fit_idx], labels[fit_idx], num_classes)
        out[held_idx] = pool.predict_proba(probs[:, held_idx])
    return out


def cross_val_choice(candidates: dict, labels, folds=5, seed=0) -> np.ndarray:
    """Choosing the lowest validation loss among several held-out estimates flatters the one chosen (the
    same images chose it). Here each fold's images get the probabilities of the candidate that the other
    folds' images chose, so the choice itself is held out. `candidates`: name -> (N, K) out-of-fold
    probabilities of the same N images."""
    labels = np.asarray(labels)
    per_image = {name: -np.log(np.clip(p[np.arange(len(labels)), labels] / p.sum(axis=1), 1e-15, 1))
                 for name, p in candidates.items()}
    chosen = np.empty_like(next(iter(candidates.values())))
    for fit_idx, held_idx in KFold(min(folds, len(labels)), shuffle=True, random_state=seed).split(labels):
        best = min(per_image, key=lambda name: per_image[name][fit_idx].mean())
        chosen[held_idx] = candidates[best][held_idx]
    return chosen
