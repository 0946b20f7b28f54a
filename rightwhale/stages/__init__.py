"""`python train.py --stage {naive,localize,align,classify,match}`: the four stages of the original and the matcher.

Each stage reads the data directory (the embedded synthetic survey by
default), the one stored split and the image cache, trains, and writes a run
folder (runs/<stage> by default) with config.json, best weights, history,
predictions, figures and report.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import time
from pathlib import Path

from rightwhale.core import runlock
from rightwhale.core.config import PRESETS, STAGES, Match, stage_config
from rightwhale.core.errors import DataError
from rightwhale.core.records import RunRecord
from rightwhale.io import history as history_io
from rightwhale.io.data_dirs import resolve_data_dir
from rightwhale.io.formats import report_problems
from rightwhale.models import model_names

CROP_STAGES = ("classify", "match")     # the stages that read head crops

EPILOG = """examples:
  python train.py --stage align                      # aligner on the embedded survey, CPU preset
  python train.py --stage classify                   # classifier on the aligned head crops
  python train.py --stage localize && python train.py --stage classify --crops boxes
  python train.py --stage classify --crops DIR       # a folder of ready crops (imgs/ + train.csv)
  python train.py --stage match --crops ../shared/data/rightwhale-heads   # local features, real crops
  python train.py --stage naive --preset original --data-dir /data/kaggle
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python train.py", description="Train one stage of the pipeline of the "
                                "2nd place NOAA Right Whale Recognition solution; every stage writes a run folder.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", required=True, choices=STAGES,
                   help="naive: whole-photo classifier; localize: head-box regressor and box crops; "
                        "align: bonnet/blowhead aligner and aligned head crops; classify: classifier on crops; "
                        "match: local-feature matcher on crops (no network, beyond the original)")
    p.add_argument("--data-dir", help="data directory in the Kaggle layout (train.csv, imgs/, "
                                      "sample_submission.csv, points1/2.json); default: the embedded "
                                      "synthetic survey in ./data/synthetic-survey, generated on first use. "
                                      "classify reads --crops instead and checks they were cut from it")
    p.add_argument("--preset", choices=PRESETS, default="cpu",
                   help="cpu: small inputs, finishes in minutes on 2 cores (default); "
                        "original: the 2015 solution's sizes and hyper-parameters (GPU)")
    p.add_argument("--model", choices=model_names(), metavar="MODEL",
                   help="network from the registry (python -m rightwhale.models --list); "
                        "default: the stage's model of the preset")
    p.add_argument("--epochs", type=int, help="maximum epochs (default: the preset's)")
    p.add_argument("--batch-size", type=int, help="batch size (default 16, as the original)")
    p.add_argument("--learning-rate", type=float, help="learning rate (default: the preset's)")
    p.add_argument("--image-size", type=int, help="network input size (default: the preset's)")
    p.add_argument("--crop-size", type=int, help="localize/align: size of the head crops they write (default: the preset's)")
    p.add_argument("--seed", type=int, help="training seed (data order, init, augmentation); default 42")
    p.add_argument("--crops", default="aligned",
                   help="classify and match: 'aligned' (runs/align/crops, default), 'boxes' "
                        "(runs/localize/crops), 'annotated' (cut from the annotated points, made on first "
                        "use in RUNS/annotated-crops) or a data directory of ready crops")
    p.add_argument("--aux-targets", action="store_true",
                   help="classify only: auxiliary heads for the whale's pattern type (whale_types.csv) and the "
                        "bonnet/blowhead position in the crop, as the 1st place team did")
    p.add_argument("--match-set", action="append", default=[], metavar="KEY=VALUE",
                   help="match only: change one of the matcher's settings (Match in rightwhale/core/config.py), "
                        "e.g. --match-set inlier_weight=0 (repeatable)")
    p.add_argument("--runs", default="runs", help="folder of run folders (default ./runs)")
    p.add_argument("--run-dir", help="this run's folder (default RUNS/<stage>, classify: RUNS/classify-<crops>-<model>, "
                                        "match: RUNS/match-<crops>)")
    p.add_argument("--continue-training", action="store_true",
                   help="resume the run in --run-dir from its last checkpoint (optimizer and PRNG state included)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs, CI)")
    return p


