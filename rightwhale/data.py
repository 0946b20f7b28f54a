"""Reading and validating a data directory in the Kaggle layout (DESIGN.md section 2).

Real survey data is messy: annotations for photos a folder does not hold, repeated rows,
truncated photos. `load_survey` keeps every usable item and records each skipped one as a
`Problem` naming file and line, so a batch job can finish and then say what it left out
(`report_problems`). Fatal, naming file and line: a missing train.csv, a file that is not UTF-8, a
wrong CSV header, JSON that does not parse, or nothing usable.
"""
import csv
import functools
import hashlib
import importlib
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rightwhale.atomic import write_json
from rightwhale.errors import DataError

PROJECT_ANNOTATIONS = Path(__file__).resolve().parents[1] / "annotations"
DEFAULT_DATA_DIR = "data/synthetic-survey"
WHERE_TO_GET_DATA = ("download the Kaggle data from https://www.kaggle.com/c/noaa-right-whale-recognition/data "
                     "(train.csv, imgs/, sample_submission.csv), or omit --data-dir to use the embedded synthetic "
                     f"survey (generated in ./{DEFAULT_DATA_DIR} on first use)")
ANNOTATION_FILES = (("bonnet", "points1.json", "point", ("x", "y")),
                    ("blowhead", "points2.json", "point", ("x", "y")),
                    ("boxes", "head_boxes.json", "rect", ("x", "y", "width", "height")))


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
    test: list[str]                        # sample_submission.csv order, usable images only
    classes: list[str]                     # the submission's column order
    bonnet: dict[str, np.ndarray] = field(default_factory=dict)    # image -> [x, y]
    blowhead: dict[str, np.ndarray] = field(default_factory=dict)  # image -> [x, y]
    boxes: dict[str, np.ndarray] = field(default_factory=dict)     # image -> [x, y, w, h]
    test_labels: dict[str, str] = field(default_factory=dict)     # evaluation only
    pattern_types: dict[str, int] = field(default_factory=dict)   # whale -> type
    problems: list[Problem] = field(default_factory=list)
    # every row a submission must have (sample_submission.csv order), also images that are missing or unreadable
    submission_rows: list[str] = field(default_factory=list)

    def image_path(self, name: str) -> Path:
        return self.root / "imgs" / name

    @functools.cached_property
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
        both = name in self.bonnet and name in self.blowhead
        return np.stack([self.bonnet[name], self.blowhead[name]]) if both else None


def summarize_problems(problems, limit: int = 10) -> str:
    """Count per kind and the first `limit` of each, one per line."""
    groups: dict[str, list[Problem]] = {}
    for p in problems:
        groups.setdefault(p.kind or p.message, []).append(p)
    lines = [f"{len(problems)} data problem(s); the items were skipped:"]
    for kind, items in groups.items():
        lines += [f"  {len(items)} x {kind}", *(f"    {p}" for p in items[:limit])]
        if len(items) > limit:
            lines.append(f"    ... and {len(items) - limit} more")
    return "\n".join(lines)


def report_problems(problems, out=None, limit: int = 10) -> None:
    """Print a grouped summary (nothing when there are no problems); `out` defaults to stderr."""
    if problems:
        print(summarize_problems(problems, limit), file=out or sys.stderr)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from e


def _read_csv(path: Path, expected_header, problems) -> tuple[list, list[tuple[int, list]]]:
    """Header and (line, fields) rows. Each line is parsed alone (Kaggle's CSVs quote nothing across
    lines), so a malformed or wrong-width row becomes a problem and the rows after it still load."""
    lines = [line.removesuffix("\r") for line in _read_text(path).split("\n")]

    def parse(number: int) -> list[str]:
        return [f.strip() for f in next(csv.reader([lines[number - 1]], strict=True), [])]

    try:
        header = parse(1) if lines else []
    except csv.Error as e:
        raise DataError(f"{path}:1: malformed CSV header ({e})") from e
    if expected_header is not None and header != list(expected_header):
        raise DataError(f"{path}:1: header must be {','.join(expected_header)!r}, got {','.join(header)!r}")
    rows = []
    for number in range(2, len(lines) + 1):
        if not lines[number - 1]:                       # blank lines are skipped
            continue
        try:
            fields = parse(number)
        except csv.Error as e:
            problems.append(Problem(str(path), number, f"malformed CSV ({e})", "malformed row"))
            continue
        if len(fields) == len(header):
            rows.append((number, fields))
        else:
            problems.append(Problem(str(path), number, f"expected {len(header)} fields, got {len(fields)}",
                                    "malformed row"))
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


