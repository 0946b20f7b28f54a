"""Data directories: the default one (the embedded survey, generated on first use), where a directory's
derived files live (split, caches, label encoder; beside it when writable, else under $RIGHTWHALE_HOME),
which survey a folder of crops came from, and the stored class column order."""
import hashlib
import importlib
import json
import os
import sys
from pathlib import Path

from rightwhale.core.atomic import write_json
from rightwhale.core.errors import DataError
from rightwhale.io.formats import read_text

DEFAULT_DATA_DIR = "data/synthetic-survey"
WHERE_TO_GET_DATA = ("download the Kaggle data from https://www.kaggle.com/c/noaa-right-whale-recognition/data "
                     "(train.csv, imgs/, sample_submission.csv), or omit --data-dir to use the embedded synthetic "
                     f"survey (generated in ./{DEFAULT_DATA_DIR} on first use)")


def derived_dir(data_dir) -> Path:
    """Where splits, label encoders and caches of a data directory are written."""
    root = Path(data_dir).resolve()
    # Mode bits too: root passes os.access on folders marked read-only (../shared).
    if os.access(root, os.W_OK) and root.stat().st_mode & 0o222:
        return root / ".rightwhale"
    # absolute, so every working directory finds the same split and caches
    home = Path(os.environ.get("RIGHTWHALE_HOME", Path.home() / ".cache" / "rightwhale"))
    return home / "derived" / f"{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:8]}"


def source_of(data_dir) -> Path:
    """The survey a data directory's images come from: the one a crop folder names in its source.json,
    else the directory itself."""
    source = Path(data_dir) / "source.json"
    return Path(json.loads(source.read_text())["survey"]).resolve() if source.is_file() else Path(data_dir).resolve()


def resolve_data_dir(arg: str | None, progress: bool = True) -> Path:
    """A --data-dir argument; None means the embedded survey ($RIGHTWHALE_DATA), generated on first use."""
    if arg is not None:
        if not Path(arg).is_dir():
            raise DataError(f"{Path(arg)}: data directory does not exist; {WHERE_TO_GET_DATA}")
        return Path(arg)
    path = Path(os.environ.get("RIGHTWHALE_DATA", DEFAULT_DATA_DIR))
    if not path.exists() or not any(path.iterdir()):
        synth = importlib.import_module("rightwhale.io.synth")  # only needed once; tests may fake it
        print(f"generating the embedded synthetic survey in {path} (first use)", file=sys.stderr)
        synth.generate_survey(path, progress=progress)
    return path


def save_classes(survey) -> list[str]:
    """Store the class column order of a Survey once; refuse to silently change it later."""
    path = derived_dir(survey.root) / "classes.json"
    if not path.is_file():
        write_json(path, {"classes": survey.classes})
        return survey.classes
    stored = load_classes(survey.root)
    if stored != survey.classes:
        raise DataError(f"{path} holds {len(stored)} classes that differ from the {len(survey.classes)} of "
                        f"{survey.root}; models trained with it would disagree with new ones: delete it to "
                        "start afresh")
    return stored


def load_classes(data_dir) -> list[str]:
    """The stored class column order of a data directory."""
    path = derived_dir(data_dir) / "classes.json"
    if not path.is_file():
        raise DataError(f"{path}: no stored label encoder for {data_dir}; it is written when "
                        "training starts (rightwhale.io.data_dirs.save_classes)")
    try:
        return list(json.loads(read_text(path))["classes"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path}: malformed label encoder ({e}); delete it to rebuild") from e


def source_survey(run_dir) -> Path:
    """The survey a run's images come from (through the crop folder's source.json)."""
    return source_of(json.loads((Path(run_dir) / "config.json").read_text())["data_dir"])

