"""Stage "match" (beyond the original): identify head crops by local features, no network, no GPU.

Builds the matcher's gallery (rightwhale/matching.py) from the crops of the
stored training split, fits its temperature and floor on leave-one-out
scores of those same training crops, and scores the validation and test
crops against the gallery. Writes what a classify run writes: results.json
(log loss, top-1, top-5), valid_probabilities.csv, submission.csv,
features.npz (per-whale scores of every crop; the training crops' are
leave-one-out, so a stacker never sees a crop matched with itself) and
report.md with pictures of matches, plus gallery.npz and calibration.json
for `identify` and `evaluate`.
"""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from rightwhale import atomic, matching, metrics, novelty, plots
from rightwhale.config import Match
from rightwhale.data import DataError, Problem, report_problems
from rightwhale.report import write_report
from rightwhale.stages.workspace import Workspace

GALLERY, CALIBRATION = "gallery.npz", "calibration.json"
CATALOGUE = "catalogue"      # crops added after the run: imgs/ + train.csv (rightwhale.catalogue)


def extract(survey, cache, names, cfg: Match, progress: bool, desc: str):
    """Features of the cached crops `names`, and a Problem for each crop that has none."""
    features, bad = matching.extract([cache.images[cache.index(n)] for n in names], names, cfg.max_keypoints,
                                     cfg.upright, progress, desc=desc)
    return features, [Problem(str(survey.image_path(n)), None, why, "no features") for n, why in bad]


def build_gallery(names, whales, features, cfg, seed: int, source="the training crops") -> matching.Gallery:
    gallery = matching.Gallery.empty().add(names, whales, features)
    if len(gallery.descriptors) <= cfg.neighbours:
        raise DataError(f"{source}: {len(gallery.descriptors)} SIFT descriptors in {len(gallery)} crop(s), fewer "
                        f"than the {cfg.neighbours + 1} neighbours LNBNN needs; are the crops blank or tiny?")
    gallery.centroids = matching.train_centroids(gallery.descriptors, cfg.cells, seed)
    return gallery


def leave_one_out(matcher: matching.Matcher, names, features, labels, progress: bool):
    """Scores of gallery crops against the rest of the gallery, and which of them can be calibrated on:
    a crop whose whale has no other crop in the gallery cannot be matched by anything."""
    queries = matcher.score_many(features, exclude=names, progress=progress)
    scores = matching.score_matrix(queries, len(matcher.classes))
    others = np.bincount(labels, minlength=len(matcher.classes))[labels] > 1
    return scores, others


def run(ws: Workspace) -> dict:
    cfg, labelled = ws.cfg.match, ws.labels_source
    started = time.perf_counter()
    cache = ws.cache(cfg.crop_size)
    names = ws.present(cache, test=labelled.test)
    features, problems = {}, []
    for split, split_names in names.items():
        features[split], bad = extract(ws.survey, cache, split_names, cfg, ws.progress, f"features, {split}")
        problems += bad
    report_problems(problems)
    classes = labelled.classes
    labels = {s: labelled.labels_array(names[s]) for s in ("train", "valid")}
    gallery = build_gallery(names["train"], [labelled.train[n] for n in names["train"]], features["train"], cfg,
                            ws.cfg.train.seed, source=f"{ws.survey.root} (training split)")
    gallery.save(ws.path(GALLERY))
    matcher = matching.Matcher(gallery, classes, cfg)
    ws.log(f"gallery: {len(gallery)} crops, {len(gallery.descriptors)} descriptors, "
           f"{gallery.nbytes() / 2**20:.0f} MB; leave-one-out scores for calibration")
    loo, usable = leave_one_out(matcher, names["train"], features["train"], labels["train"], ws.progress)
    prior = metrics.class_prior(labels["train"], len(classes))
    if not usable.any():
        raise DataError(f"{ws.survey.root}: no whale has two training crops, so leave-one-out has nothing to "
                        "calibrate the matcher's probabilities on")
    calibration = matching.calibrate(loo[usable], labels["train"][usable], prior)
    ws.log("new-whale score: the gallery's crops scored with their whole whale left out")
    new_whale = novelty.fit_threshold(loo[usable], labels["train"][usable], novelty.leave_whales_out(
        gallery, classes, cfg, ws.cfg.train.seed, progress=ws.progress))
    ws.write_json(CALIBRATION, {**calibration.to_dict(), "new whale": new_whale.to_dict()})

    queries = {s: matcher.score_many(features[s], progress=ws.progress) for s in ("valid", "test")}
    scores = {"train": loo, **{s: matching.score_matrix(queries[s], len(classes)) for s in queries}}
    probs = {s: calibration.probabilities(v) if len(v) else np.zeros((0, len(classes))) for s, v in scores.items()}

    results = ws.write_predictions(names, probs, scores, labels, prior)
    loo_scores = metrics.classification_scores(probs["train"][usable], labels["train"][usable], prior)
    results.update({
        "training crops, leave-one-out: log loss": loo_scores["log loss"],
        "training crops, leave-one-out: top-1 accuracy": loo_scores["top-1 accuracy"],
        "temperature": calibration.temperature, "floor": calibration.floor,
        "new-whale ROC AUC, training crops (whales left out in turn)": new_whale.auc,
        "new-whale threshold": new_whale.threshold,
        "training crops of left-out whales flagged new?": new_whale.new_flagged,
        "gallery crops": len(gallery), "gallery descriptors": int(len(gallery.descriptors)),
        "gallery MB": gallery.nbytes() / 2**20, "crops without features": len(problems),
        "minutes": (time.perf_counter() - started) / 60})
    ws.write_json("results.json", results)
    match_figure(cache, gallery, names["valid"], features["valid"], queries["valid"], probs["valid"], classes,
                 labels["valid"], ws.path("valid_matches.png"))
    write_report(ws.run_dir, "Local-feature matcher (RootSIFT, LNBNN, RANSAC)", results, history=False,
                 figures=[("Validation crops (left) and the best crop of the top whale (right), RANSAC inliers "
                           "joined", "valid_matches.png")],
                 notes=[f"data: {ws.survey.root}", f"matcher: {cfg}",
                        "temperature and floor fitted on leave-one-out scores of the training crops",
                        "features.npz: per-whale scores (training crops: leave-one-out) for the ensemble"])
    return results


