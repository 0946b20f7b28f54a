"""What every stage reads and writes: the survey, the one stored split, caches, the run folder.

A run folder holds the resolved configuration (config.json), the training
loop's files (best.msgpack, last.msgpack, history.json, history.png), the
stage's predictions and figures, and report.md tying them together.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from rightwhale.core import atomic, metrics
from rightwhale.core.config import StageConfig
from rightwhale.core.errors import DataError
from rightwhale.core.records import RunRecord
from rightwhale.io.cache import ImageCache, Rows, build_cache
from rightwhale.io.data_dirs import save_classes
from rightwhale.io.formats import report_problems
from rightwhale.io.split import Split, ensure_split
from rightwhale.io.submission import write_submission
from rightwhale.io.survey import Survey, load_survey

# Fields a resumed run may change: how long it trains (max_epochs only without a
# learning-rate decay, whose schedule spans max_epochs).
RESUMABLE_CHANGES = {"max_epochs", "patience"}
# Settings added after runs were made, with the value that reproduces how those runs trained: a run
# resumes only with that value (anything else would change its training halfway).
ADDED_SINCE = {"l2_gamma": False, "interpolation": 1}


@dataclasses.dataclass
class Workspace:
    cfg: StageConfig
    survey: Survey
    split: Split
    run_dir: Path
    resume: bool = False
    progress: bool = True
    log: object = print
    parent: Survey | None = None       # the survey a folder of crops was cut from

    @property
    def labels_source(self) -> Survey:
        """Where every split image has its label, also one that yielded no crop."""
        return self.parent or self.survey

    def cache(self, size: int | None = None) -> ImageCache:
        """Every photo of the survey, decoded once at size x size (built on first use)."""
        return build_cache(self.survey.root, size or self.cfg.image_size, progress=self.progress)

    def present(self, cache: ImageCache, test: list[str] | None = None) -> dict[str, list[str]]:
        """The train, valid and test (the survey's unless given) names with a usable input in the cache; the
        others are reported, not fatal."""
        usable, present = set(cache.names), {}
        for split, names in (("train", self.split.train), ("valid", self.split.valid),
                             ("test", self.survey.test if test is None else test)):
            failed = [n for n in names if n not in usable]
            if failed:
                self.log(f"{len(failed)} {split} image(s) without a usable input (unreadable, or no crop), "
                         f"skipped: {', '.join(failed[:5])}{' ...' if len(failed) > 5 else ''}")
            present[split] = [n for n in names if n in usable]
        return present

    def rows(self, cache: ImageCache, names) -> Rows:
        return Rows(cache.images, [cache.index(n) for n in names])

    def path(self, name: str) -> Path:
        return self.run_dir / name

    def record(self, figures: dict, **typed) -> RunRecord:
        """The run's record (results.json, written by run_stage): the figures for people, `typed` for code."""
        return RunRecord(self.cfg.stage, self.cfg.model, figures, **typed)

    def write_json(self, name: str, obj) -> Path:
        atomic.write_json(self.path(name), obj)
        return self.path(name)

    def write_npz(self, name: str, **arrays) -> Path:
        atomic.write_npz(self.path(name), **arrays)
        return self.path(name)

    def write_predictions(self, names: dict, probs: dict, features: dict, labels: dict, prior) -> dict:
        """What a classifier or matcher run hands on: valid_probabilities.csv, submission.csv (every row of
        sample_submission.csv) and features.npz, from the names, probabilities and features of each split
        with an input; returns the validation scores. Every validation image and test row is scored, also
        one without an input (a crop that failed): it gets the class prior, as its submission row would."""
        labelled = self.labels_source

        def rows_for(split, rows):
            found = dict(zip(names[split], probs[split]))
            return np.stack([found.get(r, prior) for r in rows]) if rows else np.zeros((0, len(prior)))

        results = metrics.classification_scores(rows_for("valid", self.split.valid),
                                                labelled.labels_array(self.split.valid), prior)
        results["validation images without input (scored with the prior)"] = len(self.split.valid) - len(names["valid"])
        write_submission(self.path("valid_probabilities.csv"), names["valid"], labelled.classes, probs["valid"])
        if labelled.submission_rows:
            write_submission(self.path("submission.csv"), labelled.submission_rows, labelled.classes,
                             rows_for("test", labelled.submission_rows))
        self.write_npz("features.npz", classes=np.array(labelled.classes),
                       **{f"{s}_names": np.array(n, dtype=str) for s, n in names.items()},
                       **{f"{s}_features": features[s] for s in names},
                       **{f"{s}_probabilities": probs[s] for s in names},
                       **{f"{s}_labels": labels[s] for s in labels})
        return results


def config_changes(stored: dict, current: dict, prefix="") -> list[str]:
    """The settings of `current` that differ from a run's `stored` ones, beyond what a resumed run may change."""
    allowed = RESUMABLE_CHANGES - ({"max_epochs"} if stored.get("final_learning_rate") is not None else set())
    changes = []
    for key in sorted(set(stored) | set(current)):
        if key not in stored and current.get(key) == ADDED_SINCE.get(key, object()):
            continue                   # a setting added since that run, at the value the code behaved as before
        a, b = stored.get(key, "(none: older run)"), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_changes(a, b, f"{prefix}{key}.")
        elif a != b and key not in allowed:
            changes.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changes


def prepare_run_dir(run_dir: Path, cfg: StageConfig, data_dir: Path, resume: bool) -> None:
    """Create the run folder and store the configuration; refuse to mix two runs in one folder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.json"
    current = json.loads(json.dumps({"data_dir": str(Path(data_dir).resolve()), **cfg.to_dict()}))
    started = (run_dir / "last.msgpack").exists()
    if started and not resume:
        raise DataError(f"{run_dir} already holds a {cfg.stage} run: add --continue-training to resume "
                        "it, or give another --run-dir (or delete the folder) to start afresh")
    if started and config_path.exists():
        changes = config_changes(json.loads(config_path.read_text()), current)
        if changes:
            raise DataError(f"{run_dir}: --continue-training with a different configuration "
                            f"({'; '.join(changes)}); resume with the original flags or use another --run-dir")
    atomic.write_json(config_path, current)


def open_workspace(cfg: StageConfig, data_dir, run_dir, resume: bool = False, parent: Survey | None = None,
                   progress: bool = True, log=print) -> Workspace:
    """Read the data, the stored split (made on first use) and prepare the run folder.

    A folder of crops cut from a `parent` survey reuses that survey's split,
    so no stage ever validates on an image another stage trained on.
    """
    survey = load_survey(data_dir)
    report_problems(survey.problems)
    save_classes(survey)
    split = ensure_split(parent if parent is not None else survey, cfg.split)
    prepare_run_dir(Path(run_dir), cfg, data_dir, resume)
    return Workspace(cfg, survey, split, Path(run_dir), resume, progress, log, parent)
