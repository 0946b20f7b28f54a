"""python -m rightwhale evaluate --run R --data-dir DIR: score a trained classifier or matcher on any labelled folder.

With --open-set (match runs), how well the new-whale score tells whales outside the catalogue from those in it.

The folder is in the Kaggle layout (imgs/ + train.csv, and test_labels.csv
when it has one) of inputs like the run's: head crops for a classify or match run,
whole photos for a naive run. Whales the run never saw cannot be predicted;
they count (at Kaggle's clipped probability) unless --ignore-unseen drops
them, and either way the report says how many there were.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from scipy.special import softmax

from rightwhale.core import metrics
from rightwhale.core.errors import DataError
from rightwhale.io.cache import Rows, build_cache
from rightwhale.io.data_dirs import source_of, source_survey
from rightwhale.io.formats import report_problems
from rightwhale.io.survey import load_survey
from rightwhale.scorers import matching, novelty
from rightwhale.scorers.classifier import load_classifier
from rightwhale.scorers.match_run import MatchRun, fit_matcher, is_match_run, learn_space, matchable
from rightwhale.train.feed import predict
from rightwhale.views.report import table


def evaluate(run_dir, data_dir, ignore_unseen: bool = False, batch_size: int = 16, progress=True) -> dict:
    """Scores of a classifier run on the labelled images of `data_dir`.

    When `data_dir` comes from the run's own survey (the survey itself or
    crops cut from it), its training images are left out (their scores say
    nothing about new photos) and counted in the result.
    """
    match_run = is_match_run(run_dir)
    if match_run:
        matcher = MatchRun(run_dir)
        classes, trained_on, size = matcher.classes, matcher.trained_on, matcher.cfg.crop_size
    else:
        model, variables, cfg, classes, trained_on = load_classifier(run_dir)
        size = cfg["image_size"]
    survey = load_survey(data_dir)
    report_problems(survey.problems)
    labelled = {**survey.train, **survey.test_labels}
    same_survey = source_survey(run_dir) == source_of(data_dir)
    # a match run's gallery crops (any folder they came from, crops added to the catalogue included) would match themselves
    seen_in_training = [n for n in labelled if (same_survey or match_run) and n in trained_on]
    index = {c: i for i, c in enumerate(classes)}
    unseen = [n for n, whale in labelled.items() if whale not in index]
    names = [n for n in labelled if (labelled[n] in index or not ignore_unseen) and n not in seen_in_training]
    cache = build_cache(data_dir, size, progress=progress)
    names = [n for n in names if n in cache.names]
    if not names:
        raise DataError(f"{data_dir}: no labelled image to score")
    rows = Rows(cache.images, [cache.index(n) for n in names])
    if match_run:
        probs = matcher.identify([rows[i] for i in range(len(rows))])[0]
    else:
        probs = softmax(predict(model, variables, rows, batch_size)[0][:, :len(classes)], axis=1)
    if not np.isfinite(probs).all():
        raise DataError(f"{run_dir}: non-finite probabilities; its checkpoint is corrupt or it diverged: "
                        "train it again")
    # Unseen whales get their own column of zero probability: Kaggle's clipping then scores them.
    probs = np.concatenate([probs, np.zeros((len(names), 1))], axis=1)
    labels = np.array([index.get(labelled[n], len(classes)) for n in names])
    hits = metrics.top_k_hits(probs, labels, 1)
    per_class = []
    for whale in sorted({labelled[n] for n in names}):
        rows = np.array([labelled[n] == whale for n in names])
        per_class.append({"whale": whale, "images": int(rows.sum()), "seen in training": whale in index,
                          "top-1 accuracy": float(hits[rows].mean()),
                          "mean p(true)": float(probs[rows, labels[rows]].mean())})
    loss = metrics.log_loss(probs, labels)
    return {"images": len(names), "whales": len(per_class), "unseen-whale images": len(unseen),
            "training images of the run left out": len(seen_in_training),
            "unseen images dropped": len([n for n in unseen if n not in seen_in_training]) if ignore_unseen else 0,
            "log loss": loss, "log loss / ln K": loss / math.log(len(classes)),
            "top-1 accuracy": float(hits.mean()),
            "top-5 accuracy": metrics.top_k_accuracy(probs, labels, min(5, len(classes))),
            "per_class": per_class}


def open_set(run_dir, data_dir=None, left_out: float = 0.2, seed: int = 0, progress=True) -> dict:
    """How well a match run's new-whale score separates whales it has never seen: `left_out` of the
    gallery's whales are removed entirely, the smaller catalogue learns its own descriptor whitening and
    keypoint weights and calibrates its own threshold (its whales left out in turn, as the match stage
    does), and the labelled crops of `data_dir` outside the gallery are scored: those of removed whales
    (or of whales never in the gallery) are the new ones."""
    if not is_match_run(run_dir):
        raise DataError(f"{run_dir}: --open-set needs a match run (python train.py --stage match)")
    run = MatchRun(run_dir)
    data_dir = Path(data_dir or run.crops_dir)
    gallery, classes, cfg = run.gallery, run.classes, run.cfg
    whales = sorted(set(gallery.whales))
    removed = set(np.random.default_rng(seed).permutation(whales)[:round(left_out * len(whales))].tolist())
    kept = gallery.subset([i for i, w in enumerate(gallery.whales) if w not in removed])
    if kept.whitening is not None:       # learnt afresh without the removed whales' crops, index cells too
        kept = learn_space(kept, cfg, seed)
    index = {c: i for i, c in enumerate(classes)}
    kept_labels = np.array([index[w] for w in kept.whales])
    if not matchable(kept_labels, len(classes)).any():
        raise DataError(f"{run_dir}: with {len(removed)} whales removed no whale has two crops left to calibrate "
                        "the new-whale threshold on; remove fewer (--left-out)")
    # the smaller catalogue learns its own keypoint weights, as a catalogue that never had those whales would
    matcher, loo, usable = fit_matcher(kept, classes, kept_labels, cfg, progress)
    threshold = novelty.fit_threshold(loo[usable], kept_labels[usable], novelty.leave_whales_out(
        kept, classes, cfg, seed, progress=progress, weights=matcher.weights))
    survey = load_survey(data_dir)
    report_problems(survey.problems)
    labelled = {n: w for n, w in {**survey.train, **survey.test_labels}.items() if n not in run.trained_on}
    cache = build_cache(data_dir, cfg.crop_size, progress=progress)
    names = [n for n in labelled if n in cache.names]
    if not names:
        raise DataError(f"{data_dir}: no labelled crop outside the gallery to score")
    feats = [run.features(cache.images[cache.index(n)]) for n in names]
    scores = matching.score_matrix(matcher.score_many(feats, progress=progress), len(classes))
    in_catalogue = set(kept.whales)
    known = np.array([labelled[n] in in_catalogue for n in names])
    labels = np.array([index.get(labelled[n], -1) for n in names])
    if known.all() or not known.any():
        raise DataError(f"{data_dir}: its {len(names)} crops outside the gallery are all of "
                        f"{'known' if known.all() else 'removed'} whales; nothing to tell apart")
    result = novelty.open_set_scores(scores[known], labels[known], scores[~known], threshold)
    return {"data": str(data_dir), "whales removed from the gallery": len(removed),
            "gallery crops kept": len(kept), **result,
            "new-whale ROC AUC on the smaller catalogue itself": threshold.auc}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rightwhale evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a naive, classify or match run folder (runs/classify-..., "
                                                "runs/match-...)")
    p.add_argument("--data-dir", help="labelled folder in the Kaggle layout (imgs/ + train.csv); with "
                                      "--open-set, default the match run's own crops")
    p.add_argument("--open-set", action="store_true",
                   help="match runs: remove --left-out of the whales from the gallery and report how well "
                        "the new-whale score flags them (ROC AUC, flagged shares, known-whale top-1)")
    p.add_argument("--left-out", type=float, default=0.2, help="share of whales removed (default 0.2)")
    p.add_argument("--ignore-unseen", action="store_true",
                   help="drop images of whales the run never saw instead of scoring them as misses")
    p.add_argument("--per-class", action="store_true", help="print the per-whale table")
    p.add_argument("--out", help="write the scores as JSON here")
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args(argv)
    if not args.open_set and not args.data_dir:
        p.error("--data-dir is required (except with --open-set)")
    if args.open_set and not 0 < args.left_out < 1:
        p.error(f"--left-out {args.left_out}: give a share of the whales between 0 and 1")
    if args.open_set and args.per_class:
        p.error("--per-class applies to closed-set scores, not --open-set")
    try:
        result = open_set(args.run, args.data_dir, args.left_out) if args.open_set else \
            evaluate(args.run, args.data_dir, args.ignore_unseen, args.batch_size)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for key, value in result.items():
        if key != "per_class":
            print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    if result.get("unseen-whale images") and not args.ignore_unseen:
        print(f"note: {result['unseen-whale images']} image(s) show whales the run never saw; they are "
              "scored as misses (add --ignore-unseen to leave them out)")
    if args.per_class:
        print(table(result["per_class"]))
    if args.out:
        from rightwhale.core.atomic import write_json
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