def match_figure(cache, gallery, names, features, queries, probs, classes, labels, path, count: int = 8):
    """The first `count` validation crops beside the best-matching crop of their top whale."""
    rows = []
    for name, f, q, p, y in list(zip(names, features, queries, probs, labels))[:count]:
        top = int(np.argmax(p))
        gi = q.best_image.get(top)
        query = cache.images[cache.index(name)]
        if gi is None:          # no verified crop of the top whale: show the query alone
            rows.append({"query": query, "candidate": np.zeros_like(query), "query_xy": np.zeros((0, 2)),
                         "candidate_xy": np.zeros((0, 2)), "title": f"{name}: {classes[top]} p={p[top]:.2f}, "
                                                                     f"no verified crop"})
            continue
        pairs, g = q.pairs[gi], gallery.features(gi)
        mark = "right" if top == y else f"wrong, true {classes[y]}"
        rows.append({"query": query, "candidate": cache.images[cache.index(gallery.names[gi])],
                     "query_xy": f.keypoints[pairs[:, 0], :2] * cache.size,
                     "candidate_xy": g.keypoints[pairs[:, 1], :2] * cache.size,
                     "title": f"{name} -> {gallery.names[gi]} ({classes[top]}, p={p[top]:.2f}, "
                              f"{len(pairs)} inliers, {mark})"})
    return plots.match_pairs(rows, path) if rows else None


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
            self.cfg = Match(**{"upright": False, **config["match"]})
            self.crops_dir = Path(config["data_dir"])
            z = atomic.read_npz(run_dir / "features.npz", ["classes", "train_labels"],
                                f"python train.py --stage match --run-dir {run_dir}")
            self.classes, train_labels = z["classes"].tolist(), z["train_labels"]
            cal = json.loads((run_dir / CALIBRATION).read_text())
            temperature, floor = float(cal["temperature"]), float(cal["floor"])
            # runs made before the new-whale score have none: identify then never says `new?`
            self.new_whale = novelty.Threshold(**cal["new whale"]) if "new whale" in cal else None
        except (ValueError, KeyError, TypeError, OSError) as e:     # JSONDecodeError and BadZipFile included
            raise DataError(f"{run_dir}: unreadable match run ({type(e).__name__}: {e}); run it again") from e
        if not (np.isfinite(temperature) and temperature > 0 and 0 <= floor < 1):
            raise DataError(f"{run_dir / CALIBRATION}: temperature {temperature}, floor {floor} are no calibration")
        self.gallery = matching.Gallery.load(run_dir / GALLERY)
        # whales added to the catalogue since (rightwhale.catalogue) get columns after the trained ones
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
        return matching.Matcher(self.gallery, self.classes, self.cfg)

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
