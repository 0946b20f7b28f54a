"""A finished match run (stages/match.py) loaded back to score new crops: its gallery, grown by
`catalogue add`, its calibration and its new-whale threshold.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
from PIL import Image

from rightwhale.core import atomic, metrics
from rightwhale.core.config import Match
from rightwhale.core.errors import DataError
from rightwhale.scorers import matching, novelty, whitening
from rightwhale.scorers.keypoint_weights import KeypointWeights

GALLERY, CALIBRATION = "gallery.npz", "calibration.json"
CATALOGUE = "catalogue"      # crops added after the run: imgs/ + train.csv (rightwhale.cli.catalogue)


def matchable(labels, classes: int) -> np.ndarray:
    """Which gallery crops another crop of their whale could match (their whale has two or more)."""
    return np.bincount(labels, minlength=classes)[labels] > 1


def leave_one_out(matcher: matching.Matcher, names, features, labels, progress: bool):
    """Scores of gallery crops against the rest of the gallery, and which of them can be calibrated on:
    a crop whose whale has no other crop in the gallery cannot be matched by anything."""
    queries = matcher.score_many(features, exclude=names, progress=progress)
    return matching.score_matrix(queries, len(matcher.classes)), matchable(labels, len(matcher.classes))


def learn_keypoint_weights(matcher: matching.Matcher, names, features, labels,
                           progress: bool) -> KeypointWeights | None:
    """Keypoint weights from the leave-one-out votes of the gallery's matchable crops, each crop's
    keypoints with the LNBNN weight they gave its own whale and the other whales; None when no vote
    reached a crop's own whale (nothing to learn: the matcher then counts every vote alike)."""
    chosen = np.flatnonzero(matchable(labels, len(matcher.classes)))
    votes = matcher.votes([features[i] for i in chosen], [names[i] for i in chosen], progress=progress)
    keypoints, ranks, own, other = [], [], [], []
    for i, (rows, whales, weights) in zip(chosen, votes):
        n, mine = len(features[i]), whales == labels[i]
        own.append(np.bincount(rows[mine], weights[mine], n))
        other.append(np.bincount(rows[~mine], weights[~mine], n))
        keypoints.append(features[i].keypoints)
        ranks.append(np.arange(n))
    if not keypoints or not sum(o.sum() for o in own):
        return None
    return KeypointWeights.fit(np.concatenate(keypoints), np.concatenate(ranks), np.concatenate(own),
                               np.concatenate(other), matcher.cfg.max_keypoints)


def learn_space(gallery: matching.Gallery, cfg: Match, seed: int, learn_from=None) -> matching.Gallery:
    """The gallery with the space it is searched in learnt from its own crops (or from the images
    `learn_from` only): the descriptor whitening (when cfg asks for it; None when those crops give too few
    pairs) and the index cells in that space."""
    source = gallery if learn_from is None else gallery.subset(learn_from)
    white = whitening.learn(source, seed) if cfg.whitening else None
    return dataclasses.replace(gallery, whitening=white, centroids=matching.train_centroids(
        gallery.descriptors, cfg.cells, seed, white))


def fit_matcher(gallery: matching.Gallery, classes, labels, cfg: Match, progress: bool):
    """A gallery's matcher, with keypoint weights learnt from its own crops when cfg asks for them, and
    the leave-one-out scores of those crops under it (and which can be calibrated on)."""
    matcher = matching.Matcher(gallery, classes, cfg)
    features = [gallery.features(i) for i in range(len(gallery))]
    if cfg.keypoint_weights:
        matcher = matcher.with_weights(learn_keypoint_weights(matcher, gallery.names, features, labels, progress))
    return (matcher, *leave_one_out(matcher, gallery.names, features, labels, progress))


