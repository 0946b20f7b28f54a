"""Crops as data directories: how localize and align hand their output to classify.

A crop directory is in the Kaggle layout (imgs/, train.csv,
sample_submission.csv) plus source.json naming the survey it was cut from,
so the classifier reuses that survey's stored split: no image validates one
stage after training another.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from rightwhale.core import atomic
from rightwhale.core.config import stage_config
from rightwhale.core.errors import DataError
from rightwhale.io.crop_folders import crop_data_dir
from rightwhale.io.data_dirs import resolve_data_dir, source_of
from rightwhale.io.formats import report_problems, sloth_boxes, sloth_points
from rightwhale.io.survey import load_survey

CROP_SOURCES = {"aligned": ("align", "head"), "boxes": ("localize", "box")}


class MissingInput(DataError):
    """A stage's prerequisite is missing; the message names the command that makes it."""


def require_annotations(ws, has, need: str) -> None:
    """Fail before any work unless training and validation photos carry the annotations a stage learns."""
    for part in ("train", "valid"):
        if not any(has(n) for n in getattr(ws.split, part)):
            raise MissingInput(f"{ws.survey.root}: {need} for {part} photos, and none has them; put the "
                               "annotation files in the data directory or in annotations/ (see "
                               "annotations/README.md), or generate a survey that has them: "
                               "python -m rightwhale synth --out DIR")


def write_crops(ws, kind: str, points: dict | None = None, boxes: dict | None = None) -> dict:
    """Write run/crops from photo-pixel points (kind "head") or boxes (kind "box"). On several hosts only
    process 0 does (the folder is swapped in by renames, which the others must not race)."""
    if not atomic.is_writer():
        return {"count": 0, "fallback": 0}
    out, partial = ws.path("crops"), ws.path("crops.partial")
    shutil.rmtree(partial, ignore_errors=True)
    size = ws.cfg.crop_size
    if kind == "head":
        for file, which in (("points1.json", 0), ("points2.json", 1)):
            atomic.write_json(ws.path(file), sloth_points({n: p[which] for n, p in points.items()}))
        made = crop_data_dir(ws.survey.root, partial, size, size,
                                  points1=ws.path("points1.json"), points2=ws.path("points2.json"),
                                  predicted=True, progress=ws.progress)
    else:
        atomic.write_json(ws.path("boxes.json"), sloth_boxes(boxes))
        made = crop_data_dir(ws.survey.root, partial, size, size, boxes=ws.path("boxes.json"),
                                  progress=ws.progress)
    source = json.loads((partial / "source.json").read_text())
    atomic.write_json(partial / "source.json", source | {"stage": ws.cfg.stage, "run": str(ws.run_dir.resolve())})
    old = ws.path("crops.old")       # swap in the new folder; the old one goes only once the new one is there
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    partial.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    known = set(ws.survey.problems)    # reported when the survey was opened
    report_problems([p for p in made["problems"] if p not in known])
    return {"count": len(made["cropped"]), "fallback": made["fallback"]}


ANNOTATED = "annotated-crops"    # RUNS/annotated-crops: what an aligner without errors would crop


def annotated_crops(runs_root: Path, data_dir=None, preset: str = "cpu", progress: bool = True) -> Path:
    """Head crops of the survey cut from its annotated points (at the align stage's crop size), made on
    first use and again when they were cut from another survey or at another size."""
    survey, out = resolve_data_dir(data_dir, progress), Path(runs_root) / ANNOTATED
    size = stage_config("align", preset).crop_size
    made = json.loads((out / "source.json").read_text()) if (out / "source.json").is_file() else {}
    if not made or source_of(out) != survey.resolve() or made.get("size") != [size, size]:
        shutil.rmtree(out, ignore_errors=True)
        crop_data_dir(survey, out, size, size, progress=progress)
    return out


def resolve(arg: str, runs_root: Path, data_dir=None, preset: str = "cpu", progress: bool = True) -> Path:
    """--crops aligned | boxes | annotated | DIR -> a crop data directory, or a MissingInput naming the fix."""
    if arg == "annotated":
        return annotated_crops(runs_root, data_dir, preset, progress)
    if arg in CROP_SOURCES:
        stage, _ = CROP_SOURCES[arg]
        path = Path(runs_root) / stage / "crops"
        if not (path / "train.csv").is_file():
            raise MissingInput(f"no {arg} head crops in {path}: run `python train.py --stage {stage}` first "
                               "(with the same --data-dir), or pass --crops DIR for a folder of crops")
        return path
    path = Path(arg)
    if not (path / "train.csv").is_file():
        raise MissingInput(f"--crops {arg}: not a data directory of crops (no train.csv); use "
                           "'aligned', 'boxes', 'annotated' or a folder of JPEGs in imgs/ plus train.csv")
    return path


def parent_survey(crops_dir: Path, data_dir=None, log=print):
    """The survey the crops were cut from, or None for a plain folder of crops.

    `data_dir`, when given, must be that survey: a classifier must not mix
    crops of one data set with the split of another.
    """
    source = Path(crops_dir) / "source.json"
    if not source.is_file():
        log(f"{crops_dir} has no source.json: treated as a data set of its own, with its own split "
            "(crops made by `python -m rightwhale crop` name their survey; such a folder here was not)")
        return None
    parent = Path(json.loads(source.read_text())["survey"])
    if data_dir is not None and Path(data_dir).resolve() != parent.resolve():
        raise DataError(f"{crops_dir} holds crops of {parent}, not of --data-dir {data_dir}; rerun the "
                        f"cropping stage with --data-dir {data_dir} or drop --data-dir")
    return load_survey(parent)
