"""Stage 5: stack several classifier and matcher runs (`python ensemble.py`).

Reads features.npz of each classify run (GAP features) and match run
(per-whale scores; its training rows are leave-one-out), concatenates the
features of every image, and fits `stacking.Stacker` on the out-of-fold ones
(the stored validation split, which no feature model trained on), C tuned by
cross-validation; beside it `stacking.LogLinearPool` weighs the runs'
probabilities with one weight per run. It reports the held-out log loss of
both (cross-validation) next to each run and the plain average of their
probabilities, and shows the writeup's trap: the same stacker fitted on
in-fold features (the models' own training images) reaches near zero
training loss and says nothing about new photos. New photos (the
submission, `identify`) get whichever of the stacker, the pool, the plain
average and the best single run has the lowest held-out log loss.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np

from rightwhale.core import atomic, metrics
from rightwhale.core.errors import DataError
from rightwhale.core.records import AVERAGE, MEMBER, POOL, STACKER, EnsembleRecord, RunRecord, load_features
from rightwhale.ensemble.members import CHOICE_NAMES, choice_name, combine, stack_features
from rightwhale.ensemble.stacking import (
    LogLinearPool,
    Stacker,
    choose_params,
    cross_val_choice,
    cross_val_pool,
    nested_cv_proba,
)
from rightwhale.io.data_dirs import source_survey
from rightwhale.io.submission import read_submission, write_submission
from rightwhale.views.report import table


def _scores(probs, labels) -> dict:
    loss = metrics.log_loss(probs, labels)
    return {"log loss": loss, "log loss / ln K": loss / math.log(probs.shape[1]),
            "top-1 accuracy": metrics.top_k_accuracy(probs, labels, 1)}


def run_ensemble(run_dirs, out_dir, folds: int = 5, seed: int = 0, gzip: bool = False, log=print) -> RunRecord:
    started = time.perf_counter()
    run_dirs = [Path(r) for r in run_dirs]
    twice = {d.resolve() for d in run_dirs if [r.resolve() for r in run_dirs].count(d.resolve()) > 1}
    if twice:
        raise DataError(f"{', '.join(map(str, sorted(twice)))}: named twice; stack each run once")
    if not run_dirs:
        raise DataError("no classifier runs to stack: train some with `python train.py --stage classify "
                        "[--model NAME]` or name them with --runs")
    runs = [load_features(r) for r in run_dirs]
    surveys = {source_survey(d) for d in run_dirs}
    if len(surveys) > 1:
        raise DataError(f"the runs come from different data ({', '.join(map(str, sorted(surveys)))}); "
                        "stack runs of one survey")
    classes = runs[0]["classes"].tolist()
    for r, d in zip(runs[1:], run_dirs[1:]):
        if r["classes"].tolist() != classes:
            raise DataError(f"{d}: its class columns differ from {run_dirs[0]}'s; stack runs of one data set")
    k = len(classes)
    names, X, probs, y = stack_features(runs, "valid")
    log(f"stacking {len(run_dirs)} run(s): {X.shape[1]} features, {len(names)} out-of-fold (validation) images; "
        f"runs: {', '.join(str(d.resolve()) for d in run_dirs)}")

    rows = [{"model": d.name, **_scores(p, y)} for d, p in zip(run_dirs, probs)]
    best = min(rows, key=lambda r: r["log loss"])
    mean = probs.mean(axis=0)
    average = {"model": "plain average of the models", **_scores(mean, y)}
    params, losses = choose_params(X, y, k, folds=folds, seed=seed)
    stacked = nested_cv_proba(X, y, k, folds=folds, seed=seed)
    pooled_probs = cross_val_pool(probs, y, k, folds=folds, seed=seed)
    held_out = {"model": f"stacker, out-of-fold (nested {folds}-fold CV)", **_scores(stacked, y)}
    pooled = {"model": f"{CHOICE_NAMES[POOL]}, out-of-fold ({folds}-fold CV)", **_scores(pooled_probs, y)}
    # The lowest of these estimates flatters the one chosen below; this row holds the choice out too.
    choice = cross_val_choice({(STACKER, None): stacked, (POOL, None): pooled_probs, (AVERAGE, None): mean,
                               **{(MEMBER, d.name): p for d, p in zip(run_dirs, probs)}}, y, folds=folds, seed=seed + 1)
    chosen = {"model": f"the lowest of these, chosen on {folds - 1} of {folds} folds, scored on the one left "
                       "(what choosing flatters, held out)", **_scores(choice, y)}
    rows += [average, held_out, pooled, chosen]
    # Four honest held-out estimates (the average and a single model fit nothing to the validation images);
    # new photos get the best. With one or two out-of-fold images per whale the stacker often loses, and the
    # average loses to a member much better than the rest; the pool's few weights can weigh them.
    combination, member = min([((STACKER, None), held_out), ((POOL, None), pooled), ((AVERAGE, None), average),
                               ((MEMBER, best["model"]), best)], key=lambda c: c[1]["log loss"])[0]
    use = choice_name(combination, member)

    # The trap: fit on in-fold features (each model's own training images).
    train_names, X_train, _, y_train = stack_features(runs, "train")
    trap = Stacker(k, *params).fit(X_train, y_train)
    rows.append({"model": "stacker fitted in-fold: its training images", **_scores(trap.predict_proba(X_train), y_train)})
    rows.append({"model": "stacker fitted in-fold: validation images", **_scores(trap.predict_proba(X), y)})

    out_dir = Path(out_dir)
    stacker = Stacker(k, *params).fit(X, y)
    stacker.save(out_dir / "stacker.npz")
    pool = LogLinearPool().fit(probs, y, k)
    pool.save(out_dir / "pool.npz")
    out_dir.mkdir(parents=True, exist_ok=True)
    members = [os.path.relpath(d.resolve(), out_dir.resolve()) for d in run_dirs]     # movable with the root
    EnsembleRecord(members, classes, [int(r["valid_features"].shape[1]) for r in runs], params[0], params[1],
                   combination, member, dict(zip([d.name for d in run_dirs], pool.weights_.tolist())),
                   {f"C={c} floor={f}": v for (c, f), v in losses.items()}).save(out_dir)
    results = {"runs": [d.name for d in run_dirs], "chosen C": params[0], "chosen floor": params[1],
               "best single model": best["model"], "predictions from": use, "table": rows}
    sub = _write_test_submission(runs, run_dirs, (combination, member), (stacker, pool), out_dir, classes, gzip, log)
    if sub:
        results["submission"] = str(sub)
    record = RunRecord("ensemble", "+".join(d.name for d in run_dirs), results, time.perf_counter() - started)
    record.save(out_dir)
    atomic.write_text(out_dir / "report.md", "\n".join([
        "# Ensemble: logistic regression on concatenated features, log-linear pool of probabilities", "",
        f"Runs: {', '.join(results['runs'])}. C = {params[0]}, prior floor = {params[1]} "
        f"(chosen by {folds}-fold CV on the validation split).", "",
        table(rows), "",
        f"The submission (and `identify`) use {use}: the lowest held-out log loss of the stacker, the "
        "log-linear pool, the plain average and the best single run.", "",
        "The in-fold rows are the writeup's trap: near-perfect on the images the feature models trained on, "
        "no better on new ones. Only the out-of-fold row estimates the loss on new photos.", ""]))
    return record


def _write_test_submission(runs, run_dirs, choice, fitted, out_dir, classes, gzip, log):
    """Test probabilities of the chosen (combination, member); rows (and their order) from the runs' own
    submission."""
    sub_path = run_dirs[0] / "submission.csv"
    if not sub_path.is_file():
        return None
    rows, sub_classes, first_probs = read_submission(sub_path)
    if sub_classes != classes:
        raise DataError(f"{sub_path}: class columns differ from features.npz")
    names, X_test, test_probs, _ = stack_features(runs, "test")
    combined = combine(*choice, [d.name for d in run_dirs], test_probs, X_test, fitted) if names else []
    stacked = dict(zip(names, combined))
    fallback = dict(zip(rows, first_probs))  # images some model could not crop: that model's prior row
    missing = [r for r in rows if r not in stacked]
    if missing:
        log(f"{len(missing)} test image(s) lack features in some run; they keep {run_dirs[0].name}'s row")
    out = out_dir / ("submission.csv.gz" if gzip else "submission.csv")
    return write_submission(out, rows, classes, np.stack([stacked.get(r, fallback[r]) for r in rows]))
