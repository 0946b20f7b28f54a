"""Stage 3, head crop (DESIGN.md section 3): cut the head out of a photo, turned so the bonnet points right.

As utils/points_crop.py of the original: a window 2d wide and d high (d = |bonnet - blowhead|) around
0.4 bonnet + 0.6 blowhead, rotated so that the bonnet points along +x, resized to out_w x out_h (the
original squeezed it to a square; `out_w = 2 * out_h` keeps the aspect). Rotation, crop and resize are one
affine matrix, so one bilinear warp makes the crop (the original interpolated twice) and points map with it.
A window that does not fit the photo or is under 20 x 10 pixels falls back to the whole photo resized.
Stage 1b crops the localizer's head box instead (scripts/create_cached_cropped_image.py), grown by a fraction
of its size and clipped to the photo. io/crop_folders.py writes either as a new data directory.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from rightwhale.core.errors import DataError
from rightwhale.geometry.transforms import invert, rotation, scaling, transform_points, translation, warp

MIN_CROP_H, MIN_CROP_W = 10, 20    # the original's smallest crop, photo pixels
BUCKET = 512                       # photos are zero-padded up to multiples of this: few compiled shapes
WINDOW_CORNERS = np.array([[-0.5, -0.5], [1.5, -0.5], [-0.5, 0.5], [1.5, 0.5]])   # the 2 x 1 head window


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


def warp_photo(photo: np.ndarray, mat, out_w: int, out_h: int) -> np.ndarray:
    h, w = photo.shape[:2]
    padded = np.pad(photo, ((0, -h % BUCKET), (0, -w % BUCKET), (0, 0)))
    return np.asarray(warp(padded[None], mat, out_hw=(out_h, out_w))[0])


class UnplaceableHead(DataError):
    """The points cannot place a head crop in the photo; the message says why."""


def head_crop(photo: np.ndarray, p1, p2, out_w: int, out_h: int, predicted: bool = False):
    """One photo's head crop: (crop, matrix, fell back to the whole photo?); UnplaceableHead says why the points
    cannot place it. With `predicted` (a model's guess, not an annotation) a finite pair that cannot place a
    head (off the photo, coinciding) gives the whole photo, as the original did."""
    h, w = photo.shape[:2]
    hw, pts = np.array([h, w], np.float32), np.array([p1, p2], np.float64)
    if not np.isfinite(pts).all():
        raise UnplaceableHead("point coordinates are not finite")
    inside = (pts >= -0.5).all() and (pts[:, 0] <= w - 0.5).all() and (pts[:, 1] <= h - 0.5).all()
    reason = (f"a point lies outside the {w}x{h} photo" if not inside else
              "bonnet and blowhead coincide (under 1 pixel apart)" if math.dist(p1, p2) < 1.0 else None)
    if reason and not predicted:
        raise UnplaceableHead(reason)
    whole = bool(reason) or bool(crop_falls_back(p1, p2, hw))
    mat = whole_photo_matrix(hw, out_w, out_h) if reason else head_crop_matrix(p1, p2, hw, out_w, out_h)
    return warp_photo(photo, mat, out_w, out_h), np.asarray(mat), whole


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



def head_boxes(survey) -> dict:
    """Annotated head boxes; where a photo has only points, the box around its head-crop window."""
    boxes = dict(survey.boxes)
    todo = sorted(survey.bonnet.keys() & survey.blowhead.keys() - boxes.keys())
    if todo:
        p1, p2 = (np.stack([pts[n] for n in todo]) for pts in (survey.bonnet, survey.blowhead))
        # the 2d x d window as a 2 x 1 pixel crop, its corners mapped back into the photo
        to_photo = invert(head_crop_matrix(p1, p2, np.full((len(todo), 2), 1e9), 2, 1))
        corners = np.asarray(transform_points(to_photo, np.broadcast_to(WINDOW_CORNERS, (len(todo), 4, 2))))
        lo, hi = corners.min(axis=1), corners.max(axis=1)
        boxes |= dict(zip(todo, np.concatenate([lo, hi - lo], axis=1)))
    return boxes
