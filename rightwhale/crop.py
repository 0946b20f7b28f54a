"""Stage 3, head crop (DESIGN.md section 3): cut the head out of a photo, turned so the bonnet points right.

As utils/points_crop.py of the original: a window 2d wide and d high (d = |bonnet - blowhead|) around
0.4 bonnet + 0.6 blowhead, rotated so that the bonnet points along +x, resized to out_w x out_h (the
original squeezed it to a square; `out_w = 2 * out_h` keeps the aspect). Rotation, crop and resize are one
affine matrix, so one bilinear warp makes the crop (the original interpolated twice) and points map with it.
A window that does not fit the photo or is under 20 x 10 pixels falls back to the whole photo resized.
Stage 1b crops the localizer's head box instead (scripts/create_cached_cropped_image.py), grown by a fraction
of its size and clipped to the photo. `python -m rightwhale.crop` writes either as a new data directory.
"""
import argparse
import csv
import functools
import io
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from tqdm import tqdm

from rightwhale import data
from rightwhale.atomic import write_bytes, write_csv, write_json
from rightwhale.images import BadImage, read_image
from rightwhale.transforms import rotation, scaling, transform_points, translation, warp

MIN_CROP_H, MIN_CROP_W = 10, 20    # the original's smallest crop, photo pixels
BUCKET = 512                       # photos are zero-padded up to multiples of this: few compiled shapes


def whole_photo_matrix(image_hw, out_w, out_h):
    """The fallback: the whole photo resized, pixel areas [-0.5, W - 0.5] -> [-0.5, out_w - 0.5]."""
    hw = jnp.asarray(image_hw, jnp.float32)
    return scaling(out_w / hw[..., 1], out_h / hw[..., 0], center=(-0.5, -0.5))


@jax.jit
def crop_falls_back(p1, p2, image_hw):
    """True where the original returns the whole photo: its margins floor((H - d) / 2) and floor((W - 2d) / 2)
    must be positive and the window at least 10 x 20 pixels; non-finite points fall back too."""
    p1, p2, hw = (jnp.asarray(v, jnp.float32) for v in (p1, p2, image_hw))
    h, w = hw[..., 0], hw[..., 1]
    d = jnp.linalg.norm(p1 - p2, axis=-1)
    margin_h, margin_w = jnp.floor((h - d) / 2), jnp.floor((w - 2 * d) / 2)
    fits = (margin_h > 0) & (margin_w > 0) & (h - 2 * margin_h >= MIN_CROP_H) & (w - 2 * margin_w >= MIN_CROP_W)
    return ~(fits & jnp.isfinite(d))


@functools.partial(jax.jit, static_argnames=("out_w", "out_h"))
def head_crop_matrix(p1, p2, image_hw, out_w=256, out_h=256):
    """Photo -> crop coordinates (..., 3, 3) for bonnet p1, blowhead p2 (..., 2) in photos of true (H, W) image_hw."""
    p1, p2, hw = (jnp.asarray(v, jnp.float32) for v in (p1, p2, image_hw))
    delta = p1 - p2
    d = jnp.linalg.norm(delta, axis=-1)
    safe_d = jnp.where(jnp.isfinite(d) & (d > 0), d, 1.0)
    angle = jnp.rad2deg(jnp.arctan2(delta[..., 1], delta[..., 0]))
    centre = jnp.nan_to_num(0.4 * p1 + 0.6 * p2)
    # rotate p1 - p2 onto +x, scale the 2d x d window to out_w x out_h, centre it in the crop
    head = (translation((out_w - 1) / 2, (out_h - 1) / 2)
            @ scaling(out_w / (2 * safe_d), out_h / safe_d)
            @ rotation(jnp.nan_to_num(angle))
            @ translation(-centre[..., 0], -centre[..., 1]))
    return jnp.where(crop_falls_back(p1, p2, hw)[..., None, None], whole_photo_matrix(hw, out_w, out_h), head)


