"""`python -m rightwhale crop`: head crops of a whole data directory, written as a new data directory.

Cut the head out of every annotated photo (bonnet pointing right, window 2d x d around 0.4 bonnet + 0.6
blowhead; or a head box with --boxes), with the geometry of geometry/crop.py, and write the crops in the
Kaggle layout: imgs/, train.csv, the points mapped into the crops, source.json naming the survey they came
from.
"""
import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from rightwhale.core.atomic import write_bytes, write_csv, write_json
from rightwhale.core.errors import DataError
from rightwhale.geometry.crop import UnplaceableHead, box_crop_matrix, box_falls_back, head_crop, warp_photo
from rightwhale.geometry.transforms import transform_points
from rightwhale.io.formats import Problem, read_sloth, report_problems, sloth_points
from rightwhale.io.images import BadImage, read_image
from rightwhale.io.survey import load_survey


def _encode(image: np.ndarray, name: str) -> bytes:
    buf = io.BytesIO()
    fmt = "PNG" if name.lower().endswith(".png") else "JPEG"
    Image.fromarray(image).save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def crop_data_dir(data_dir, out, out_w=256, out_h=256, points1=None, points2=None, boxes=None,
                  box_pad=0.0, predicted: bool = False, progress: bool = True) -> dict:
    """Write head crops of every annotated image of `data_dir` as a new data directory `out`.

    OUT/imgs/<name>, the CSVs restricted to the cropped images (whale_types.csv as is), points1/2.json in
    crop pixels, and source.json naming `data_dir`, whose stored split every later stage reuses. points1 /
    points2 (Sloth files) replace the directory's points, e.g. with the aligner's guesses (`predicted`: a
    finite pair that cannot place a head gives the whole photo, as in the original); `boxes` (Sloth rects)
    crops those boxes, grown by `box_pad`. Returns the names `cropped`, the `fallback` ones (whole photo)
    and the skipped `problems`.
    """
    data_dir, out = Path(data_dir), Path(out)
    if out.resolve() == data_dir.resolve():
        raise DataError(f"{out}: the output must be a new directory, not the input data directory")
    survey = load_survey(data_dir)
    problems = list(survey.problems)
    present = set(p.name for p in (data_dir / "imgs").iterdir())

    def read(path, cls, keys):
        found = read_sloth(Path(path), cls, keys, present, problems)
        return {name: values for name, (_, values) in found.items()}

    bonnet = read(points1, "point", ("x", "y")) if points1 else survey.bonnet
    blowhead = read(points2, "point", ("x", "y")) if points2 else survey.blowhead
    box_of = read(boxes, "rect", ("x", "y", "width", "height")) if boxes else None

    new_p1, new_p2, done, fallback = {}, {}, [], []
    for name in tqdm([*survey.train, *survey.test], desc="crops", unit="photo", disable=not progress):
        path = str(survey.image_path(name))
        missing = [what for what, pts in (("bonnet", bonnet), ("blowhead", blowhead)) if name not in pts]
        if box_of is not None and name not in box_of:
            problems.append(Problem(path, None, "no head box", "missing box"))
            continue
        if box_of is None and missing:
            problems.append(Problem(path, None, f"no {' and '.join(missing)} point", "missing points"))
            continue
        try:
            photo = read_image(path)
        except BadImage as e:
            problems.append(Problem(path, None, str(e).split(": ", 1)[-1], "unreadable image"))
            continue
        if box_of is None:
            try:
                crop, mat, whole = head_crop(photo, bonnet[name], blowhead[name], out_w, out_h, predicted)
            except UnplaceableHead as e:
                problems.append(Problem(path, None, str(e), "degenerate points"))
                continue
        else:
            hw = np.array(photo.shape[:2], np.float32)
            mat = box_crop_matrix(box_of[name], hw, out_w, out_h, box_pad)
            crop, whole = warp_photo(photo, mat, out_w, out_h), bool(box_falls_back(box_of[name], hw, box_pad))
        write_bytes(out / "imgs" / name, _encode(crop, name))
        done.append(name)
        if whole:
            fallback.append(name)
        moved = None if missing else np.asarray(transform_points(mat, np.stack([bonnet[name], blowhead[name]])))
        if moved is not None and ((moved >= -0.5) & (moved <= [out_w - 0.5, out_h - 0.5])).all():
            new_p1[name], new_p2[name] = moved      # a predicted point off the crop annotates nothing in it

    kept = set(done)
    write_csv(out / "train.csv", ("Image", "whaleID"), [r for r in survey.train.items() if r[0] in kept])
    for extra in ("sample_submission.csv", "test_labels.csv"):
        if (data_dir / extra).is_file():
            with open(data_dir / extra, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.reader(f))
            test = kept & set(survey.test)
            write_csv(out / extra, rows[0], [r for r in rows[1:] if r and r[0].strip() in test])
    if (data_dir / "whale_types.csv").is_file():
        write_bytes(out / "whale_types.csv", (data_dir / "whale_types.csv").read_bytes())
    write_json(out / "points1.json", sloth_points(new_p1))
    write_json(out / "points2.json", sloth_points(new_p2))
    # Crops are the same photos: a classifier on them must reuse this survey's stored split.
    write_json(out / "source.json", {"survey": str(data_dir.resolve()), "kind": "box" if boxes else "head",
                                     "size": [out_w, out_h]})
    return {"cropped": done, "fallback": fallback, "problems": problems}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rightwhale crop", description=__doc__.split("\n\n")[1])
    add = parser.add_argument
    add("--data-dir", required=True, help="input data directory (train.csv, imgs/, points1.json, points2.json)")
    add("--out", required=True, help="output data directory (created)")
    add("--size", type=int, default=256, help="crop width and height in pixels (default 256, as the original)")
    add("--width", type=int, help="crop width, overrides --size (e.g. 2x the height keeps the 2:1 window)")
    add("--height", type=int, help="crop height, overrides --size")
    add("--points1", help="Sloth JSON of bonnet points to use instead of the directory's points1.json")
    add("--points2", help="Sloth JSON of blowhead points to use instead of the directory's points2.json")
    add("--boxes", help="Sloth JSON of head boxes: crop these boxes instead of heads placed by points")
    add("--box-pad", type=float, default=0.0,
        help="with --boxes, grow each box by this fraction of its size (the original's --pad / 100)")
    args = parser.parse_args(argv)
    out_w, out_h = args.width or args.size, args.height or args.size
    if min(out_w, out_h) < 1:
        parser.error("crop width and height must be positive")
    try:
        result = crop_data_dir(args.data_dir, args.out, out_w, out_h, args.points1, args.points2, args.boxes,
                               args.box_pad)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report_problems(result["problems"])
    fell_back = result["fallback"]
    print(f"wrote {len(result['cropped'])} {'box' if args.boxes else 'head'} crops ({out_w}x{out_h}) to {args.out}"
          + (f"; {len(fell_back)} fell back to the whole photo (crop window too small or larger than the photo): "
             f"{', '.join(fell_back[:10])}" if fell_back else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
