"""The member runs of an ensemble: which runs there are, their features side by side, and how new photos
combine their outputs (`combine`, as the ensemble's record says).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rightwhale.core.records import AVERAGE, MEMBER, POOL, STACKER, EnsembleRecord

# what the report calls each combination (the record stores core.records' names)
CHOICE_NAMES = {STACKER: "stacker", POOL: "log-linear pool", AVERAGE: "plain average"}


# The writeup's final ensemble: the 31-, 37- and 67-layer ResNets (cropped_dec21_3, cropped_jan02's layout with
# 2-conv blocks, cropped_jan05_4) and three 19-layer OxfordNets with GAP (cropped_dec19, jan03, jan05_2)
FINAL_SIX = ("resnet31", "resnet37", "resnet67", "oxfordnet19_gap", "cropped_jan03", "cropped_jan05_2")


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
    """The member runs of an ensemble folder (its record stores them relative to it)."""
    return EnsembleRecord.load(ensemble_dir).member_dirs(ensemble_dir)


def stack_features(runs: list[dict], split: str):
    """(names every run has, concatenated features, stacked probabilities, labels) of one split,
    in the first run's order."""
    common = set.intersection(*(set(r[f"{split}_names"].tolist()) for r in runs))
    names = [n for n in runs[0][f"{split}_names"].tolist() if n in common]
    rows = [[{n: i for i, n in enumerate(r[f"{split}_names"].tolist())}[n] for n in names] for r in runs]
    labels = runs[0][f"{split}_labels"][rows[0]] if f"{split}_labels" in runs[0] else None
    return (names, np.concatenate([r[f"{split}_features"][i] for r, i in zip(runs, rows)], axis=1),
            np.stack([r[f"{split}_probabilities"][i] for r, i in zip(runs, rows)]), labels)


def choice_name(combination: str, member: str | None) -> str:
    """How the report names a combination: its row's name, or the member run's."""
    return CHOICE_NAMES.get(combination, member)


def combine(combination: str, member: str | None, run_names: list[str], probs: np.ndarray, features: np.ndarray,
            fitted=(None, None)) -> np.ndarray:
    """New images' probabilities as the ensemble chose (one of records.COMBINATIONS; `member` names the run of
    MEMBER), from each run's probabilities (runs, N, K) and the concatenated features (N, F);
    `fitted` is (stacker, pool)."""
    stacker, pool = fitted
    if combination == STACKER:
        return stacker.predict_proba(features)
    if combination == POOL:
        return pool.predict_proba(probs)
    if combination == AVERAGE:
        return probs.mean(axis=0)
    if combination == MEMBER and member in run_names:
        return probs[run_names.index(member)]
    raise ValueError(f"cannot combine by {combination!r} (member {member!r}) runs {', '.join(run_names)}")
