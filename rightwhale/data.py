"""Reading and validating a data directory in the Kaggle layout (DESIGN.md section 2).

Real survey data is messy: annotation files cover images a folder does not
hold, rows repeat, photos go missing or arrive truncated. `load_survey` keeps
every usable item, skips the rest, and records each skip as a `Problem` naming
the file and line, so a batch job can finish and then say what it left out
(`report_problems`). Only a missing or unparseable train.csv, or nothing
usable at all, is fatal.
"""
from __future__ import annotations

import csv
import hashlib
import importlib
import io
import json
import math
import os
import re
import stat
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from rightwhale.atomic import write_json

PROJECT_ANNOTATIONS = Path(__file__).resolve().parents[1] / "annotations"
KAGGLE_URL = "https://www.kaggle.com/c/noaa-right-whale-recognition/data"
DEFAULT_DATA_DIR = "data/synthetic-survey"
WHERE_TO_GET_DATA = (f"download the Kaggle data from {KAGGLE_URL} (train.csv, imgs/, "
                     "sample_submission.csv), or omit --data-dir to use the embedded synthetic "
                     f"survey (generated in ./{DEFAULT_DATA_DIR} on first use)")


class DataError(Exception):
    """Input data that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class Problem:
    """One skipped item: where it is, and why it was skipped."""
    path: str
    row: int | None          # line in the file (CSV row or start of the JSON entry)
    message: str
    kind: str = ""           # groups problems in report_problems; defaults to the message

    def __str__(self) -> str:
        where = self.path if self.row is None else f"{self.path}:{self.row}"
        return f"{where}: {self.message}"


@dataclass
class Survey:
    """Everything usable in one data directory; image names are keys into imgs/."""
    root: Path
    train: dict[str, str]                  # image -> whale id, train.csv order
    test: list[str]                        # sample_submission.csv order
    classes: list[str]                     # the submission's column order
    bonnet: dict[str, np.ndarray] = field(default_factory=dict)    # image -> [x, y]
    blowhead: dict[str, np.ndarray] = field(default_factory=dict)  # image -> [x, y]
    boxes: dict[str, np.ndarray] = field(default_factory=dict)     # image -> [x, y, w, h]
    test_labels: dict[str, str] = field(default_factory=dict)     # evaluation only
    pattern_types: dict[str, int] = field(default_factory=dict)   # whale -> type
    problems: list[Problem] = field(default_factory=list)

    def image_path(self, name: str) -> Path:
        return self.root / "imgs" / name

    @cached_property
    def _class_index(self) -> dict[str, int]:
        return {whale: i for i, whale in enumerate(self.classes)}

    def label(self, name: str) -> int:
        """Class index of an image (train.csv, or test_labels.csv for a test image)."""
        whale = self.train.get(name) or self.test_labels.get(name)
        if whale not in self._class_index:
            raise DataError(f"{self.root}: image {name!r} has no label among the classes")
        return self._class_index[whale]

    def labels_array(self, names) -> np.ndarray:
        return np.array([self.label(n) for n in names], dtype=np.int32)

    def points(self, name: str) -> np.ndarray | None:
        """[[bonnet x, y], [blowhead x, y]] in photo pixels, or None if not annotated."""
        if name in self.bonnet and name in self.blowhead:
            return np.stack([self.bonnet[name], self.blowhead[name]])
        return None


# --- problem reporting ---------------------------------------------------------

def summarize_problems(problems, limit: int = 10) -> str:
    """Count per kind and the first `limit` of each, one per line."""
    groups: dict[str, list[Problem]] = defaultdict(list)
    for p in problems:
        groups[p.kind or p.message].append(p)
    lines = [f"{len(problems)} data problem(s); the items were skipped:"]
    for kind, items in groups.items():
        lines.append(f"  {len(items)} x {kind}")
        lines += [f"    {p}" for p in items[:limit]]
        if len(items) > limit:
            lines.append(f"    ... and {len(items) - limit} more")
    return "\n".join(lines)


def report_problems(problems, out=None, limit: int = 10) -> None:
    """Print a grouped summary (nothing when there are no problems); `out` defaults to stderr."""
    if problems:
        print(summarize_problems(problems, limit), file=out or sys.stderr)


# --- file readers -------------------------------------------------------------

def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from e


def _read_csv(path: Path, expected_header, problems) -> tuple[list, list[tuple[int, list]]]:
    """Header and (line, fields) rows; rows of the wrong width become problems."""
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), strict=True)
    try:
        header = [h.strip() for h in next(reader, [])]
        if expected_header is not None and header != list(expected_header):
            raise DataError(f"{path}:1: header must be {','.join(expected_header)!r}, "
                            f"got {','.join(header)!r}")
        rows = []
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(header):
                problems.append(Problem(str(path), reader.line_num, f"expected {len(header)} "
                                        f"fields, got {len(fields)}", "malformed row"))
                continue
            rows.append((reader.line_num, [f.strip() for f in fields]))
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({e})") from e
    return header, rows


_WS = re.compile(r"[ \t\n\r]*")


def _read_json_list(path: Path) -> list[tuple[int, object]]:
    """The items of a top-level JSON list, each with the line it starts on."""
    text, decoder = _read_text(path), json.JSONDecoder()

    def fail(pos, what):
        raise DataError(f"{path}:{text.count(chr(10), 0, pos) + 1}: malformed JSON ({what}); "
                        "expected a Sloth list of image entries")

    i = _WS.match(text).end()
    if text[i:i + 1] != "[":
        fail(i, "the file does not start with '['")
    items, line, counted = [], 1, 0
    i = _WS.match(text, i + 1).end()
    while text[i:i + 1] != "]":
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            fail(e.pos, e.msg)
        line, counted = line + text.count("\n", counted, i), i
        items.append((line, obj))
        i = _WS.match(text, end).end()
        if text[i:i + 1] == ",":
            i = _WS.match(text, i + 1).end()
        elif text[i:i + 1] != "]":
            fail(i, "expected ',' or ']'")
    if text[i + 1:].strip():
        fail(i + 1, "extra data after the list")
    return items


def unsafe_name_reason(name: str) -> str | None:
    """Why an image name could reach outside imgs/, or None for a plain file name."""
    if not name:
        return "empty file name"
    if os.path.isabs(name) or name.startswith(("/", "\\")):
        return "absolute path"
    if name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        return "not a plain file name"
    return None


def _check_name(path: Path, line: int, name: str, present: set[str], problems) -> bool:
    reason = unsafe_name_reason(name)
    if reason:
        problems.append(Problem(str(path), line, f"file name {name!r} tries to leave the data "
                                f"directory ({reason})", "unsafe file name"))
        return False
    if name not in present:
        problems.append(Problem(str(path), line, f"{name} is listed but imgs/{name} does not "
                                "exist", "missing image"))
        return False
    return True


def _read_labels(path: Path, present: set[str], problems) -> dict[str, str]:
    """Image -> whale rows; repeats keep the first, contradictions drop the image."""
    _, rows = _read_csv(path, ("Image", "whaleID"), problems)
    seen: dict[str, list[tuple[int, str]]] = {}
    for line, (name, whale) in rows:
        if not whale:
            problems.append(Problem(str(path), line, f"{name}: empty whaleID", "bad value"))
        elif name in seen or _check_name(path, line, name, present, problems):
            seen.setdefault(name, []).append((line, whale))
    labels = {}
    for name, entries in seen.items():
        whales = {w for _, w in entries}
        if len(whales) > 1:
            where = ", ".join(f"{w} on line {ln}" for ln, w in entries)
            problems.append(Problem(str(path), entries[0][0], f"{name} is labelled {where}; "
                                    "dropped it", "conflicting labels"))
            continue
        labels[name] = entries[0][1]
        for ln, _ in entries[1:]:
            problems.append(Problem(str(path), ln, f"{name} repeats line {entries[0][0]}; "
                                    "kept the first", "duplicate row"))
    return labels


def _read_submission(path: Path, present: set[str], problems) -> tuple[list[str], list[str]]:
    """Class columns and test image names of sample_submission.csv."""
    header, rows = _read_csv(path, None, problems)
    if len(header) < 2 or header[0] != "Image":
        raise DataError(f"{path}:1: header must be 'Image' followed by one column per whale")
    classes = header[1:]
    if len(set(classes)) != len(classes):
        repeated = sorted({c for c in classes if classes.count(c) > 1})
        raise DataError(f"{path}:1: whale columns repeated: {', '.join(repeated)}")
    test, first_line = [], {}
    for line, fields in rows:
        name = fields[0]
        if name in first_line:
            problems.append(Problem(str(path), line, f"{name} repeats line {first_line[name]}; "
                                    "kept the first", "duplicate row"))
        elif _check_name(path, line, name, present, problems):
            first_line[name] = line
            test.append(name)
    return classes, test


def read_sloth(path: Path, cls: str, keys, present: set[str], problems) -> dict:
    """Sloth JSON: image -> (line, values of `keys`) for entries with one `cls` annotation."""
    found = {}
    for line, entry in _read_json_list(path):
        def skip(message, kind):
            problems.append(Problem(str(path), line, message, kind))
        if not (isinstance(entry, dict) and isinstance(entry.get("filename"), str)
                and isinstance(entry.get("annotations"), list)):
            skip("entry needs a 'filename' string and an 'annotations' list", "malformed entry")
            continue
        name = entry["filename"]
        reason = unsafe_name_reason(name)
        if reason:
            skip(f"file name {name!r} tries to leave the data directory ({reason})",
                 "unsafe file name")
            continue
        if name not in present:
            skip(f"{name}: annotation for an image not in this directory",
                 "annotation for an image not in this directory")
            continue
        if name in found:
            skip(f"{name} repeats the entry on line {found[name][0]}; kept the first",
                 "duplicate row")
            continue
        marks = [a for a in entry["annotations"] if isinstance(a, dict) and a.get("class") == cls]
        if len(marks) != 1:
            skip(f"{name}: expected one {cls!r} annotation, found {len(marks)}",
                 "malformed entry")
            continue
        values = [marks[0].get(k) for k in keys]
        bad = [f"{k}={v!r}" for k, v in zip(keys, values)
               if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)]
        if bad:
            skip(f"{name}: {', '.join(bad)} is not a finite number", "bad value")
        elif cls == "rect" and min(values[2:]) <= 0:
            skip(f"{name}: box width and height must be positive, got {values[2:]}", "bad value")
        else:
            found[name] = (line, np.asarray(values, dtype=np.float64))
    return found


def sloth_points(points: dict) -> list:
    """Sloth JSON (the points1.json format) of image -> (x, y)."""
    return [{"filename": name, "class": "image",
             "annotations": [{"class": "point", "x": float(x), "y": float(y)}]}
            for name, (x, y) in points.items()]


def sloth_boxes(boxes: dict) -> list:
    """Sloth JSON (the head-box format) of image -> (x, y, w, h)."""
    return [{"filename": name, "class": "image",
             "annotations": [{"class": "rect", "x": float(x), "y": float(y), "width": float(w), "height": float(h)}]}
            for name, (x, y, w, h) in boxes.items()]


def annotation_file(root: Path, filename: str) -> Path | None:
    """The data directory's own annotation file, else the project's annotations/ copy."""
    for folder in (Path(root), PROJECT_ANNOTATIONS):
        if (folder / filename).is_file():
            return folder / filename
    return None


def _outside(values: np.ndarray, w: int, h: int) -> bool:
    """Points: pixel centres at integers, so the photo spans [-0.5, size - 0.5].
    Boxes cover pixels x .. x + width - 1, so a whole-photo box is (0, 0, w, h)."""
    if values.size == 2:
        x, y = values
        return not (-0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5)
    x, y, bw, bh = values
    return not (-0.5 <= x and -0.5 <= y and x + bw <= w + 0.5 and y + bh <= h + 0.5)


# --- the survey ---------------------------------------------------------------

def _require_layout(data_dir) -> Path:
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: data directory does not exist; {WHERE_TO_GET_DATA}")
    if not (root / "train.csv").is_file():
        raise DataError(f"{root}: no train.csv, so this is not a Kaggle-layout data directory; "
                        f"{WHERE_TO_GET_DATA}")
    if not (root / "imgs").is_dir():
        raise DataError(f"{root}: no imgs/ folder holding the photos; {WHERE_TO_GET_DATA}")
    return root


class _PhotoSizes:
    """(w, h) per photo from its header, read at most once; an unreadable photo
    is dropped from the survey (None) together with its annotations."""

    def __init__(self, survey: Survey, full_check: bool):
        from rightwhale.images import BadImage, check_image, photo_size  # images imports us
        self.survey, self.sizes, self.bad = survey, {}, BadImage
        self.read = check_image if full_check else photo_size

    def __call__(self, name: str) -> tuple[int, int] | None:
        if name not in self.sizes:
            try:
                self.sizes[name] = self.read(self.survey.image_path(name))
            except self.bad as e:
                self.sizes[name] = None
                self.survey.problems.append(Problem(str(self.survey.image_path(name)), None,
                                                    str(e).split(": ", 1)[-1], "unreadable image"))
                self.survey.train.pop(name, None)
                if name in self.survey.test:
                    self.survey.test.remove(name)
        return self.sizes[name]


ANNOTATION_FILES = (("bonnet", "points1.json", "point", ("x", "y")),
                    ("blowhead", "points2.json", "point", ("x", "y")),
                    ("boxes", "head_boxes.json", "rect", ("x", "y", "width", "height")))


def _attach_annotations(survey: Survey, present: set[str], photo_size: _PhotoSizes) -> None:
    for attr, filename, cls, keys in ANNOTATION_FILES:
        path = annotation_file(survey.root, filename)
        found = read_sloth(path, cls, keys, present, survey.problems) if path else {}
        kept = getattr(survey, attr)
        for name, (line, values) in found.items():
            size = photo_size(name)
            if size is not None and _outside(values, *size):
                what = "point" if cls == "point" else "box"
                survey.problems.append(Problem(str(path), line, f"{name}: {what} {values.tolist()} "
                                               f"lies outside the {size[0]}x{size[1]} photo",
                                               f"{what} outside the photo"))
            elif size is not None:
                kept[name] = values


def _attach_extras(survey: Survey, present: set[str]) -> None:
    """The synthetic survey's evaluation labels and pattern types."""
    root, problems = survey.root, survey.problems
    if (root / "test_labels.csv").is_file():
        labels, test = _read_labels(root / "test_labels.csv", present, problems), set(survey.test)
        survey.test_labels = {n: w for n, w in labels.items() if n in test}
        for name in labels.keys() - test:
            problems.append(Problem(str(root / "test_labels.csv"), None, f"{name} is not a test "
                                    "image of sample_submission.csv", "unknown test image"))
    if (root / "whale_types.csv").is_file():
        _, rows = _read_csv(root / "whale_types.csv", ("whaleID", "pattern_type"), problems)
        for line, (whale, value) in rows:
            try:
                survey.pattern_types[whale] = int(value)
            except ValueError:
                problems.append(Problem(str(root / "whale_types.csv"), line, f"{whale}: "
                                        f"pattern_type {value!r} is not an integer", "bad value"))


