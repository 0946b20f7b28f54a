"""python ensemble.py: stack several classifier and matcher runs (stage 5, stages/ensemble.py).

`python ensemble.py --preset PRESET` (or `--final PRESET`) stacks the six networks of the original's final
submission (FINAL_SIX, from the writeup; docs/final-ensemble.md), training with `python train.py --stage
classify --preset PRESET --model NAME` the ones not yet in the runs root (`--train-flags` passes more flags,
e.g. fewer epochs).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from rightwhale.core import runlock
from rightwhale.core.errors import DataError
from rightwhale.ensemble.members import FINAL_SIX, default_runs, resolve_runs
from rightwhale.stages.ensemble import run_ensemble
from rightwhale.views.report import table


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
            record = run_ensemble(runs, args.out, args.folds, args.seed, args.gzip)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(record.figures["table"]))
    print(f"\nreport: {Path(args.out) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
