"""Stage "match" (beyond the original): identify head crops by local features, no network, no GPU.

Builds the matcher's gallery (rightwhale/scorers/matching.py) from the crops of the
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

import time

import numpy as np

from rightwhale.core import metrics
from rightwhale.core.config import Match
from rightwhale.core.errors import DataError
from rightwhale.core.records import RunRecord
from rightwhale.io.formats import Problem, report_problems
from rightwhale.scorers import matching, novelty
from rightwhale.scorers.match_run import CALIBRATION, GALLERY, fit_matcher, learn_space, matchable
from rightwhale.stages.workspace import Workspace
from rightwhale.views import plots
from rightwhale.views.report import write_report


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
    return learn_space(gallery, cfg, seed)


def run(ws: Workspace) -> RunRecord:
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
    if not matchable(labels["train"], len(classes)).any():
        raise DataError(f"{ws.survey.root}: no whale has two training crops, so leave-one-out has nothing to "
                        "calibrate the matcher's probabilities on")
    ws.log(f"gallery: {len(gallery)} crops, {len(gallery.descriptors)} descriptors, "
           f"{gallery.nbytes() / 2**20:.0f} MB; leave-one-out scores for "
           f"{'keypoint weights and ' if cfg.keypoint_weights else ''}calibration")
    matcher, loo, usable = fit_matcher(gallery, classes, labels["train"], cfg, ws.progress)
    prior = metrics.class_prior(labels["train"], len(classes))
    calibration = matching.calibrate(loo[usable], labels["train"][usable], prior)
    ws.log("new-whale score: the gallery's crops scored with their whole whale left out")
    new_whale = novelty.fit_threshold(loo[usable], labels["train"][usable], novelty.leave_whales_out(
        gallery, classes, cfg, ws.cfg.train.seed, progress=ws.progress, weights=matcher.weights))
    learnt = {"keypoint weights": matcher.weights and matcher.weights.to_dict()} if cfg.keypoint_weights else {}
    ws.write_json(CALIBRATION, {**calibration.to_dict(), "new whale": new_whale.to_dict(), **learnt})

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
        "descriptors whitened": gallery.whitening is not None,
        "gallery MB": gallery.nbytes() / 2**20, "crops without features": len(problems),
        "minutes": (time.perf_counter() - started) / 60})
    match_figure(cache, gallery, names["valid"], features["valid"], queries["valid"], probs["valid"], classes,
                 labels["valid"], ws.path("valid_matches.png"))
    figures = [("Validation crops (left) and the best crop of the top whale (right), RANSAC inliers joined",
                "valid_matches.png")]
    if matcher.weights is not None:
        mean_crop = np.mean([cache.images[cache.index(n)] for n in names["train"][:256]], axis=0)
        plots.weight_map(mean_crop.astype(np.uint8), matcher.weights.by_place(), ws.path("keypoint_weights.png"),
                         f"keypoint weights by place, {len(gallery)} training crops")
        figures.append(("Where on the crop keypoints name their own whale: the vote weight learnt from the "
                        "training crops' leave-one-out votes, by place, over their mean crop", "keypoint_weights.png"))
    write_report(ws.run_dir, "Local-feature matcher (whitened RootSIFT, LNBNN, RANSAC)", results, history=False,
                 figures=figures,
                 notes=[f"data: {ws.survey.root}", f"matcher: {cfg}",
                        "descriptor whitening learnt from matches among the training crops (whitening.py)",
                        "keypoint weights, temperature and floor fitted on leave-one-out scores of the training crops",
                        "features.npz: per-whale scores (training crops: leave-one-out) for the ensemble"])
    return ws.record(results)


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