@functools.partial(jax.jit, static_argnames=("out_w", "out_h"))
def crop_heads(images, p1, p2, out_w=256, out_h=256, image_hw=None):
    """Head crops (B, out_h, out_w, C) in the images' dtype, and the (B, 3, 3) matrices used (map points with
    `transform_points`, back with `invert`). image_hw (B, 2): true sizes of photos zero-padded into one array."""
    images = jnp.asarray(images)
    if image_hw is None:
        image_hw = jnp.broadcast_to(jnp.array(images.shape[1:3], jnp.float32), (images.shape[0], 2))
    mats = head_crop_matrix(p1, p2, image_hw, out_w, out_h)
    return warp(images, mats, out_hw=(out_h, out_w)), mats


def _clipped_box(boxes, image_hw, pad):
    """The original's add_padding_to_bbox: grow by pad * size / 2 a side, clip to the photo; (l, t, r, b)."""
    boxes, hw = jnp.asarray(boxes, jnp.float32), jnp.asarray(image_hw, jnp.float32)
    l, t = jnp.floor(boxes[..., 0]), jnp.floor(boxes[..., 1])
    r, b = l + jnp.floor(boxes[..., 2]), t + jnp.floor(boxes[..., 3])
    pad_x, pad_y = jnp.round(boxes[..., 2] * pad / 2), jnp.round(boxes[..., 3] * pad / 2)
    h, w = hw[..., 0], hw[..., 1]
    return jnp.clip(l - pad_x, 0, w), jnp.clip(t - pad_y, 0, h), jnp.clip(r + pad_x, 0, w), jnp.clip(b + pad_y, 0, h)


@jax.jit
def box_falls_back(boxes, image_hw, pad=0.0):
    """True where a box (x, y, w, h) keeps under a pixel of the photo: the whole photo is used."""
    l, t, r, b = _clipped_box(boxes, image_hw, pad)
    return ~((r - l >= 1) & (b - t >= 1))


@functools.partial(jax.jit, static_argnames=("out_w", "out_h"))
def box_crop_matrix(boxes, image_hw, out_w=256, out_h=256, pad=0.0):
    """Photo -> crop coordinates (..., 3, 3) for head boxes (..., 4): the box's pixels l .. r - 1 (area
    [l - 0.5, r - 0.5]) fill the output width exactly, likewise in y; aspect is not kept, as the original."""
    l, t, r, b = _clipped_box(boxes, image_hw, pad)
    safe = ~box_falls_back(boxes, image_hw, pad)
    box = scaling(out_w / jnp.where(safe, r - l, 1.0), out_h / jnp.where(safe, b - t, 1.0),
                  center=(-0.5, -0.5)) @ translation(-l, -t)
    return jnp.where(safe[..., None, None], box, whole_photo_matrix(image_hw, out_w, out_h))


def _warp_photo(photo: np.ndarray, mat, out_w: int, out_h: int) -> np.ndarray:
    h, w = photo.shape[:2]
    padded = np.pad(photo, ((0, -h % BUCKET), (0, -w % BUCKET), (0, 0)))
    return np.asarray(warp(padded[None], mat, out_hw=(out_h, out_w))[0])


def head_crop(photo: np.ndarray, p1, p2, out_w: int, out_h: int, predicted: bool = False):
    """One photo's head crop: (crop, matrix, fell back to the whole photo?), or why the points cannot place it.
    With `predicted` (a model's guess, not an annotation) a finite pair that cannot place a head (off the
    photo, coinciding) gives the whole photo, as the original did."""
    h, w = photo.shape[:2]
    hw, pts = np.array([h, w], np.float32), np.array([p1, p2], np.float64)
    if not np.isfinite(pts).all():
        return "point coordinates are not finite"
    inside = (pts >= -0.5).all() and (pts[:, 0] <= w - 0.5).all() and (pts[:, 1] <= h - 0.5).all()
    reason = (f"a point lies outside the {w}x{h} photo" if not inside else
              "bonnet and blowhead coincide (under 1 pixel apart)" if math.dist(p1, p2) < 1.0 else None)
    if reason and not predicted:
        return reason
    whole = bool(reason) or bool(crop_falls_back(p1, p2, hw))
    mat = whole_photo_matrix(hw, out_w, out_h) if reason else head_crop_matrix(p1, p2, hw, out_w, out_h)
    return _warp_photo(photo, mat, out_w, out_h), np.asarray(mat), whole


