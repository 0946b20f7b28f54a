"""python ensemble.py: stack several classifier and matcher runs (stage 5).

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

`python ensemble.py --preset PRESET` (or `--final PRESET`) stacks the six networks of the original's final
submission (FINAL_SIX, from the writeup; docs/final-ensemble.md), training with `python train.py --stage
classify --preset PRESET --model NAME` the ones not yet in the runs root (`--train-flags` passes more flags,
e.g. fewer epochs).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from rightwhale import atomic, metrics, runlock
from rightwhale.data import DataError, source_of
from rightwhale.report import table
from rightwhale.stacking import (LogLinearPool, Stacker, choose_params, cross_val_choice, cross_val_pool,
                                 nested_cv_proba)
from rightwhale.submission import read_submission, write_submission


POOL = "log-linear pool"     # the members' probabilities weighted and multiplied (stacking.LogLinearPool)


# The writeup's final ensemble: the 31-, 37- and 67-layer ResNets (cropped_dec21_3, cropped_jan02's layout with
# 2-conv blocks, cropped_jan05_4) and three 19-layer OxfordNets with GAP (cropped_dec19, jan03, jan05_2)
FINAL_SIX = ("resnet31", "resnet37", "resnet67", "oxfordnet19_gap", "cropped_jan03", "cropped_jan05_2")


def final_runs(runs_root, preset: str, train_flags=(), train=None) -> list[Path]:
    """The six run folders of the final ensemble under `runs_root`, training those that are missing."""
    if train is None:
        from rightwhale.stages import main as train
    runs = []
    for model in FINAL_SIX:
        folder = Path(runs_root) / f"classify-aligned-{model}"
        if not (folder / "features.npz").is_file():
            print(f"training {model} (--preset {preset}) for the final ensemble into {folder}")
            status = train(["--stage", "classify", "--preset", preset, "--model", model, "--runs", str(runs_root),
                            "--run-dir", str(folder), *train_flags])
            if status != 0:
                raise DataError(f"{folder}: training {model} failed (exit {status}); see above")
        runs.append(folder)
    return runs


def default_runs(runs_root="runs") -> list[Path]:
    """Every finished RUNS/classify-aligned-* and RUNS/match-aligned, else those of the reproduction
    (RUNS/reproduce)."""
    for root in (Path(runs_root), Path(runs_root) / "reproduce"):
        found = sorted(p for p in [*root.glob("classify-aligned-*"), root / "match-aligned"]
                       if (p / "features.npz").is_file())
        if found:
            return found
    return []


def resolve_runs(runs, runs_root="runs") -> list[Path]:
    """Run folders given as paths, or as names of folders under RUNS."""
    return [Path(r) if Path(r).exists() or not (Path(runs_root) / r).exists() else Path(runs_root) / r
            for r in runs]


def ensemble_runs(ensemble_dir) -> list[Path]:
    """The member runs of an ensemble folder, stored relative to it, so a runs root copied or moved whole
    keeps its ensemble (older folders stored absolute paths: they still read)."""
    path = Path(ensemble_dir) / "stacker.json"
    try:
        runs = json.loads(path.read_text())["runs"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: unreadable ensemble ({type(e).__name__}: {e}); run `python ensemble.py` "
                        "again") from e
    return [(Path(ensemble_dir) / r).resolve() for r in runs]


def load_features(run_dir) -> dict:
    path = Path(run_dir) / "features.npz"
    if not path.is_file():
        raise DataError(f"{run_dir}: no features.npz; make it with `python train.py --stage classify` (or "
                        "--stage match) first")
    features = atomic.read_npz(path, ["classes", "valid_names", "valid_features", "valid_probabilities"],
                               f"python train.py --stage classify (or match) --run-dir {run_dir}")
    probs = [v for k, v in features.items() if k.endswith("_probabilities")]
    if any(not np.isfinite(p).all() for p in probs):
        raise DataError(f"{path}: non-finite probabilities; train {run_dir} again")
    return features


def source_survey(run_dir) -> Path:
    """The survey a run's images come from (through the crop folder's source.json)."""
    return source_of(json.loads((Path(run_dir) / "config.json").read_text())["data_dir"])


def stack_features(runs: list[dict], split: str):
    """(names every run has, concatenated features, stacked probabilities, labels) of one split,
    in the first run's order."""
    common = set.intersection(*(set(r[f"{split}_names"].tolist()) for r in runs))
    names = [n for n in runs[0][f"{split}_names"].tolist() if n in common]
    rows = [[{n: i for i, n in enumerate(r[f"{split}_names"].tolist())}[n] for n in names] for r in runs]
    labels = runs[0][f"{split}_labels"][rows[0]] if f"{split}_labels" in runs[0] else None
    return (names, np.concatenate([r[f"{split}_features"][i] for r, i in zip(runs, rows)], axis=1),
            np.stack([r[f"{split}_probabilities"][i] for r, i in zip(runs, rows)]), labels)


def _scores(probs, labels) -> dict:
    loss = metrics.log_loss(probs, labels)
    return {"log loss": loss, "log loss / ln K": loss / math.log(probs.shape[1]),
            "top-1 accuracy": metrics.top_k_accuracy(probs, labels, 1)}


