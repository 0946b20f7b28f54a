"""One train/validation split per data directory, stored as split.json and shared by every stage.

The original lost weeks to aligner and classifier validation sets that overlapped.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rightwhale.core import config
from rightwhale.core.atomic import is_writer, write_json
from rightwhale.core.errors import DataError
from rightwhale.io.data_dirs import derived_dir, resolve_data_dir
from rightwhale.io.formats import report_problems
from rightwhale.io.survey import Survey, load_survey


class SplitMismatch(DataError):
    """The stored split was made for other data or other settings."""


@dataclass(frozen=True)
class Split:
    train: list[str]
    valid: list[str]
    seed: int
    valid_fraction: float
    fingerprint: str          # of the train.csv rows it was made from


def _fingerprint_labels(labels: dict[str, str]) -> str:
    rows = "\n".join(f"{image},{whale}" for image, whale in sorted(labels.items()))
    return hashlib.sha256(rows.encode()).hexdigest()


def fingerprint(survey: Survey) -> str:
    """sha256 of the sorted (image, whale) training rows: identifies the data."""
    return _fingerprint_labels(survey.train)


def make_split(labels: dict[str, str], valid_fraction: float = 0.15, seed: int = 42) -> Split:
    """Stratified by whale: each gives validation images in proportion to its size but keeps one for training
    (so single-image whales stay in training). Rounding leftovers go by largest remainder with random
    tie-breaks, so that small whales share them fairly."""
    if not 0 <= valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    by_whale = defaultdict(list)
    for image in sorted(labels):             # independent of train.csv row order
        by_whale[labels[image]].append(image)
    whales = sorted(w for w, images in by_whale.items() if len(images) > 1)
    rng = np.random.default_rng(seed)
    target = round(valid_fraction * len(labels))
    sizes = np.array([len(by_whale[w]) for w in whales], dtype=int)
    share, capacity = sizes * target / max(sizes.sum(), 1), sizes - 1
    counts = np.minimum(np.floor(share).astype(int), capacity)
    order = np.lexsort((rng.random(len(sizes)), -(share - np.floor(share))))
    left = min(target, capacity.sum()) - counts.sum()
    while left > 0:                          # one more image each, in that order, for whales with room
        more = order[counts[order] < capacity[order]][:left]
        counts[more] += 1
        left -= len(more)
    valid = {by_whale[w][i] for w, size, k in zip(whales, sizes, counts) for i in rng.permutation(size)[:k]}
    return Split(train=[n for n in labels if n not in valid], valid=[n for n in labels if n in valid],
                 seed=seed, valid_fraction=valid_fraction, fingerprint=_fingerprint_labels(labels))


def split_path(survey: Survey) -> Path:
    return derived_dir(survey.root) / "split.json"


def load_split(survey: Survey) -> Split:
    """The stored split, checked against the survey's training rows."""
    path = split_path(survey)
    if not path.is_file():
        raise DataError(f"{path}: no stored split for {survey.root}; make it with: python -m rightwhale split "
                        f"--data-dir {survey.root} (every training stage also makes it on first use)")
    try:
        split = Split(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: malformed split file ({e}); delete it to make a new split") from e
    if split.fingerprint != fingerprint(survey):
        raise SplitMismatch(f"{path} was made for a different train.csv ({len(split.train) + len(split.valid)} "
                            f"images vs {len(survey.train)} in {survey.root}); delete it to make a new split, "
                            "or point --data-dir at the data it was made for")
    return split


def ensure_split(survey: Survey, cfg: config.Split) -> Split:
    """Load the stored split (refusing other data or settings); make and store one first if there is none."""
    if not split_path(survey).is_file():
        made = make_split(survey.train, cfg.valid_fraction, cfg.seed)
        if not is_writer():       # process > 0 of several hosts: the same split process 0 is storing
            return made
        write_json(split_path(survey), asdict(made))
    split = load_split(survey)
    if (split.seed, split.valid_fraction) != (cfg.seed, cfg.valid_fraction):
        raise SplitMismatch(
            f"{split_path(survey)} was made with seed {split.seed} and valid_fraction {split.valid_fraction}, "
            f"but seed {cfg.seed} and valid_fraction {cfg.valid_fraction} were asked; every stage must share "
            "one split: ask for the stored settings, or delete the file to make a new split (earlier models' "
            "validation scores then no longer apply)")
    return split


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rightwhale split",
                                description="make (or check) the stored split of a data directory and summarize it")
    p.add_argument("--data-dir", help="data directory (default: the embedded synthetic survey)")
    p.add_argument("--valid-fraction", type=float, default=config.Split.valid_fraction)
    p.add_argument("--seed", type=int, default=config.Split.seed)
    args = p.parse_args(argv)
    try:
        survey = load_survey(resolve_data_dir(args.data_dir))
        report_problems(survey.problems)        # a row dropped (a conflicting label, say) is said, not hidden
        split = ensure_split(survey, config.Split(args.valid_fraction, args.seed))
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    whales = {survey.train[n] for n in split.valid}
    print(f"{split_path(survey)}: {len(split.train)} training and {len(split.valid)} validation images; "
          f"{len(whales)} of {len(set(survey.train.values()))} whales have validation images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
