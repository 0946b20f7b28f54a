"""Affine geometry in JAX: matrices, a batched warp, points, boxes, random augmentation.

Conventions (every module that moves pixels or points follows them):
- Points are (x, y) pixels, x right, y down, pixel centres at integers (scikit-image's
  convention): a W x H image spans [-0.5, W - 0.5] x [-0.5, H - 0.5].
- An affine is a 3x3 float32 matrix M mapping INPUT to OUTPUT coordinates: content at p
  appears at M p. `B @ A` applies A first; `invert(M)` undoes M; builders broadcast over
  leading dimensions (a batch is (B, 3, 3)). Images are NHWC, uint8 or float.
- Boxes (x, y, w, h) cover pixels x .. x + w - 1 (the original's slice `[t:t+h, l:l+w]`).

Augmentation follows the original's nolearn_utils iterators: flip, affine, gamma, each on
exactly int(B * p) random samples of a batch, plus one more with probability frac(B * p) so
the expected share is p for any batch size.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from rightwhale.core.config import Augment


def _affine(a, b, c, d, tx, ty):
    """Stack [[a, b, tx], [c, d, ty], [0, 0, 1]] over broadcast leading dims."""
    a, b, c, d, tx, ty = jnp.broadcast_arrays(*(jnp.asarray(v, jnp.float32) for v in (a, b, c, d, tx, ty)))
    zero, one = jnp.zeros_like(a), jnp.ones_like(a)
    return jnp.stack([jnp.stack([a, b, tx], -1), jnp.stack([c, d, ty], -1), jnp.stack([zero, zero, one], -1)], -2)


@jax.jit
def translation(tx, ty):
    return _affine(1.0, 0.0, 0.0, 1.0, tx, ty)


@jax.jit
def scaling(sx, sy, center=(0.0, 0.0)):
    """Scale by (sx, sy) about `center` (x, y)."""
    cx, cy = jnp.moveaxis(jnp.asarray(center, jnp.float32), -1, 0)
    return _affine(sx, 0.0, 0.0, sy, cx - sx * cx, cy - sy * cy)


@jax.jit
def rotation(angle_deg, center=(0.0, 0.0)):
    """Rotate about `center`; positive turns content counter-clockwise on screen."""
    return affine_matrix(rotation_deg=angle_deg, center=center)


@jax.jit
def invert(mats):
    """Inverse of affine matrices (..., 3, 3), in closed form (no LU, exact for flips)."""
    a, b, tx = mats[..., 0, 0], mats[..., 0, 1], mats[..., 0, 2]
    c, d, ty = mats[..., 1, 0], mats[..., 1, 1], mats[..., 1, 2]
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    return _affine(ia, ib, ic, id_, -(ia * tx + ib * ty), -(ic * tx + id_ * ty))


def image_center(image_size):
    """(x, y) of the centre of an image (int or (H, W)) under the pixel-centre convention."""
    h, w = (int(image_size),) * 2 if np.isscalar(image_size) else map(int, image_size)
    return jnp.array([(w - 1) / 2.0, (h - 1) / 2.0], jnp.float32)


@jax.jit
def affine_matrix(scale=1.0, rotation_deg=0.0, shear_deg=0.0, tx=0.0, ty=0.0, center=(0.0, 0.0)):
    """nolearn_utils' `im_affine_transform` as a forward matrix about `center`.

    The original gave skimage the inverse map c + A (q - c), A = AffineTransform(1/scale, rotation, shear, -t)
    in the 2015 parameterisation; this is its inverse: `scale` > 1 zooms in, positive rotation turns content
    counter-clockwise, translation applies before rotation and scaling. Shear is in degrees (the original
    passed radians)."""
    k = 1.0 / jnp.asarray(scale, jnp.float32)
    r = jnp.deg2rad(jnp.asarray(rotation_deg, jnp.float32))
    s = jnp.deg2rad(jnp.asarray(shear_deg, jnp.float32))
    inverse_map = _affine(k * jnp.cos(r), -k * jnp.sin(r + s), k * jnp.sin(r), k * jnp.cos(r + s),
                          -jnp.asarray(tx, jnp.float32), -jnp.asarray(ty, jnp.float32))
    cx, cy = jnp.moveaxis(jnp.asarray(center, jnp.float32), -1, 0)
    return translation(cx, cy) @ invert(inverse_map) @ translation(-cx, -cy)


@functools.partial(jax.jit, static_argnames=("hw",))
def flip_matrix(horizontal, vertical, hw):
    """Mirror an H x W image left-right and/or up-down (booleans, broadcastable)."""
    h, w = hw
    sx, sy = jnp.where(horizontal, -1.0, 1.0), jnp.where(vertical, -1.0, 1.0)
    return _affine(sx, 0.0, 0.0, sy, jnp.where(horizontal, w - 1.0, 0.0), jnp.where(vertical, h - 1.0, 0.0))


@jax.jit
def transform_points(mats, pts):
    """Map points (..., K, 2) by matrices (..., 3, 3)."""
    return jnp.einsum("...ij,...kj->...ki", mats[..., :2, :2], jnp.asarray(pts, jnp.float32)) + mats[..., None, :2, 2]


# --- the warp ---------------------------------------------------------------------------------------
# XLA:CPU runs a gather as a scalar loop over the output elements, and fuses the index arithmetic into
# it: each element then carries tens of instructions, so few of the loop's cache misses overlap (a
# rotated image is read across its memory order, a new cache line every few pixels). So the warp computes
# an output pixel's index in a vectorised pass of its own where it can (`_materialized`: order 0), folds
# "outside the image" into that index or into the bilinear weights instead of padding the image (a copy
# of the batch per call), clamps in int32, and tells the gather its indices are in bounds and not
# negative. bench/bench_augment.py measures it against skimage and jax.scipy.ndimage.map_coordinates.


def _materialized(x, floor):
    """x (every element >= floor) as the max of x and floor over a new axis: a reduction, which XLA computes
    in its own vectorised pass rather than fusing it into the gather that reads it (elementwise index math
    would be fused and recomputed per gathered element)."""
    return jnp.max(jnp.stack([x, jnp.full_like(x, floor)], -1), axis=-1)


def _source(inv, out_hw):
    """Source coordinates (sx, sy), each (..., Ho, Wo): inv(M) q for every output pixel q = (x, y)."""
    ho, wo = out_hw
    xs, ys = jnp.arange(wo, dtype=jnp.float32), jnp.arange(ho, dtype=jnp.float32)[:, None]
    m = lambda i, j: inv[..., i, j, None, None]
    return m(0, 0) * xs + m(0, 1) * ys + m(0, 2), m(1, 0) * xs + m(1, 1) * ys + m(1, 2)


def _nearest(rows, sx, sy, hw, base, cval):
    """Order 0: rows (P, X) read at round(sx, sy) (+ base, the image's first row), `cval` outside."""
    h, w = hw
    xi, yi = (jnp.round(jnp.clip(v, -1, n)).astype(jnp.int32) for v, n in ((sx, w), (sy, h)))
    inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    index = _materialized(jnp.where(inside, base + jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1), -1), -1)
    taps = rows.at[jnp.maximum(index, 0)].get(mode="promise_in_bounds", wrap_negative_indices=False)
    return jnp.where((index >= 0)[..., None], taps, cval)