class _Listing(set):
    """The file names in imgs/, knowing which are symbolic links that lead out of the data directory."""

    def __init__(self, imgs: Path):
        super().__init__(os.listdir(imgs))
        root = imgs.parent.resolve()
        self.escaping = {n: (imgs / n).resolve() for n in self if (imgs / n).is_symlink()
                         and not (imgs / n).resolve().is_relative_to(root)}


def _name_problem(name: str, present: set[str], missing=None) -> tuple[str, str] | None:
    """(message, kind) for an image name that could leave imgs/ or is not in it, else None."""
    escaping = getattr(present, "escaping", {})
    if name in escaping:
        return (f"imgs/{name} is a link to {escaping[name]}, outside the data directory: not followed (copy "
                "the file in)", "link outside the data directory")
    if not name:
        reason = "empty file name"
    elif os.path.isabs(name) or name.startswith(("/", "\\")):
        reason = "absolute path"
    elif name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        reason = "not a plain file name"
    elif name not in present:
        return missing or (f"{name} is listed but imgs/{name} does not exist", "missing image")
    else:
        return None
    return f"file name {name!r} tries to leave the data directory ({reason})", "unsafe file name"


def _read_labels(path: Path, present: set[str], problems) -> dict[str, str]:
    """Image -> whale rows; repeats keep the first, contradictions drop the image."""
    _, rows = _read_csv(path, ("Image", "whaleID"), problems)
    seen: dict[str, list[tuple[int, str]]] = {}
    for line, (name, whale) in rows:
        problem = ((f"{name}: empty whaleID", "bad value") if not whale
                   else None if name in seen else _name_problem(name, present))
        if problem:
            problems.append(Problem(str(path), line, *problem))
        else:
            seen.setdefault(name, []).append((line, whale))
    labels = {}
    for name, entries in seen.items():
        if len({w for _, w in entries}) > 1:
            where = ", ".join(f"{w} on line {ln}" for ln, w in entries)
            problems.append(Problem(str(path), entries[0][0], f"{name} is labelled {where}; dropped it",
                                    "conflicting labels"))
        else:
            labels[name] = entries[0][1]
            problems += [Problem(str(path), ln, f"{name} repeats line {entries[0][0]}; kept the first",
                                 "duplicate row") for ln, _ in entries[1:]]
    return labels


def _read_submission(path: Path, present: set[str], problems) -> tuple[list[str], list[str], list[str]]:
    """Class columns, usable test image names, and every row a submission needs, of sample_submission.csv."""
    header, rows = _read_csv(path, None, problems)
    if len(header) < 2 or header[0] != "Image":
        raise DataError(f"{path}:1: header must be 'Image' followed by one column per whale")
    classes = header[1:]
    if len(set(classes)) != len(classes):
        repeated = sorted({c for c in classes if classes.count(c) > 1})
        raise DataError(f"{path}:1: whale columns repeated: {', '.join(repeated)}")
    usable, first_line = [], {}       # first_line: every row a submission needs, also of missing photos
    for line, (name, *_) in rows:
        problem = ((f"{name} repeats line {first_line[name]}; kept the first", "duplicate row")
                   if name in first_line else _name_problem(name, present))
        if problem:
            problems.append(Problem(str(path), line, *problem))
        else:
            usable.append(name)
        if name not in first_line and (not problem or problem[1] == "missing image"):
            first_line[name] = line
    return classes, usable, list(first_line)