class MatchRun:
    """A finished match run, ready to score new crops (identify, evaluate)."""

    def __init__(self, run_dir):
        self.run_dir = run_dir = Path(run_dir)
        for need in ("config.json", GALLERY, CALIBRATION, "features.npz"):
            if not (run_dir / need).is_file():
                raise DataError(f"{run_dir}: no {need}; is this a finished match run folder "
                                "(python train.py --stage match)?")
        try:
            config = json.loads((run_dir / "config.json").read_text())
            # runs made before `upright` existed described keypoints at their SIFT orientation
            # ... and before keypoint weights without them
            # ... and before the whitening (which the gallery holds) without it
            self.cfg = Match(**{"upright": False, "keypoint_weights": False, "whitening": False, **config["match"]})
            self.crops_dir = Path(config["data_dir"])
            z = atomic.read_npz(run_dir / "features.npz", ["classes", "train_labels"],
                                f"python train.py --stage match --run-dir {run_dir}")
            self.classes, train_labels = z["classes"].tolist(), z["train_labels"]
            cal = json.loads((run_dir / CALIBRATION).read_text())
            temperature, floor = float(cal["temperature"]), float(cal["floor"])
            # runs made before the new-whale score have none: identify then never says `new?`
            self.new_whale = novelty.Threshold(**cal["new whale"]) if "new whale" in cal else None
            if self.cfg.keypoint_weights and "keypoint weights" not in cal:
                raise DataError(f"{run_dir / CALIBRATION}: the run weights its votes but holds no keypoint weights")
            # null: the gallery gave nothing to learn them from, and every vote counts alike
            self.weights = KeypointWeights.from_dict(cal["keypoint weights"], run_dir / CALIBRATION) \
                if cal.get("keypoint weights") is not None else None
        except (ValueError, KeyError, TypeError, OSError) as e:     # JSONDecodeError and BadZipFile included
            raise DataError(f"{run_dir}: unreadable match run ({type(e).__name__}: {e}); run it again") from e
        if not (np.isfinite(temperature) and temperature > 0 and 0 <= floor < 1):
            raise DataError(f"{run_dir / CALIBRATION}: temperature {temperature}, floor {floor} are no calibration")
        self.gallery = matching.Gallery.load(run_dir / GALLERY)
        # whales added to the catalogue since (rightwhale.cli.catalogue) get columns after the trained ones
        known = set(self.classes)
        self.added_whales = [w for w in dict.fromkeys(self.gallery.whales) if w not in known]
        column = {w: i for i, w in enumerate(self.classes + self.added_whales)}
        added = [column[w] for w in self.gallery.whales if column[w] >= len(self.classes)]
        self.classes = self.classes + self.added_whales
        self.calibration = matching.Calibration(temperature, floor, metrics.class_prior(
            np.concatenate([train_labels, np.array(added, np.int64)]).astype(np.int64), len(self.classes)))
        self.trained_on = set(self.gallery.names)
        self.catalogue_dir = run_dir / CATALOGUE

    def crop_path(self, name: str) -> Path:
        """Where a gallery crop's image is: the run's crop folder, or the catalogue's for added crops."""
        added = self.catalogue_dir / "imgs" / name
        return added if added.is_file() else self.crops_dir / "imgs" / name

    @functools.cached_property
    def matcher(self) -> matching.Matcher:
        """Built on first use (seconds for a large gallery): growing a gallery needs no index."""
        return matching.Matcher(self.gallery, self.classes, self.cfg, self.weights)

    def features(self, crop: np.ndarray) -> matching.Features:
        size = self.cfg.crop_size
        image = np.asarray(Image.fromarray(np.asarray(crop)).resize((size, size), Image.BICUBIC))
        return matching.crop_features(image, self.cfg.max_keypoints, self.cfg.upright)

    def identify(self, crops) -> tuple[np.ndarray, np.ndarray, list, list]:
        """(probabilities, scores, per-query matches, features) of RGB crops of any size."""
        feats = [self.features(c) for c in crops]
        queries = self.matcher.score_many(feats)
        scores = matching.score_matrix(queries, len(self.classes))
        return self.calibration.probabilities(scores), scores, queries, feats


def is_match_run(run_dir) -> bool:
    return (Path(run_dir) / GALLERY).is_file()