def run_ensemble(run_dirs, out_dir, folds: int = 5, seed: int = 0, gzip: bool = False, log=print) -> dict:
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
    pooled = {"model": f"{POOL}, out-of-fold ({folds}-fold CV)", **_scores(pooled_probs, y)}
    # The lowest of these estimates flatters the one chosen below; this row holds the choice out too.
    choice = cross_val_choice({"stacker": stacked, POOL: pooled_probs, "plain average": mean,
                               **{d.name: p for d, p in zip(run_dirs, probs)}}, y, folds=folds, seed=seed + 1)
    chosen = {"model": f"the lowest of these, chosen on {folds - 1} of {folds} folds, scored on the one left "
                       "(what choosing flatters, held out)", **_scores(choice, y)}
    rows += [average, held_out, pooled, chosen]
    # Four honest held-out estimates (the average and a single model fit nothing to the validation images);
    # new photos get the best. With one or two out-of-fold images per whale the stacker often loses, and the
    # average loses to a member much better than the rest; the pool's few weights can weigh them.
    use = min([("stacker", held_out), (POOL, pooled), ("plain average", average), (best["model"], best)],
              key=lambda c: c[1]["log loss"])[0]

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
    atomic.write_json(out_dir / "stacker.json", {"runs": members, "classes": classes,
                                                 "feature_dims": [int(r["valid_features"].shape[1]) for r in runs],
                                                 "C": params[0], "floor": params[1], "use": use,
                                                 "pool weights": dict(zip([d.name for d in run_dirs],
                                                                          pool.weights_.tolist())),
                                                 "cv_log_loss": {f"C={c} floor={f}": v for (c, f), v in losses.items()}})
    results = {"runs": [d.name for d in run_dirs], "chosen C": params[0], "chosen floor": params[1],
               "best single model": best["model"], "predictions from": use,
               "table": rows, "seconds": time.perf_counter() - started}
    sub = _write_test_submission(runs, run_dirs, use, (stacker, pool), out_dir, classes, gzip, log)
    if sub:
        results["submission"] = str(sub)
    atomic.write_json(out_dir / "results.json", results)
    atomic.write_text(out_dir / "report.md", "\n".join([
        "# Ensemble: logistic regression on concatenated features, log-linear pool of probabilities", "",
        f"Runs: {', '.join(results['runs'])}. C = {params[0]}, prior floor = {params[1]} "
        f"(chosen by {folds}-fold CV on the validation split).", "",
        table(rows), "",
        f"The submission (and `identify`) use {use}: the lowest held-out log loss of the stacker, the "
        "log-linear pool, the plain average and the best single run.", "",
        "The in-fold rows are the writeup's trap: near-perfect on the images the feature models trained on, "
        "no better on new ones. Only the out-of-fold row estimates the loss on new photos.", ""]))
    return results


def combine(use: str, run_names: list[str], probs: np.ndarray, features: np.ndarray, fitted=(None, None)) -> np.ndarray:
    """New images' probabilities as the ensemble chose (`use`: "stacker", the pool, "plain average" or one of
    `run_names`), from each run's probabilities (runs, N, K) and the concatenated features (N, F);
    `fitted` is (stacker, pool)."""
    stacker, pool = fitted
    if use == "stacker":
        return stacker.predict_proba(features)
    if use == POOL:
        return pool.predict_proba(probs)
    if use == "plain average":
        return probs.mean(axis=0)
    return probs[run_names.index(use)]


def _write_test_submission(runs, run_dirs, use, fitted, out_dir, classes, gzip, log):
    """Test probabilities of what `use` names (the stacker, the pool, the plain average or one run); rows (and
    their order) from the runs' own submission."""
    sub_path = run_dirs[0] / "submission.csv"
    if not sub_path.is_file():
        return None
    rows, sub_classes, first_probs = read_submission(sub_path)
    if sub_classes != classes:
        raise DataError(f"{sub_path}: class columns differ from features.npz")
    names, X_test, test_probs, _ = stack_features(runs, "test")
    combined = combine(use, [d.name for d in run_dirs], test_probs, X_test, fitted) if names else []
    stacked = dict(zip(names, combined))
    fallback = dict(zip(rows, first_probs))  # images some model could not crop: that model's prior row
    missing = [r for r in rows if r not in stacked]
    if missing:
        log(f"{len(missing)} test image(s) lack features in some run; they keep {run_dirs[0].name}'s row")
    out = out_dir / ("submission.csv.gz" if gzip else "submission.csv")
    return write_submission(out, rows, classes, np.stack([stacked.get(r, fallback[r]) for r in rows]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python ensemble.py", description=__doc__.split("\n")[0],
                                epilog="example: python ensemble.py --runs runs/classify-aligned-resnet19 "
                                       "runs/classify-aligned-cropped_dec21_3")
    p.add_argument("--runs", nargs="*", help="classify and match run folders, or their names under --runs-root "
                                             "(default: every RUNS/classify-aligned-* and RUNS/match-aligned, "
                                             "else RUNS/reproduce's)")
    p.add_argument("--runs-root", default="runs", help="where run names and the default runs are looked for")
    p.add_argument("--out", default="runs/ensemble", help="output folder (default runs/ensemble)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds for C and the held-out loss")
    p.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds")
    p.add_argument("--gzip", action="store_true", help="write submission.csv.gz")
    p.add_argument("--final", "--preset", dest="final", choices=("cpu", "original"),
                   help="stack the original's final six networks (%s), training the missing ones with this "
                        "preset into --runs-root (--preset original: the final submission's recipes)"
                        % ", ".join(FINAL_SIX))
    p.add_argument("--train-flags", default="", help="with --preset: more flags for their training, e.g. "
                                                     "'--epochs 5 --data-dir DIR'")
    args = p.parse_args(argv)
    if args.final and args.runs:
        p.error("--preset names its own six runs; leave out --runs")
    try:
        if args.final:
            runs = final_runs(args.runs_root, args.final, shlex.split(args.train_flags))
        else:
            runs = resolve_runs(args.runs, args.runs_root) if args.runs else default_runs(args.runs_root)
        with runlock.hold(args.out, "ensemble folder"):
            results = run_ensemble(runs, args.out, args.folds, args.seed, args.gzip)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(results["table"]))
    print(f"\nreport: {Path(args.out) / 'report.md'}")
    return 0
