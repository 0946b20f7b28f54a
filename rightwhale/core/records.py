"""What a finished run folder holds, read back by the code that uses it (identify, evaluate, the ensemble, reproduce).

A run's results.json is a `RunRecord` and an ensemble's stacker.json an `EnsembleRecord`: dataclasses written
as JSON with a schema version and validated when read. Their `figures` are for people (the report's table,
by the names it shows); what code acts on has a typed field of its own. Files written before the schema (no
"schema" key) are still read: their figures were the whole file.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from rightwhale.core import atomic
from rightwhale.core.errors import DataError

SCHEMA = 1
RESULTS, ENSEMBLE = "results.json", "stacker.json"
# how an ensemble's members combine for new photos (ensemble.members.combine)
STACKER, POOL, AVERAGE, MEMBER = "stacker", "pool", "average", "member"
COMBINATIONS = (STACKER, POOL, AVERAGE, MEMBER)


def _read_json(path: Path, what: str, remedy: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no {what}; {remedy}") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable {what} ({type(e).__name__}: {e}); {remedy}") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a {what} (a JSON {type(data).__name__}); {remedy}")
    schema = data.get("schema", SCHEMA)
    if isinstance(schema, bool) or not isinstance(schema, int):
        raise DataError(f"{path}: schema {schema!r} is no version number; {remedy}")
    if schema > SCHEMA:
        raise DataError(f"{path}: {what} of schema {schema}, newer than this code's {SCHEMA}; update rightwhale")
    return data


def _texts(value, path, name) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{path}: {name} must be a list of text, got {type(value).__name__}")
    return value


def _number(value, path, name, low=-math.inf, high=math.inf, optional=True):
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise DataError(f"{path}: {name} is {value!r}, not a number in [{low}, {high}]")
    return float(value)


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """results.json: one stage's run."""
    stage: str
    model: str
    figures: dict                           # for people: name -> number or text, as the report shows them
    seconds: float | None = None            # the stage's wall time
    min_head_length: float | None = None    # align: pairs shorter than this (/ photo width) were lengthened
    schema: int = SCHEMA

    def save(self, run_dir) -> None:
        atomic.write_json(Path(run_dir) / RESULTS, dataclasses.asdict(self))

    @classmethod
    def load(cls, run_dir) -> "RunRecord":
        path = Path(run_dir) / RESULTS
        data = _read_json(path, "run record", f"run the stage for {run_dir} again")
        if "schema" not in data:        # before the schema: the figures were the whole file
            config = Path(run_dir) / "config.json"
            cfg = _read_json(config, "run configuration", f"run the stage for {run_dir} again") \
                if config.is_file() else {}
            data = {"stage": cfg.get("stage", ""), "model": cfg.get("model", ""), "figures": data,
                    "seconds": data.get("seconds"),
                    "min_head_length": data.get("shortest predicted head for cropping / photo width")}
        if not isinstance(data.get("figures"), dict) or not all(isinstance(data.get(k), str) for k in ("stage", "model")):
            raise DataError(f"{path}: a run record needs stage, model (text) and figures (an object)")
        return cls(data["stage"], data["model"], data["figures"],
                   _number(data.get("seconds"), path, "seconds", 0),
                   _number(data.get("min_head_length"), path, "min_head_length", 0, 10))


@dataclasses.dataclass(frozen=True)
class EnsembleRecord:
    """stacker.json: what an ensemble stacked and how new photos combine its members."""
    members: list[str]                      # member run folders, relative to the ensemble folder
    classes: list[str]
    feature_dims: list[int]
    C: float                                # the stacker's chosen inverse L2 strength
    floor: float                            # ... and prior floor
    combination: str                        # one of COMBINATIONS
    member: str | None = None               # combination "member": the run's folder name
    pool_weights: dict = dataclasses.field(default_factory=dict)     # run name -> weight
    cv_log_loss: dict = dataclasses.field(default_factory=dict)      # "C=.. floor=.." -> CV log loss
    schema: int = SCHEMA

    def member_dirs(self, ensemble_dir) -> list[Path]:
        """The member runs' folders: stored relative, so a runs root copied or moved whole keeps its ensemble
        (older folders stored absolute paths: they still read)."""
        return [(Path(ensemble_dir) / r).resolve() for r in self.members]

    def save(self, ensemble_dir) -> None:
        atomic.write_json(Path(ensemble_dir) / ENSEMBLE, dataclasses.asdict(self))

    @classmethod
    def load(cls, ensemble_dir) -> "EnsembleRecord":
        path = Path(ensemble_dir) / ENSEMBLE
        data = _read_json(path, "ensemble record", "run `python ensemble.py` again")
        if "schema" not in data:        # before the schema: `use` held a display name or a run's name
            use = data.get("use", STACKER)
            named = {"stacker": STACKER, "log-linear pool": POOL, "plain average": AVERAGE}
            data = {**data, "combination": named.get(use, MEMBER), "member": None if use in named else use,
                    "pool_weights": data.get("pool weights", {})}
        try:
            record = cls(_texts(data["runs" if "runs" in data else "members"], path, "members"),
                         _texts(data["classes"], path, "classes"), [int(d) for d in data["feature_dims"]],
                         _number(data["C"], path, "C", 0, optional=False),
                         _number(data["floor"], path, "floor", 0, 1, optional=False), data["combination"],
                         data.get("member"), dict(data.get("pool_weights", {})), dict(data.get("cv_log_loss", {})))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{path}: malformed ensemble record ({type(e).__name__}: {e}); run `python ensemble.py` "
                            "again") from e
        names = [Path(m).name for m in record.members]
        problem = (f"unknown combination {record.combination!r} (one of {', '.join(COMBINATIONS)})"
                   if record.combination not in COMBINATIONS else
                   f"combination {MEMBER!r} names member {record.member!r}, not one of {', '.join(names)}"
                   if record.combination == MEMBER and record.member not in names else
                   f"combination {record.combination!r} takes no member (got {record.member!r})"
                   if record.combination != MEMBER and record.member is not None else
                   f"{len(record.feature_dims)} feature sizes for {len(names)} members"
                   if len(record.feature_dims) != len(names) else None)
        if problem:
            raise DataError(f"{path}: {problem}; run `python ensemble.py` again")
        return record


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