def _overrides(args) -> dict:
    names = {"model": "model", "epochs": "max_epochs", "batch_size": "batch_size",
             "learning_rate": "learning_rate", "image_size": "image_size", "crop_size": "crop_size",
             "seed": "seed"}
    overrides = {field: getattr(args, arg) for arg, field in names.items() if getattr(args, arg) is not None}
    return overrides | ({"aux_targets": True} if args.aux_targets else {}) | _match_settings(args.match_set)


def _match_settings(items) -> dict:
    """--match-set KEY=VALUE pairs, each value parsed as the type of that Match field."""
    fields, settings = {f.name: f for f in dataclasses.fields(Match)}, {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in fields or not value:
            raise ValueError(f"--match-set {item}: expected KEY=VALUE with KEY one of {', '.join(fields)}")
        kind = type(getattr(Match(), key))
        settings[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return settings


def default_run_dir(args, cfg) -> Path:
    if args.run_dir:
        return Path(args.run_dir)
    if args.stage not in CROP_STAGES:
        return Path(args.runs) / args.stage
    crops = args.crops if args.crops in ("aligned", "boxes", "annotated") else Path(args.crops).name
    return Path(args.runs) / (f"classify-{crops}-{cfg.model}" if args.stage == "classify" else f"match-{crops}")


def run_stage(args) -> RunRecord:
    """Resolve data, configuration and folders, then run one stage; writes and returns its record."""
    from rightwhale.stages import crops
    from rightwhale.stages.workspace import open_workspace
    cfg = stage_config(args.stage, args.preset, **_overrides(args))
    progress = not args.no_progress
    parent = None
    if args.stage in CROP_STAGES:
        data_dir = crops.resolve(args.crops, Path(args.runs), args.data_dir, args.preset, progress)
        parent = crops.parent_survey(data_dir, args.data_dir)
    else:
        data_dir = resolve_data_dir(args.data_dir, progress)
    run_dir = default_run_dir(args, cfg)
    print(f"{args.stage}: data {data_dir}, model {cfg.model}, input {cfg.image_size}px, run folder {run_dir}")
    with runlock.hold(run_dir):          # one writer per run folder: a second training fails at once
        ws = open_workspace(cfg, data_dir, run_dir, resume=args.continue_training, parent=parent, progress=progress)
        started = time.perf_counter()
        record = importlib.import_module(f"rightwhale.stages.{args.stage}").run(ws)
        figures = record.figures
        if (run_dir / "history.json").is_file():     # a network's run: what choosing its epoch flatters
            figures = figures | history_io.epoch_choice(json.loads((run_dir / "history.json").read_text()))
        record = dataclasses.replace(record, figures=figures, seconds=time.perf_counter() - started)
        record.save(run_dir)
    print(f"\n{args.stage} results ({run_dir / 'report.md'}):")
    for key, value in record.figures.items():
        print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")
    report_problems(ws.survey.problems, limit=3)     # again at the end, where a user looks
    return record


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.stage not in CROP_STAGES and args.crops != "aligned":
        parser().error("--crops applies to --stage classify and match only")
    trained = [f"--{a.replace('_', '-')}" for a in ("model", "epochs", "batch_size", "learning_rate", "image_size")
               if getattr(args, a) is not None]
    if args.stage == "match" and (trained or args.continue_training):
        parser().error(f"{' '.join(trained) or '--continue-training'}: the matcher trains no network "
                       "(its settings are Match in rightwhale/core/config.py)")
    if args.stage != "match" and args.match_set:
        parser().error("--match-set applies to --stage match only")
    if args.stage != "classify" and args.aux_targets:
        parser().error("--aux-targets applies to --stage classify only")
    if args.crop_size is not None and args.stage not in ("localize", "align"):
        parser().error("--crop-size applies to --stage localize and align (the stages that write crops)")
    try:
        run_stage(args)
    except (DataError, FileExistsError, FloatingPointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
