"""The files of a data directory in the Kaggle layout (DESIGN.md section 2): train.csv, sample_submission.csv
and the Sloth JSON annotations, each parsed and validated.

Real survey data is messy: annotations for photos a folder does not hold, repeated rows. Each skipped item
becomes a `Problem` naming file and line, so a batch job can finish and then say what it left out
(`report_problems`). Fatal, naming file and line: a file that is not UTF-8, a wrong CSV header, JSON that
does not parse.
"""
import csv
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rightwhale.core.errors import DataError


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


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from e


def read_csv(path: Path, expected_header, problems) -> tuple[list, list[tuple[int, list]]]:
    """Header and (line, fields) rows. Each line is parsed alone (Kaggle's CSVs quote nothing across
    lines), so a malformed or wrong-width row becomes a problem and the rows after it still load."""
    lines = [line.removesuffix("\r") for line in read_text(path).split("\n")]

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
    text, decoder = read_text(path), json.JSONDecoder()

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


class Listing(set):
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


def read_labels(path: Path, present: set[str], problems) -> dict[str, str]:
    """Image -> whale rows; repeats keep the first, contradictions drop the image."""
    _, rows = read_csv(path, ("Image", "whaleID"), problems)
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


def read_submission_names(path: Path, present: set[str], problems) -> tuple[list[str], list[str], list[str]]:
    """Class columns, usable test image names, and every row a submission needs, of sample_submission.csv."""
    header, rows = read_csv(path, None, problems)
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