def load_survey(data_dir, check_images: bool = False) -> Survey:
    """Read and validate a Kaggle-layout directory (see the module docstring).

    check_images also reads every photo's header and JPEG trailer (cheap);
    otherwise only annotated photos are opened, to check points against their size.
    """
    root = _require_layout(data_dir)
    present = set(os.listdir(root / "imgs"))
    problems: list[Problem] = []
    classes, test = None, []
    if (root / "sample_submission.csv").is_file():
        classes, test = _read_submission(root / "sample_submission.csv", present, problems)
    train = _read_labels(root / "train.csv", present, problems)
    if classes is None:
        classes = sorted(set(train.values()))
    known = set(classes)
    for name, whale in list(train.items()):
        if whale not in known:
            problems.append(Problem(str(root / "train.csv"), None, f"{name}: whale {whale} is "
                                    "not a column of sample_submission.csv", "unknown whale"))
            del train[name]
    survey = Survey(root=root, train=train, test=test, classes=classes, problems=problems)
    photo_size = _PhotoSizes(survey, full_check=check_images)
    if check_images:
        for name in [*train, *test]:
            photo_size(name)
    _attach_annotations(survey, present, photo_size)
    _attach_extras(survey, present)
    if not train:
        raise DataError(f"{root / 'train.csv'}: no usable training images.\n"
                        + summarize_problems(problems, limit=3))
    return survey


