"""python -m rightwhale catalogue add DECISIONS.csv | add-crops DIR: grow the catalogue without retraining.

The catalogue is a match run's gallery (rightwhale/scorers/matching.py): adding a crop
computes its features only, the gallery's own are kept, and identify sees it
at once. Crops added this way are copied into RUN/catalogue/imgs/ and listed
in RUN/catalogue/train.csv (the Kaggle layout), so the run folder carries its
whole catalogue. Whales new to the run get columns after the trained ones;
CNN runs never saw them, and identify says so (it then ranks by the matcher
alone).

- `add DECISIONS.csv`: the researcher's decisions saved from identify's
  review page (columns photo, crop, decision, whale, catalogue): `known`
  adds the crop to the accepted whale, `new` to a new whale of the name
  given, `unsure` adds nothing.
- `add-crops DIR`: every labelled crop of a Kaggle-layout folder (imgs/ +
  train.csv) that the gallery lacks.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from pathlib import Path

from tqdm import tqdm

from rightwhale.core import atomic, runlock
from rightwhale.core.errors import DataError
from rightwhale.io.formats import report_problems
from rightwhale.io.images import BadImage, read_image
from rightwhale.io.survey import load_survey
from rightwhale.scorers.match_run import GALLERY, MatchRun, is_match_run

DECISIONS = ("photo", "crop", "decision", "whale", "catalogue")
ADDING = {"known", "new"}
CHOICES = ADDING | {"unsure"}


def name_problem(whale: str) -> str | None:
    """Why a whale name cannot be used, or None: it names files and CSV rows."""
    if not whale:
        return "no whale name"
    if any(c in whale for c in '/\\\0') or whale in (".", "..") or whale != whale.strip():
        return f"whale name {whale!r} holds a path separator or surrounding spaces"
    return None


def write_catalogue_csv(run: MatchRun, gallery) -> None:
    """RUN/catalogue/train.csv from the gallery itself (its crops with a file in RUN/catalogue/imgs), so it
    is complete however an earlier add ended."""
    atomic.write_csv(run.catalogue_dir / "train.csv", ("Image", "whaleID"),
                     [(n, w) for n, w in zip(gallery.names, gallery.whales) if (run.catalogue_dir / "imgs" / n).is_file()])


def grow(run_dir, items, progress: bool = True) -> dict:
    """Add (image path, whale, gallery name, kind) items to a match run's catalogue, kind "known" (a whale of
    the catalogue), "new" (not one yet) or "labelled" (either: a labelled folder). An unreadable
    or featureless crop, a bad whale name, a "new" whale named like a known one or a "known" whale the
    catalogue lacks is skipped and reported; a crop already in the gallery (a rerun) is counted; the rest
    are added."""
    run = MatchRun(run_dir)
    problems, present, known = [], 0, set(run.classes)
    names, whales, features = [], [], []
    for source, whale, name, kind in tqdm(items, disable=not progress, desc="adding crops", unit="crop"):
        bad = name_problem(whale) or (
            f"the new whale's name {whale} is a whale of the catalogue already; give it another name (or decide "
            "known)" if kind == "new" and whale in known else
            f"{whale} is no whale of the catalogue; decide new to add it as one" if kind == "known"
            and whale not in known else None)
        if bad:
            problems.append(f"{source}: skipped: {bad}")
            continue
        if name in run.trained_on or name in names:      # added before (a rerun), or the run's own crop
            present += 1
            continue
        try:
            image = read_image(source)
        except (BadImage, OSError) as e:
            problems.append(f"{source}: skipped: unreadable ({e})")
            continue
        f = run.features(image)
        if not len(f):
            problems.append(f"{source}: skipped: no SIFT keypoint (blank or featureless crop)")
            continue
        atomic.write_bytes(run.catalogue_dir / "imgs" / name, Path(source).read_bytes())
        names.append(name), whales.append(whale), features.append(f)
    grown = run.gallery.add(names, whales, features)
    if names:
        grown.save(run.run_dir / GALLERY)          # the commit point
    write_catalogue_csv(run, grown)
    for line in problems:
        print(line, file=sys.stderr)
    return {"added": len(names), "already in the catalogue": present, "skipped": len(problems),
            "gallery crops": len(grown), "new whales": sorted(set(whales) - known)}


def decisions_items(path: Path, catalogue=None) -> tuple[Path, list]:
    """The match run and the (crop, whale, gallery name, kind) items of a decisions CSV saved from the review
    page. The gallery name carries a hash of the crop's bytes: two flights' DSC_0001.jpg stay two crops."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = set(DECISIONS[:4]) - set(reader.fieldnames or [])
            if missing:
                raise DataError(f"{path}: not a decisions file (no column {', '.join(sorted(missing))}); save one "
                                "from the review page of `python -m rightwhale identify`")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: unreadable decisions file ({e})") from e
    if not rows:
        raise DataError(f"{path}: no decisions in it (review photos on the page, then save)")
    field = lambda r, k: (r.get(k) or "").strip()        # noqa: E731  (a short row has None)
    runs = {field(r, "catalogue") for r in rows} - {""}
    if catalogue is None and len(runs) != 1:
        raise DataError(f"{path}: name the catalogue with --catalogue (the file names {len(runs)} match runs)")
    items = []
    for line, r in enumerate(rows, 2):           # a bad row is skipped and reported; the others are added
        decision, whale, crop = field(r, "decision"), field(r, "whale"), Path(field(r, "crop"))
        if decision not in CHOICES:
            print(f"{path}, line {line}: skipped: decision {decision!r} is not one of "
                  f"{', '.join(sorted(CHOICES))}", file=sys.stderr)
        elif decision in ADDING and name_problem(whale):
            print(f"{path}, line {line}: skipped: decision {decision}: {name_problem(whale)}", file=sys.stderr)
        elif decision in ADDING:
            try:
                digest = hashlib.sha1(crop.read_bytes()).hexdigest()[:10]
            except OSError as e:
                print(f"{path}, line {line}: skipped: its crop {crop} is unreadable ({e})", file=sys.stderr)
                continue
            items.append((crop, whale, f"{whale}_{digest}_{crop.name}", decision))
    return Path(catalogue or runs.pop()), items


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rightwhale catalogue", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="add the accepted and new whales of a review page's decisions CSV")
    add.add_argument("decisions", type=Path, help="decisions CSV saved from OUT/review.html")
    crops = sub.add_parser("add-crops", help="add the labelled crops of a folder (imgs/ + train.csv)")
    crops.add_argument("crops", type=Path, help="Kaggle-layout folder of head crops")
    for q in (add, crops):
        q.add_argument("--catalogue", help="the match run to grow (default: the one the decisions name; "
                                           "required for add-crops)")
        q.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        if args.command == "add":
            run_dir, items = decisions_items(args.decisions, args.catalogue)
        else:
            if not args.catalogue:
                p.error("add-crops needs --catalogue RUN (a match run folder)")
            run_dir, survey = Path(args.catalogue), load_survey(args.crops)
            report_problems(survey.problems)
            items = [(survey.image_path(n), w, n, "labelled") for n, w in survey.train.items()]
        if not is_match_run(run_dir):
            raise DataError(f"{run_dir}: not a match run (no {GALLERY}); the catalogue is a match run's gallery")
        with runlock.hold(run_dir, "catalogue"):
            result = grow(run_dir, items, not args.no_progress)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for key, value in result.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