def _bilinear(rows, sx, sy, hw, base, cval):
    """Order 1: rows (P, X) interpolated at (sx, sy), float32. A neighbour outside the image reads `cval`:
    its weight moves from the (clamped, in-bounds) tap onto `cval`, so the image needs no border."""
    h, w = hw
    x0, y0 = jnp.floor(sx), jnp.floor(sy)
    fx, fy = sx - x0, sy - y0
    weight = lambda f, ok: jnp.where(ok, f, 0.0)[..., None]
    wx0, wx1 = weight(1 - fx, (x0 >= 0) & (x0 < w)), weight(fx, (x0 >= -1) & (x0 < w - 1))
    wy0, wy1 = weight(1 - fy, (y0 >= 0) & (y0 < h)), weight(fy, (y0 >= -1) & (y0 < h - 1))
    col = lambda v: jnp.clip(v, 0, w - 1)               # int clamps: one instruction, float ones several
    row = lambda v: base + jnp.clip(v, 0, h - 1) * w
    xi, yi = x0.astype(jnp.int32), y0.astype(jnp.int32)   # XLA saturates (NaN -> 0); clamped below anyway
    left, right, top, bottom = col(xi), col(xi + 1), row(yi), row(yi + 1)
    tap = lambda r, c: rows.at[r + c].get(mode="promise_in_bounds", wrap_negative_indices=False).astype(jnp.float32)
    upper = wx0 * tap(top, left) + wx1 * tap(top, right)
    lower = wx0 * tap(bottom, left) + wx1 * tap(bottom, right)
    out = wy0 * upper + wy1 * lower
    return out + cval * (1 - (wx0 + wx1) * (wy0 + wy1))