def lengthen(points, min_length: float) -> np.ndarray:
    """A predicted (bonnet, blowhead) pair stretched about its crop centre (0.4 bonnet + 0.6 blowhead) to at
    least `min_length` apart. An aligner unsure of the heading pulls both points towards the middle of the head
    (the mean of its guesses); the tiny window they span would then miss the head, or fall back to the whole
    photo. Centre and direction are kept; coinciding points (no direction) are left alone."""
    p = np.asarray(points, np.float64)
    centre, d = 0.4 * p[0] + 0.6 * p[1], float(np.linalg.norm(p[0] - p[1]))
    if not np.isfinite(d) or d >= min_length or d < 1e-6:
        return p
    return centre + (p - centre) * (min_length / d)


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
        raise data.DataError(f"{out}: the output must be a new directory, not the input data directory")
    survey = data.load_survey(data_dir)
    problems = list(survey.problems)
    present = set(p.name for p in (data_dir / "imgs").iterdir())

    def read(path, cls, keys):
        found = data.read_sloth(Path(path), cls, keys, present, problems)
        return {name: values for name, (_, values) in found.items()}

    bonnet = read(points1, "point", ("x", "y")) if points1 else survey.bonnet
    blowhead = read(points2, "point", ("x", "y")) if points2 else survey.blowhead
    box_of = read(boxes, "rect", ("x", "y", "width", "height")) if boxes else None

    new_p1, new_p2, done, fallback = {}, {}, [], []
    for name in tqdm([*survey.train, *survey.test], desc="crops", unit="photo", disable=not progress):
        path = str(survey.image_path(name))
        missing = [what for what, pts in (("bonnet", bonnet), ("blowhead", blowhead)) if name not in pts]
        if box_of is not None and name not in box_of:
            problems.append(data.Problem(path, None, "no head box", "missing box"))
            continue
        if box_of is None and missing:
            problems.append(data.Problem(path, None, f"no {' and '.join(missing)} point", "missing points"))
            continue
        try:
            photo = read_image(path)
        except BadImage as e:
            problems.append(data.Problem(path, None, str(e).split(": ", 1)[-1], "unreadable image"))
            continue
        if box_of is None:
            made = head_crop(photo, bonnet[name], blowhead[name], out_w, out_h, predicted)
        else:
            hw = np.array(photo.shape[:2], np.float32)
            mat = box_crop_matrix(box_of[name], hw, out_w, out_h, box_pad)
            made = _warp_photo(photo, mat, out_w, out_h), mat, bool(box_falls_back(box_of[name], hw, box_pad))
        if isinstance(made, str):
            problems.append(data.Problem(path, None, made, "degenerate points"))
            continue
        crop, mat, whole = made
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
    write_json(out / "points1.json", data.sloth_points(new_p1))
    write_json(out / "points2.json", data.sloth_points(new_p2))
    # Crops are the same photos: a classifier on them must reuse this survey's stored split.
    write_json(out / "source.json", {"survey": str(data_dir.resolve()), "kind": "box" if boxes else "head",
                                     "size": [out_w, out_h]})
    return {"cropped": done, "fallback": fallback, "problems": problems}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rightwhale.crop",
        description="Cut the head out of every annotated photo of a data directory (bonnet pointing right, window "
                    "2d x d around 0.4 bonnet + 0.6 blowhead; or a head box with --boxes) and write the crops as a "
                    "new data directory in the Kaggle layout, points mapped into the crops.")
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
    except data.DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    data.report_problems(result["problems"])
    fell_back = result["fallback"]
    print(f"wrote {len(result['cropped'])} {'box' if args.boxes else 'head'} crops ({out_w}x{out_h}) to {args.out}"
          + (f"; {len(fell_back)} fell back to the whole photo (crop window too small or larger than the photo): "
             f"{', '.join(fell_back[:10])}" if fell_back else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