def read_sloth(path: Path, cls: str, keys, present: set[str], problems) -> dict:
    """Sloth JSON: image -> (line, values of `keys`) for entries with one `cls` annotation."""
    found = {}
    for line, entry in _read_json_list(path):
        problem = _sloth_problem(entry, cls, keys, present, found)
        if problem:
            problems.append(Problem(str(path), line, *problem))
        else:
            mark = next(a for a in entry["annotations"] if isinstance(a, dict) and a.get("class") == cls)
            found[entry["filename"]] = (line, np.asarray([mark[k] for k in keys], dtype=np.float64))
    return found


def _sloth_problem(entry, cls: str, keys, present: set[str], found: dict) -> tuple[str, str] | None:
    """(message, kind) for a Sloth entry that cannot be used, else None."""
    if not (isinstance(entry, dict) and isinstance(entry.get("filename"), str)
            and isinstance(entry.get("annotations"), list)):
        return "entry needs a 'filename' string and an 'annotations' list", "malformed entry"
    name, absent = entry["filename"], "annotation for an image not in this directory"
    problem = _name_problem(name, present, (f"{name}: {absent}", absent))
    if problem:
        return problem
    if name in found:
        return f"{name} repeats the entry on line {found[name][0]}; kept the first", "duplicate row"
    marks = [a for a in entry["annotations"] if isinstance(a, dict) and a.get("class") == cls]
    if len(marks) != 1:
        return f"{name}: expected one {cls!r} annotation, found {len(marks)}", "malformed entry"
    values = [marks[0].get(k) for k in keys]
    bad = [f"{k}={v!r}" for k, v in zip(keys, values)
           if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)]
    if bad:
        return f"{name}: {', '.join(bad)} is not a finite number", "bad value"
    if cls == "rect" and min(values[2:]) <= 0:
        return f"{name}: box width and height must be positive, got {values[2:]}", "bad value"
    return None


def sloth_points(points: dict) -> list:
    """Sloth JSON (the points1.json format) of image -> (x, y)."""
    return [{"filename": name, "class": "image", "annotations": [{"class": "point", "x": float(x), "y": float(y)}]}
            for name, (x, y) in points.items()]


def sloth_boxes(boxes: dict) -> list:
    """Sloth JSON (the head-box format) of image -> (x, y, w, h)."""
    return [{"filename": name, "class": "image",
             "annotations": [{"class": "rect", "x": float(x), "y": float(y), "width": float(w), "height": float(h)}]}
            for name, (x, y, w, h) in boxes.items()]


def _outside(values: np.ndarray, w: int, h: int) -> bool:
    """Points: pixel centres at integers, so the photo spans [-0.5, size - 0.5].
    Boxes cover pixels x .. x + width - 1, so a whole-photo box is (0, 0, w, h)."""
    x, y = values[:2]
    if values.size == 2:
        return not (-0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5)
    return not (-0.5 <= x and -0.5 <= y and x + values[2] <= w + 0.5 and y + values[3] <= h + 0.5)


def _attach_annotations(survey: Survey, present: set[str], check_images: bool) -> None:
    """Keep the points and boxes that lie inside their photo. Sizes come from photo headers, each read once
    (with check_images every photo's, JPEG trailer included); an unreadable photo leaves the survey."""
    from rightwhale.images import BadImage, check_image, photo_size  # images imports this module

    @functools.cache
    def size_of(name: str) -> tuple[int, int] | None:
        try:
            return (check_image if check_images else photo_size)(survey.image_path(name))
        except BadImage as e:
            survey.problems.append(Problem(str(survey.image_path(name)), None, str(e).split(": ", 1)[-1],
                                           "unreadable image"))
            survey.train.pop(name, None)
            survey.test[:] = [n for n in survey.test if n != name]
            return None

    if check_images:
        for name in [*survey.train, *survey.test]:
            size_of(name)
    # the data directory's own annotation files, else (for a Kaggle download of photos: a sample submission,
    # no source.json of crops cut by rightwhale) the project's annotations/, which ship the real points
    # of the Kaggle training photos: a folder of crops with Kaggle-like names must not pick those up
    kaggle = (survey.root / "sample_submission.csv").is_file() and not (survey.root / "source.json").is_file()
    folders = (survey.root, PROJECT_ANNOTATIONS) if kaggle else (survey.root,)
    for attr, filename, cls, keys in ANNOTATION_FILES:
        path = next((d / filename for d in folders if (d / filename).is_file()), None)
        what = "point" if cls == "point" else "box"
        for name, (line, values) in (read_sloth(path, cls, keys, present, survey.problems) if path else {}).items():
            size = size_of(name)
            if size is not None and _outside(values, *size):
                survey.problems.append(Problem(str(path), line, f"{name}: {what} {values.tolist()} lies outside "
                                               f"the {size[0]}x{size[1]} photo", f"{what} outside the photo"))
            elif size is not None:
                getattr(survey, attr)[name] = values