@functools.partial(jax.jit, static_argnames=("out_hw", "order"))
def warp(images, mats, out_hw=None, order=1, cval=0.0):
    """Resample a batch (B, H, W, C): output pixel q takes the input at inv(M) q; same dtype out (uint8 rounded).

    mats (B, 3, 3), or (3, 3) shared by the batch (test-time augmentation: one set of coordinates serves
    all B images). order 1 is bilinear, 0 nearest (training's augmentation, masks); outside reads `cval`.
    """
    if order not in (0, 1):
        raise ValueError(f"warp supports order 0 (nearest) or 1 (bilinear), got {order}")
    images = jnp.asarray(images)
    b, h, w, c = images.shape
    ho, wo = (h, w) if out_hw is None else out_hw
    inv = invert(jnp.asarray(mats, jnp.float32))
    sx, sy = _source(inv, (ho, wo))
    if order == 0:                    # gathers the pixels themselves: no float round trip
        sample, cval = _nearest, _cast(jnp.asarray(cval, jnp.float32), images.dtype)
    else:
        sample = _bilinear
    if inv.ndim == 2:                 # shared: rows of B * C values per pixel (XLA fuses both transposes)
        rows = images.transpose(1, 2, 0, 3).reshape(h * w, b * c)
        out = sample(rows, sx, sy, (h, w), 0, cval).reshape(ho, wo, b, c).transpose(2, 0, 1, 3)
    else:
        base = (jnp.arange(b, dtype=jnp.int32) * (h * w))[:, None, None]
        out = sample(images.reshape(b * h * w, c), sx, sy, (h, w), base, cval)
    return _cast(out, images.dtype)


def _cast(values, dtype):
    """The warp's output rule: uint8 rounds and saturates, other dtypes convert."""
    if dtype == jnp.uint8 and values.dtype != jnp.uint8:
        return jnp.clip(jnp.round(values), 0, 255).astype(jnp.uint8)
    return values.astype(dtype)


@functools.partial(jax.jit, static_argnames=("hw",))
def transform_boxes_by_mask(mats, boxes, hw):
    """Move (B, 4) boxes as the original did: warp the box's mask bilinearly, re-take its bounding box
    ((0, 0, 0, 0) when empty). The original kept any nonzero coverage; we keep coverage above 1e-3 so
    float32 rounding noise does not grow the box."""
    h, w = hw
    boxes = jnp.asarray(boxes, jnp.float32)
    left, top = jnp.floor(boxes[:, 0]), jnp.floor(boxes[:, 1])
    right, bottom = jnp.floor(boxes[:, 0] + boxes[:, 2]), jnp.floor(boxes[:, 1] + boxes[:, 3])
    xs, ys = jnp.arange(w, dtype=jnp.float32), jnp.arange(h, dtype=jnp.float32)
    in_x = (xs >= left[:, None]) & (xs < right[:, None])
    in_y = (ys >= top[:, None]) & (ys < bottom[:, None])
    mask = (in_y[:, :, None] & in_x[:, None, :]).astype(jnp.float32)[..., None]
    covered = warp(mask, mats, order=1)[..., 0] > 1e-3
    rows, cols = covered.any(axis=2), covered.any(axis=1)
    top, left = jnp.argmax(rows, axis=1), jnp.argmax(cols, axis=1)
    bottom, right = h - jnp.argmax(rows[:, ::-1], axis=1), w - jnp.argmax(cols[:, ::-1], axis=1)
    box = jnp.stack([left, top, right - left, bottom - top], axis=1).astype(jnp.float32)
    return jnp.where(rows.any(axis=1)[:, None], box, 0.0)


@functools.partial(jax.jit, static_argnames=("hw",))
def transform_boxes_by_corners(mats, boxes, hw):
    """Bounding box of the 4 moved corners of each box's pixel area, clipped to the image. Agrees with
    the mask method to about a pixel while the box stays inside the image (the mask loses what lies
    outside the input, and bilinear coverage adds up to a pixel around a slanted edge)."""
    h, w = hw
    boxes = jnp.asarray(boxes, jnp.float32)
    x0, y0 = boxes[:, 0] - 0.5, boxes[:, 1] - 0.5
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    moved = transform_points(mats, jnp.stack([x0, y0, x1, y0, x0, y1, x1, y1], -1).reshape(-1, 4, 2))
    lo = jnp.clip(moved.min(axis=1) + 0.5, 0.0, jnp.array([w, h], jnp.float32))
    hi = jnp.clip(moved.max(axis=1) + 0.5, 0.0, jnp.array([w, h], jnp.float32))
    return jnp.where(jnp.all(hi > lo, axis=1, keepdims=True), jnp.concatenate([lo, hi - lo], axis=1), 0.0)