# --- where derived files live --------------------------------------------------

def _writable(folder: Path) -> bool:
    # Mode bits too: root passes os.access on folders marked read-only (../shared).
    return os.access(folder, os.W_OK) and bool(stat.S_IMODE(folder.stat().st_mode) & 0o222)


def derived_dir(data_dir) -> Path:
    """Where splits, label encoders and caches of a data directory are written."""
    root = Path(data_dir).resolve()
    if _writable(root):
        return root / ".rightwhale"
    # absolute, so every working directory finds the same split and caches
    home = Path(os.environ.get("RIGHTWHALE_HOME", Path.home() / ".cache" / "rightwhale"))
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:8]
    return home / "derived" / f"{root.name}-{digest}"


def default_data_dir() -> Path:
    """./data/synthetic-survey (or $RIGHTWHALE_DATA), generated on first use."""
    path = Path(os.environ.get("RIGHTWHALE_DATA", DEFAULT_DATA_DIR))
    if not path.exists() or not any(path.iterdir()):
        synth = importlib.import_module("rightwhale.synth")  # only needed once; tests may fake it
        print(f"generating the embedded synthetic survey in {path} (first use)", file=sys.stderr)
        synth.generate_survey(path)
    return path


def resolve_data_dir(arg: str | None) -> Path:
    """A --data-dir argument: None means the embedded survey; a missing folder is an error."""
    if arg is None:
        return default_data_dir()
    path = Path(arg)
    if not path.is_dir():
        raise DataError(f"{path}: data directory does not exist; {WHERE_TO_GET_DATA}")
    return path


# --- label encoder ------------------------------------------------------------

def save_classes(survey: Survey) -> list[str]:
    """Store the class column order once; refuse to silently change it later."""
    path = derived_dir(survey.root) / "classes.json"
    if path.is_file():
        stored = load_classes(survey.root)
        if stored != survey.classes:
            raise DataError(f"{path} holds {len(stored)} classes that differ from the "
                            f"{len(survey.classes)} of {survey.root}; models trained with it "
                            "would disagree with new ones: delete it to start afresh")
        return stored
    write_json(path, {"classes": survey.classes})
    return survey.classes


def load_classes(data_dir) -> list[str]:
    """The stored class column order of a data directory."""
    path = derived_dir(data_dir) / "classes.json"
    if not path.is_file():
        raise DataError(f"{path}: no stored label encoder for {data_dir}; it is written when "
                        "training starts (rightwhale.data.save_classes)")
    try:
        classes = json.loads(_read_text(path))["classes"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path}: malformed label encoder ({e}); delete it to rebuild") from e
    return list(classes)
