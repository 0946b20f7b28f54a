"""python -m rightwhale reproduce: the whole pipeline in order, then REPRODUCTION.md.

Runs naive, localize, box + classify, align, align + classify with resnet19
and the six networks of the original's final submission, the local-feature
matcher on annotated and aligned crops, and the ensemble on the embedded
survey (or --data-dir), with the CPU preset unless told otherwise; with
--real-heads DIR also resnet19, the matcher and their ensemble on a folder
of real head crops. Every number
in the report comes from this run's folders. A step whose run folder
already holds results is reused (resumable); --fresh starts over.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from rightwhale.core import atomic
from rightwhale.core.config import PRESETS, stage_config
from rightwhale.core.errors import DataError
from rightwhale.core.records import RESULTS, EnsembleRecord, RunRecord
from rightwhale.ensemble.members import FINAL_SIX, choice_name, ensemble_runs
from rightwhale.io.data_dirs import resolve_data_dir, source_survey
from rightwhale.stages import main as train_main
from rightwhale.stages.crops import ANNOTATED, annotated_crops
from rightwhale.stages.ensemble import run_ensemble
from rightwhale.stages.workspace import config_changes
from rightwhale.views.report import table

# resnet19, the CPU preset's classifier, and the final submission's six, each with its definition's recipe
ENSEMBLE_MODELS = ("resnet19", *FINAL_SIX)
REAL_HEADS_MODELS = ("resnet19",)      # the networks barely learn real crops on CPU; the matcher does
# (row, train.py arguments, run folder under RUNS, what the writeup reports on the real data)
STEPS = [
    ("naive: whole photo", ["--stage", "naive"], "naive", "about 5.8 (0.95 of chance)"),
    ("localize: head box", ["--stage", "localize"], "localize", "IoU histogram only"),
    ("box crops + classify", ["--stage", "classify", "--crops", "boxes"], "classify-boxes-resnet19",
     "about 5.0 (0.82 of chance)"),
    ("align: bonnet and blowhead", ["--stage", "align"], "align", "-"),
    ("annotated points + classify: an aligner without errors", ["--stage", "classify", "--crops", ANNOTATED],
     "classify-annotated-resnet19", "-"),
    *[(f"aligned crops + classify ({m})", ["--stage", "classify", "--model", m], f"classify-aligned-{m}", "-")
      for m in ENSEMBLE_MODELS],
    ("annotated points + match (local features, no network)", ["--stage", "match", "--crops", ANNOTATED],
     "match-annotated", "-"),
    ("aligned crops + match (local features, no network)", ["--stage", "match"], "match-aligned", "-"),
]
REFERENCE = ("The writeup (real data, 447 whales, chance ln 447 = 6.10): naive about 5.8, box crops about 5.0; "
             "the 1st place team reported 87% accuracy.")


def _commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
        return rev + (" (with uncommitted changes)" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def _run_step(args: list[str], folder: Path, common: list[str], preset: str, survey: Path) -> tuple[dict, float]:
    """Train one step unless its folder already has results of this preset, data and epoch count;
    returns (results, minutes of training)."""
    stale = False
    flag = {a: b for a, b in zip(args, args[1:])}
    if (folder / RESULTS).is_file():
        changes = _settings_changed(folder, flag, preset)
        if changes and flag["--stage"] == "match":      # minutes to redo: redo when settings change
            print(f"matching {folder} again: the matcher's settings have changed since")
            stale = True
    if (folder / RESULTS).is_file() and not stale:
        cfg = json.loads((folder / "config.json").read_text())
        epochs = int(flag.get("--epochs", stage_config(flag["--stage"], preset).train.max_epochs))
        if (cfg["preset"], source_survey(folder), cfg["train"]["max_epochs"]) != (preset, survey.resolve(), epochs):
            raise SystemExit(f"reproduce: {folder} holds a run of another preset, data or epoch count; "
                             "use another --runs or --fresh")
        if changes:
            raise SystemExit(f"reproduce: {folder} was trained with other settings than this code's "
                             f"({'; '.join(changes)}); use another --runs or --fresh")
        crops = Path(cfg["data_dir"]) / "source.json"     # a folder of crops, cut again since this run?
        if crops.is_file() and crops.stat().st_mtime > (folder / RESULTS).stat().st_mtime:
            raise SystemExit(f"reproduce: {folder} was trained on crops that {crops.parent} has replaced "
                             "since; use --fresh")
        print(f"reusing {folder}")
        record = RunRecord.load(folder)
        if (folder / "history.json").is_file():      # a network: its epochs' time, over every resumed part
            history = json.loads((folder / "history.json").read_text())
            return record.figures, sum(e["seconds"] for e in history) / 60
        # a match run: its stage's time (runs before the record kept it among their figures)
        return record.figures, (record.seconds / 60 if record.seconds is not None else record.figures["minutes"])
    resume = ["--continue-training"] if (folder / "last.msgpack").is_file() else []
    started = time.perf_counter()
    status = train_main([*args, *common, "--run-dir", str(folder), *resume])
    if status != 0:
        raise SystemExit(f"reproduce: `python train.py {' '.join(args)}` failed (exit {status})")
    return RunRecord.load(folder).figures, (time.perf_counter() - started) / 60


def _settings_changed(folder: Path, flag: dict, preset: str) -> list[str]:
    """What of a finished step's settings (the matcher's, or the network's input, training and model
    options) this code would now set otherwise."""
    overrides = {"model": flag["--model"]} if "--model" in flag else {}
    if "--epochs" in flag:          # as train.py sets it: a StepDecay spans these epochs
        overrides["max_epochs"] = int(flag["--epochs"])
    current = json.loads(json.dumps(stage_config(flag["--stage"], preset, **overrides).to_dict()))
    stored = json.loads((folder / "config.json").read_text())
    keys = ("match",) if flag["--stage"] == "match" else ("image_size", "train", "model_kwargs")
    return config_changes({k: stored.get(k) for k in keys}, {k: current.get(k) for k in keys})


def _row(name, results, minutes, reference) -> dict:
    loss = results.get("log loss")
    return {"step": name, "validation log loss": loss if loss is not None else "-",
            "log loss / ln K": results.get("log loss / ln K", "-"),
            "top-1 accuracy": results.get("top-1 accuracy", "-"),
            "other": _other(results), "epoch held out": _epoch_held_out(results),
            "writeup (real data)": reference, "minutes": f"{minutes:.1f}"}


def _epoch_held_out(results) -> str:
    """The epoch table's validation loss at the best epoch, and with the epoch chosen on the other half of the
    validation images: what choosing the epoch on them flatters (history.epoch_choice)."""
    best, held = (results.get(k) for k in ("validation loss at the best epoch",
                                           "validation loss, epoch chosen on the other half"))
    return "-" if best is None or held is None else f"{best:.4f} -> {held:.4f}"


def _other(results) -> str:
    for key in ("mean IoU", "point error / bonnet-blowhead distance, with TTA"):
        if key in results:
            return f"{key}: {results[key]:.3f}"
    return f"class-prior log loss {results['class-prior log loss']:.3f}" if "class-prior log loss" in results else ""


def _finished_ensemble(runs: list[Path], out: Path) -> RunRecord | None:
    """An ensemble of exactly these runs made after every one of them was last trained, if `out` holds one."""
    try:
        record = RunRecord.load(out)
        same = ensemble_runs(out) == [r.resolve() for r in runs]
        newer = all((out / RESULTS).stat().st_mtime > (r / "features.npz").stat().st_mtime for r in runs)
    except (OSError, DataError):       # none yet, unreadable, or a member not trained: make it
        return None
    return record if same and newer and record.seconds is not None else None


def _ensemble_rows(runs: list[Path], out: Path, label: str) -> list[dict]:
    record = _finished_ensemble(runs, out)
    if record is None:
        record = run_ensemble(runs, out)
    else:
        print(f"reusing {out}")
    minutes = record.seconds / 60
    chosen = EnsembleRecord.load(out)
    used = choice_name(chosen.combination, chosen.member)      # its row's name, or a member run's
    used_row = {"stacker": "stacker, out-of-fold", "plain average": "plain average"}.get(used, used)
    rows = []
    for r in record.figures["table"]:
        member = r["model"] in [p.name for p in runs]
        if member and r["model"] != used:    # each member has its own row already
            continue
        mark = " (used for new photos)" if r["model"].startswith(used_row) else ""
        name = f"best single model, {r['model']}" if member else r["model"]
        rows.append({"step": f"{label}: {name}{mark}", "validation log loss": r["log loss"],
                     "log loss / ln K": r["log loss / ln K"], "top-1 accuracy": r["top-1 accuracy"],
                     "other": "", "epoch held out": "-", "writeup (real data)": "-", "minutes": f"{minutes:.1f}"})
    return rows


def reproduce(runs_root: Path, data_dir: str | None, preset: str, real_heads: str | None,
              real_epochs: int, out: Path, fresh: bool) -> Path:
    commit = _commit()     # the code that runs; later commits during a long run do not count
    if fresh:
        for folder in [*(runs_root / step[2] for step in STEPS), runs_root / "ensemble", runs_root / ANNOTATED,
                       *runs_root.glob("real-heads-*")]:
            shutil.rmtree(folder, ignore_errors=True)
    common = ["--runs", str(runs_root), "--preset", preset, "--no-progress"] + (["--data-dir", data_dir] if data_dir else [])
    survey, annotated = resolve_data_dir(data_dir), annotated_crops(runs_root, data_dir, preset, progress=False)
    rows = []
    reused = sorted(p.parent.name for p in runs_root.glob("*/results.json") if "ensemble" not in p.parent.name)
    for name, args, folder, reference in STEPS:
        args = [str(annotated) if a == ANNOTATED else a for a in args]
        results, minutes = _run_step(args, runs_root / folder, common, preset, survey)
        rows.append(_row(name, results, minutes, reference))
    rows += _ensemble_rows([*(runs_root / f"classify-aligned-{m}" for m in ENSEMBLE_MODELS),
                            runs_root / "match-aligned"], runs_root / "ensemble", "ensemble")
    rows.append({"step": "1st place team (real data, as reported)", "validation log loss": "-", "log loss / ln K": "-",
                 "top-1 accuracy": 0.87, "other": "", "epoch held out": "-", "writeup (real data)": "-", "minutes": "-"})
    real_rows = []
    if real_heads:
        real_runs = []
        for model in REAL_HEADS_MODELS:
            folder = runs_root / f"real-heads-{model}"
            args = ["--stage", "classify", "--crops", real_heads, "--model", model, "--epochs", str(real_epochs)]
            results, minutes = _run_step(args, folder, ["--runs", str(runs_root), "--preset", preset, "--no-progress"],
                                         preset, Path(real_heads))
            real_rows.append(_row(f"real heads + classify ({model})", results, minutes, "-"))
            real_runs.append(folder)
        folder = runs_root / "real-heads-match"
        results, minutes = _run_step(["--stage", "match", "--crops", real_heads], folder,
                                     ["--runs", str(runs_root), "--preset", preset, "--no-progress"], preset,
                                     Path(real_heads))
        real_rows.append(_row("real heads + match (local features, no network)", results, minutes, "-"))
        real_runs.append(folder)
        real_rows += _ensemble_rows(real_runs, runs_root / "real-heads-ensemble", "real heads ensemble")
    command = "python -m rightwhale reproduce " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["reproduce"] else sys.argv[1:])
    k = RunRecord.load(runs_root / "classify-aligned-resnet19").figures["classes"]
    parts = [
        "# Reproduction", "",
        f"Made by `{command.strip()}` at commit {commit}, finished "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; preset `{preset}`; data: "
        f"{data_dir or 'the embedded synthetic survey (data/synthetic-survey)'}; run folders in `{runs_root}/`.", "",
        f"Validation split of the stored split; {k} whales, chance log loss ln {k} = {math.log(k):.3f}. "
        "Log loss / ln K puts the synthetic survey and the real data (ln 447 = 6.10) on one scale. " + REFERENCE, "",
        "Every figure is on the validation images, which also chose each network's best epoch and the ensemble's "
        "choice; \"epoch held out\" gives the epoch table's validation loss at the best epoch and with the epoch "
        "chosen on the other half of those images (each half read where the other chose), and the ensemble's "
        "\"chosen on 4 of 5 folds\" row holds its own choice out the same way.", "",
        table(rows), ""]
    if real_rows:
        parts += ["## Real head crops", "",
                  f"`{real_heads}`: the classifier stage ({real_epochs} epochs) and the matcher on real aligned head crops, "
                  "with its own stored split.", "", table(real_rows), ""]
    if reused:
        parts += [f"Reused from an earlier run of this command (same preset, data and epochs; minutes are their "
                  f"training time): {', '.join(reused)}.", ""]
    parts += ["Each row's run folder holds report.md with its figures (history, saliency, IoU histogram, "
              "aligned crops)."]
    atomic.write_text(out, "\n".join(parts) + "\n")
    print(f"\nwrote {out}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rightwhale reproduce", description=__doc__.split("\n")[0])
    p.add_argument("--runs", default="runs/reproduce", help="folder for the run folders (default runs/reproduce)")
    p.add_argument("--data-dir", help="data directory (default: the embedded synthetic survey)")
    p.add_argument("--preset", default="cpu", choices=PRESETS, help="cpu (default) or original (GPU)")
    p.add_argument("--real-heads", help="also classify a folder of real head crops (imgs/ + train.csv), "
                                        "e.g. ../shared/data/rightwhale-heads")
    p.add_argument("--real-epochs", type=int, default=30, help="epochs for the real-heads classifiers")
    p.add_argument("--out", default="REPRODUCTION.md", help="report file (default REPRODUCTION.md)")
    p.add_argument("--fresh", action="store_true", help="retrain every step instead of reusing finished ones "
                                                          "(deletes their run folders)")
    args = p.parse_args(argv)
    reproduce(Path(args.runs), args.data_dir, args.preset, args.real_heads, args.real_epochs, Path(args.out), args.fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