def _attach_extras(survey: Survey, present: set[str]) -> None:
    """The synthetic survey's evaluation labels and pattern types."""
    root, problems = survey.root, survey.problems
    if (root / "test_labels.csv").is_file():
        labels, test = _read_labels(root / "test_labels.csv", present, problems), set(survey.test)
        survey.test_labels = {n: w for n, w in labels.items() if n in test}
        problems += [Problem(str(root / "test_labels.csv"), None, f"{name} is not a test image of "
                             "sample_submission.csv", "unknown test image") for name in labels.keys() - test]
    if (root / "whale_types.csv").is_file():
        _, rows = _read_csv(root / "whale_types.csv", ("whaleID", "pattern_type"), problems)
        for line, (whale, value) in rows:
            try:
                survey.pattern_types[whale] = int(value)
            except ValueError:
                problems.append(Problem(str(root / "whale_types.csv"), line, f"{whale}: "
                                        f"pattern_type {value!r} is not an integer", "bad value"))


def load_survey(data_dir, check_images: bool = False) -> Survey:
    """Read and validate a Kaggle-layout directory (see the module docstring). check_images also
    checks every photo's header and JPEG trailer (cheap); otherwise only annotated photos are opened."""
    root = Path(data_dir)
    missing = ("data directory does not exist" if not root.is_dir() else
               "no train.csv, so this is not a Kaggle-layout data directory" if not (root / "train.csv").is_file()
               else "no imgs/ folder holding the photos" if not (root / "imgs").is_dir() else None)
    if missing:
        raise DataError(f"{root}: {missing}; {WHERE_TO_GET_DATA}")
    present = _Listing(root / "imgs")
    problems: list[Problem] = []
    classes, test, submission_rows = None, [], []
    if (root / "sample_submission.csv").is_file():
        classes, test, submission_rows = _read_submission(root / "sample_submission.csv", present, problems)
    train = _read_labels(root / "train.csv", present, problems)
    known = set(classes or train.values())
    for name, whale in list(train.items()):
        if whale not in known:
            problems.append(Problem(str(root / "train.csv"), None, f"{name}: whale {whale} is "
                                    "not a column of sample_submission.csv", "unknown whale"))
            del train[name]
    survey = Survey(root=root, train=train, test=test, classes=classes or sorted(known), problems=problems,
                    submission_rows=submission_rows)
    _attach_annotations(survey, present, check_images)
    _attach_extras(survey, present)
    if not train:
        raise DataError(f"{root / 'train.csv'}: no usable training images"
                        + (".\n" + summarize_problems(problems, limit=3) if problems else " (it lists none)"))
    return survey


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
        synth = importlib.import_module("rightwhale.synth")  # only needed once; tests may fake it
        print(f"generating the embedded synthetic survey in {path} (first use)", file=sys.stderr)
        synth.generate_survey(path, progress=progress)
    return path


def save_classes(survey: Survey) -> list[str]:
    """Store the class column order once; refuse to silently change it later."""
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
                        "training starts (rightwhale.data.save_classes)")
    try:
        return list(json.loads(_read_text(path))["classes"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path}: malformed label encoder ({e}); delete it to rebuild") from e