def pick(key, batch, p):
    """Boolean (batch,): int(batch * p) random samples, one more with probability frac(batch * p)."""
    u = jax.random.uniform(key, (batch + 1,))
    count = int(batch * p) + (u[batch] < batch * p - int(batch * p))
    return jnp.argsort(u[:batch]) < count         # a random permutation's first `count` positions


def _choose(u, choices):
    """Uniform draws u in [0, 1) -> elements of `choices` (one random stream for all parameters)."""
    choices = jnp.asarray(choices, jnp.float32)
    return choices[jnp.minimum((u * len(choices)).astype(jnp.int32), len(choices) - 1)]


@functools.partial(jax.jit, static_argnames=("batch", "augment"))
def sample_affine_params(key, batch, augment: Augment):
    """The original's draws: picked samples get each parameter from its choices, the rest identity."""
    k_pick, k_draw = jax.random.split(key)
    picked = pick(k_pick, batch, augment.probability)
    draws = {"scale": (augment.scales, 1.0), "rotation_deg": (augment.rotations, 0.0),
             "shear_deg": (augment.shears, 0.0), "ty": (augment.translations, 0.0), "tx": (augment.translations, 0.0)}
    u = jax.random.uniform(k_draw, (len(draws), batch))
    return picked, {name: jnp.where(picked, _choose(ui, choices), identity)
                    for ui, (name, (choices, identity)) in zip(u, draws.items())}


@functools.partial(jax.jit, static_argnames=("batch", "augment", "image_size"))
def sample_affine(key, batch, augment: Augment, image_size):
    """(B, 3, 3): a random im_affine_transform about the image centre, identity for unpicked samples."""
    return affine_matrix(**sample_affine_params(key, batch, augment)[1], center=image_center(image_size))


@functools.partial(jax.jit, static_argnames=("augment",))
def photometric(key, images, augment: Augment):
    """Gamma (skimage adjust_gamma: x ** gamma) on picked samples, then brightness: each sample times a
    draw from `augment.brightness` (our reading of the naive baseline). Float images stay in [0, 1]."""
    batch = images.shape[0]
    k_pick, k_draw = jax.random.split(key)
    u = jax.random.uniform(k_draw, (2, batch))
    per_sample = (batch,) + (1,) * (images.ndim - 1)
    if augment.gamma_probability > 0:
        gamma = jnp.where(pick(k_pick, batch, augment.gamma_probability), _choose(u[0], augment.gammas), 1.0)
        images = images ** gamma.reshape(per_sample)
    if tuple(augment.brightness) != (1.0,):
        images = jnp.clip(images * _choose(u[1], augment.brightness).reshape(per_sample), 0.0, 1.0)
    return images


@functools.partial(jax.jit, static_argnames=("augment",))
def augment_batch(key, images, augment: Augment, points=None, boxes=None):
    """Training-time augmentation of images (B, H, W, C) in [0, 1] (uint8 is scaled), returned float32.

    points (B, K, 2) and boxes (B, 4), in pixels of these images, follow the same geometry (boxes by
    mask, as the original). `augment` is static; its translations are pixels at this size.
    """
    images = jnp.asarray(images)
    images = images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images.astype(jnp.float32)
    batch, h, w = images.shape[:3]
    k_flip, k_affine, k_photo = jax.random.split(key, 3)
    kh, kv = jax.random.split(k_flip)
    flips = flip_matrix(pick(kh, batch, augment.flip_horizontal), pick(kv, batch, augment.flip_vertical), (h, w))
    mats = sample_affine(k_affine, batch, augment, (h, w)) @ flips
    if augment.probability > 0 or augment.flip_horizontal > 0 or augment.flip_vertical > 0:
        images = warp(images, mats, order=augment.interpolation)
    images = photometric(k_photo, images, augment)
    points = None if points is None else transform_points(mats, points)
    boxes = None if boxes is None else transform_boxes_by_mask(mats, boxes, (h, w))
    return images, points, boxes
