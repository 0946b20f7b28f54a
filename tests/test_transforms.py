import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.ndimage import find_objects
from skimage.transform import AffineTransform, SimilarityTransform
from skimage.transform import warp as sk_warp

from rightwhale.core.config import ALIGN_AUGMENT, NAIVE_AUGMENT, Augment
from rightwhale.geometry import transforms as T

SIZE = 48


def dot_images(points, size=SIZE):
    """One bright pixel per image at integer points (B, 2), float in [0, 1]."""
    img = np.zeros((len(points), size, size, 1), np.float32)
    for i, (x, y) in enumerate(points):
        img[i, y, x] = 1.0
    return img


def centre_of_mass(images):
    """(B, 2) intensity-weighted (x, y) of channel 0."""
    w = np.asarray(images, np.float64)[..., 0]
    ys, xs = np.mgrid[: w.shape[1], : w.shape[2]]
    total = w.sum(axis=(1, 2))
    return np.stack([(w * xs).sum(axis=(1, 2)) / total, (w * ys).sum(axis=(1, 2)) / total], axis=1)


def random_mats(rng, batch, size=SIZE):
    return T.affine_matrix(scale=rng.uniform(0.85, 1.3, batch), rotation_deg=rng.uniform(-180, 180, batch),
                           shear_deg=rng.uniform(-20, 20, batch), tx=rng.uniform(-4, 4, batch),
                           ty=rng.uniform(-4, 4, batch), center=T.image_center(size))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dot_lands_at_mapped_point(seed):
    rng = np.random.default_rng(seed)
    pts = rng.integers(16, SIZE - 16, (4, 2))
    mats = random_mats(rng, 4)
    moved = T.warp(dot_images(pts), mats)
    expected = np.asarray(T.transform_points(mats, pts[:, None, :].astype(np.float32)))[:, 0]
    np.testing.assert_allclose(centre_of_mass(moved), expected, atol=0.5)


def test_warp_matches_skimage_warp():
    rng = np.random.default_rng(3)
    smooth = np.cumsum(np.cumsum(rng.normal(size=(SIZE, SIZE, 3)), 0), 1)
    img = ((smooth - smooth.min()) / np.ptp(smooth) * 255).astype(np.uint8)
    mats = random_mats(rng, 3)
    ours = np.asarray(T.warp(np.repeat(img[None], 3, 0), mats)).astype(np.float64)
    for m, out in zip(np.asarray(mats, np.float64), ours):
        ref = sk_warp(img, AffineTransform(matrix=np.linalg.inv(m)), order=1, preserve_range=True)
        assert np.abs(out - ref)[4:-4, 4:-4].mean() < 1.0
    nearest = np.asarray(T.warp(img[None], mats[:1], order=0))[0].astype(np.float64)
    ref = sk_warp(img, AffineTransform(matrix=np.linalg.inv(np.asarray(mats[0], np.float64))), order=0,
                  preserve_range=True)
    assert (np.abs(nearest - ref)[4:-4, 4:-4] > 0).mean() < 0.02   # ties at .5 may round either way


def test_affine_matrix_is_the_original_im_affine_transform():
    # nolearn_utils built skimage's inverse map centre + A + uncentre with A's scale 1/s and translation -t
    s, r, tx, ty = 1.25, 37.0, 5.0, -3.0
    c = np.array([SIZE, SIZE]) / 2.0 - 0.5
    a = AffineTransform(scale=(1 / s, 1 / s), rotation=np.deg2rad(r), translation=(-tx, -ty))
    inverse_map = (SimilarityTransform(translation=-c) + a + SimilarityTransform(translation=c)).params
    ours = np.asarray(T.affine_matrix(s, r, 0.0, tx, ty, T.image_center(SIZE)), np.float64)
    np.testing.assert_allclose(ours, np.linalg.inv(inverse_map), atol=1e-4)


SHEAR_GRID = np.array([[a, b] for a in (-8.0, 0.0, 8.0) for b in (-14.0, -7.0, 0.0, 7.0, 14.0)])   # about the centre


@pytest.mark.parametrize("shear", [20.0, -30.0])
def test_shear_slants_vertical_lines_as_the_2015_skimage_shear(shear):
    """The 2015 skimage shear (nolearn_utils' `shear`) turned the inverse map's y axis by the shear angle: content
    along the input direction (-sin sh, cos sh) comes out vertical, horizontal rows stay rows at the same scale.
    Forward, a point (a, b) from the centre lands at (a + b tan sh, b / cos sh): a vertical line slants by
    tan sh (right below the centre for sh > 0, as skimage's shear today) and stretches by 1 / cos sh (which
    today's pure shear [[1, -tan sh], [0, 1]] lacks)."""
    sh = np.deg2rad(shear)
    centre = np.asarray(T.image_center(SIZE), np.float64)
    m = T.affine_matrix(shear_deg=shear, center=T.image_center(SIZE))
    expected = centre + np.stack([SHEAR_GRID[:, 0] + SHEAR_GRID[:, 1] * np.tan(sh), SHEAR_GRID[:, 1] / np.cos(sh)], 1)
    np.testing.assert_allclose(T.transform_points(m, centre + SHEAR_GRID), expected, atol=1e-3)
    # through the pixels: a dot at each grid point lands there (bilinear, centre of mass)
    dots = np.zeros((len(SHEAR_GRID), SIZE, SIZE, 1), np.float32)
    for i, (x, y) in enumerate(np.round(centre + SHEAR_GRID - 0.5).astype(int)):   # the grid is offset by .5
        dots[i, y:y + 2, x:x + 2] = 1.0                                             # 2x2 block centred on it
    moved = T.warp(dots, jnp.broadcast_to(m, (len(dots), 3, 3)))
    np.testing.assert_allclose(centre_of_mass(moved), expected, atol=0.5)
    # skimage today: the same map is a squeeze of y by cos sh, then its shear (inverse maps, about the centre)
    squeeze_then_shear = AffineTransform(scale=(1.0, np.cos(sh))) + AffineTransform(shear=sh)
    inverse = SimilarityTransform(translation=-centre) + squeeze_then_shear + SimilarityTransform(translation=centre)
    np.testing.assert_allclose(np.asarray(m, np.float64), np.linalg.inv(inverse.params), atol=1e-4)


def test_shear_applies_after_rotation_scale_and_translation():
    """The 2015 inverse map was A = (scale, rotation) o shear, less the translation: forward, the shear comes last."""
    c = T.image_center(SIZE)
    full = T.affine_matrix(1.25, 37.0, 11.0, 5.0, -3.0, c)
    np.testing.assert_allclose(full, T.affine_matrix(shear_deg=11.0, center=c) @ T.affine_matrix(1.25, 37.0, 0.0, 5.0,
                                                                                                 -3.0, c), atol=1e-4)


def test_rotation_flip_and_inverse_conventions():
    img = np.arange(2 * 5 * 5, dtype=np.float32).reshape(2, 5, 5, 1)
    # positive rotation turns content counter-clockwise on screen, like np.rot90 / skimage.rotate
    np.testing.assert_allclose(T.warp(img, T.rotation(90.0, T.image_center(5))), np.rot90(img, 1, (1, 2)),
                               atol=1e-4)
    flips = T.flip_matrix(jnp.array([True, False]), jnp.array([False, True]), (5, 5))
    out = np.asarray(T.warp(img, flips))
    np.testing.assert_array_equal(out[0], img[0, :, ::-1])
    np.testing.assert_array_equal(out[1], img[1, ::-1])
    m = random_mats(np.random.default_rng(4), 5)
    np.testing.assert_allclose(T.invert(m) @ m, np.broadcast_to(np.eye(3), (5, 3, 3)), atol=1e-5)
    pts = jnp.array([[[3.0, 4.0], [10.0, -2.0]]] * 5)
    np.testing.assert_allclose(T.transform_points(T.invert(m), T.transform_points(m, pts)), pts, atol=1e-3)
    with pytest.raises(ValueError, match="order"):
        T.warp(img, flips, order=3)


def original_bbox(box, mat, size=SIZE):
    """utils/iterators.py get_transformed_bbox with scikit-image: mask, warp, find_objects."""
    l, t, w, h = box
    mask = np.zeros((size, size), np.float64)
    mask[int(t):int(t + h), int(l):int(l + w)] = 1.0
    warped = sk_warp(mask, AffineTransform(matrix=np.linalg.inv(np.asarray(mat, np.float64))), order=1) > 1e-3
    dets = find_objects(warped.astype(int))
    if len(dets) != 1:
        return np.zeros(4)
    rows, cols = dets[0]
    return np.array([cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start])


def test_boxes_by_mask_match_the_original_and_the_corners():
    rng = np.random.default_rng(5)
    n = 8
    boxes = np.stack([rng.uniform(17, 21, n), rng.uniform(17, 21, n), rng.uniform(6, 10, n),
                      rng.uniform(6, 10, n)], 1).astype(np.float32)
    mats = T.affine_matrix(scale=rng.uniform(0.9, 1.1, n), rotation_deg=np.linspace(-180, 180, n),
                           shear_deg=rng.uniform(-20, 20, n), tx=rng.uniform(-3, 3, n),
                           center=T.image_center(SIZE))
    by_mask = np.asarray(T.transform_boxes_by_mask(mats, boxes, (SIZE, SIZE)))
    by_corners = np.asarray(T.transform_boxes_by_corners(mats, boxes, (SIZE, SIZE)))
    for box, mat, ours in zip(boxes, mats, by_mask):
        np.testing.assert_array_equal(ours, original_bbox(box, mat))
    np.testing.assert_allclose(by_corners, corner_bbox(boxes, mats), atol=1e-3)
    # the mask covers the box's whole pixels, floor(x) .. floor(x + w) - 1, and grows them by its coverage
    left_top, right_bottom = np.floor(boxes[:, :2]), np.floor(boxes[:, :2] + boxes[:, 2:])
    assert_grown_box(by_mask, corner_bbox(np.concatenate([left_top, right_bottom - left_top], 1), mats))


def assert_grown_box(mask_boxes, reference):
    """Mask boxes are whole pixels grown by bilinear coverage: each edge lies up to about a pixel outside the
    moved area (and, rounded to whole pixels, at most half a pixel inside it)."""
    lo = mask_boxes[:, :2] - reference[:, :2]
    hi = mask_boxes[:, :2] + mask_boxes[:, 2:] - reference[:, :2] - reference[:, 2:]
    assert ((lo > -1.5) & (lo < 0.5) & (hi > -0.5) & (hi < 1.5)).all(), (mask_boxes, reference)


def corner_bbox(boxes, mats, size=SIZE):
    """The oracle in plain numpy: a box (x, y, w, h) covers the area [x - 0.5, x + w - 0.5] (pixel centres at
    integers); map its four corners by each matrix as homogeneous columns, take their bounding box, clip it to
    the image, and give it back in the (x, y, w, h) of covered pixels."""
    out = []
    for (x, y, w, h), m in zip(np.asarray(boxes, np.float64), np.asarray(mats, np.float64)):
        corners = np.array([[x - 0.5, x + w - 0.5, x - 0.5, x + w - 0.5],
                            [y - 0.5, y - 0.5, y + h - 0.5, y + h - 0.5], [1, 1, 1, 1]])
        moved = (m @ corners)[:2]
        lo = np.clip(moved.min(axis=1) + 0.5, 0, size)
        hi = np.clip(moved.max(axis=1) + 0.5, 0, size)
        out.append(np.concatenate([lo, hi - lo]) if (hi > lo).all() else np.zeros(4))
    return np.array(out)


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, 135.0])
def test_box_of_a_turned_box_has_the_rotated_size(angle):
    """A w x h box turned by r and scaled by s about its own centre is s (w |cos r| + h |sin r|) wide and
    s (w |sin r| + h |cos r|) high, and keeps its centre."""
    w, h, s = 12.0, 6.0, 1.2
    box = np.array([[18.0, 21.0, w, h]], np.float32)
    centre = box[0, :2] - 0.5 + box[0, 2:] / 2                      # of the area, pixel-centre convention
    mat = T.affine_matrix(scale=s, rotation_deg=angle, center=centre)[None]
    r = np.deg2rad(angle)
    size = s * np.array([w * abs(np.cos(r)) + h * abs(np.sin(r)), w * abs(np.sin(r)) + h * abs(np.cos(r))])
    by_corners = np.asarray(T.transform_boxes_by_corners(mat, box, (SIZE, SIZE)))[0]
    np.testing.assert_allclose(by_corners[2:], size, atol=1e-3)
    np.testing.assert_allclose(by_corners[:2] - 0.5 + by_corners[2:] / 2, centre, atol=1e-3)
    by_mask = np.asarray(T.transform_boxes_by_mask(mat, box, (SIZE, SIZE)))[0]
    np.testing.assert_allclose(by_mask[2:], size, atol=2.0)            # whole pixels, grown by bilinear coverage
    np.testing.assert_allclose(by_mask[:2] - 0.5 + by_mask[2:] / 2, centre, atol=1.0)


def test_boxes_identity_and_empty():
    boxes = np.array([[5, 6, 10, 7], [5, 6, 10, 7]], np.float32)
    ident = T.affine_matrix(center=T.image_center(SIZE))
    away = T.affine_matrix(tx=100.0, center=T.image_center(SIZE))
    mats = jnp.stack([ident, away])
    np.testing.assert_array_equal(T.transform_boxes_by_mask(mats, boxes, (SIZE, SIZE)), [[5, 6, 10, 7], [0, 0, 0, 0]])
    np.testing.assert_allclose(T.transform_boxes_by_corners(mats, boxes, (SIZE, SIZE)), [[5, 6, 10, 7], [0, 0, 0, 0]])
    flip = T.flip_matrix(True, False, (SIZE, SIZE))[None]
    # the original's flip of a box: x' = W - x - w
    np.testing.assert_array_equal(T.transform_boxes_by_mask(flip, boxes[:1], (SIZE, SIZE)), [[SIZE - 15, 6, 10, 7]])


def test_sampling_follows_the_choice_sets_and_the_key():
    aug = ALIGN_AUGMENT
    picked, params = T.sample_affine_params(jax.random.key(0), 16, aug)
    picked = np.asarray(picked)
    assert picked.sum() == 8                      # exactly int(16 * 0.5), as nolearn_utils' get_random_idx
    for name, choices in [("scale", aug.scales), ("rotation_deg", aug.rotations), ("tx", aug.translations),
                          ("ty", aug.translations)]:
        vals = np.asarray(params[name])
        assert np.isin(vals[picked], np.float32(choices)).all(), name
    assert (np.asarray(params["scale"])[~picked] == 1).all() and (np.asarray(params["tx"])[~picked] == 0).all()
    _, again = T.sample_affine_params(jax.random.key(0), 16, aug)
    _, other = T.sample_affine_params(jax.random.key(1), 16, aug)
    assert all(np.array_equal(params[n], again[n]) for n in params)
    assert not np.array_equal(params["rotation_deg"], other["rotation_deg"])
    naive_picked, naive = T.sample_affine_params(jax.random.key(0), 16, NAIVE_AUGMENT)
    assert np.asarray(naive_picked).all()         # probability 1
    for name, choices in [("shear_deg", NAIVE_AUGMENT.shears), ("rotation_deg", NAIVE_AUGMENT.rotations)]:
        assert np.isin(np.asarray(naive[name]), np.float32(choices)).all(), name
    # a batch of 1 at p=0.5 is picked half the time (the original never picked it)
    picks = jax.vmap(lambda k: T.pick(k, 1, 0.5))(jax.random.split(jax.random.key(7), 200))
    assert np.asarray(picks).mean() == pytest.approx(0.5, abs=0.1)


def test_probability_zero_is_identity():
    imgs = np.random.default_rng(6).integers(0, 256, (3, 16, 16, 3)).astype(np.uint8)
    pts = np.full((3, 2, 2), 7.0, np.float32)
    none = dataclasses.replace(ALIGN_AUGMENT, probability=0.0)
    out, out_pts, _ = T.augment_batch(jax.random.key(2), imgs, none, points=pts)
    assert out.dtype == jnp.float32                # uint8 comes back as float in [0, 1]
    np.testing.assert_allclose(out, imgs / 255.0, atol=1e-7)
    np.testing.assert_array_equal(out_pts, pts)


def test_photometric_gamma_and_brightness_draw_from_their_sets():
    aug = Augment(gamma_probability=0.5, gammas=(0.5, 2.0), brightness=(0.5, 0.8))
    imgs = np.full((8, 4, 4, 3), 0.64, np.float32)
    out = np.asarray(T.photometric(jax.random.key(3), jnp.asarray(imgs), aug))[:, 0, 0, 0]
    # each sample is 0.64 ** gamma * brightness with gamma in {1, 0.5, 2}
    candidates = np.array([0.64 ** g * b for g in (1.0, 0.5, 2.0) for b in (0.5, 0.8)])
    assert all(np.abs(candidates - v).min() < 1e-5 for v in out)
    gamma_one = np.isclose(out[:, None], 0.64 * np.array([0.5, 0.8])).any(axis=1)
    assert gamma_one.sum() == 4                   # exactly half got a gamma draw


def test_augment_batch_moves_points_and_boxes_with_the_image():
    # bilinear: a nearest-neighbour warp may drop a 1-pixel dot, and the centre of mass needs it whole
    aug = dataclasses.replace(ALIGN_AUGMENT, probability=1.0, flip_horizontal=0.5, flip_vertical=0.5,
                              scales=(0.9, 1.0, 1.2), translations=tuple(range(-4, 5)), interpolation=1)
    pts = np.array([[20, 21], [25, 18], [19, 28], [30, 26]])
    boxes = np.array([[16, 16, 12, 10]] * 4, np.float32)
    # each sample's points: its dot, then three corners of the box's area (x0, y0), (x1, y0), (x0, y1)
    x0, y0, x1, y1 = 15.5, 15.5, 27.5, 25.5
    tracked = np.concatenate([pts[:, None], np.broadcast_to([[x0, y0], [x1, y0], [x0, y1]], (4, 3, 2))], 1)
    step = jax.jit(lambda k, x, p, b: T.augment_batch(k, x, aug, points=p, boxes=b))
    scales = []
    for seed in (0, 1, 2):
        out, out_pts, out_boxes = step(jax.random.key(seed), dot_images(pts), tracked.astype(np.float32), boxes)
        out_pts, out_boxes = np.asarray(out_pts, np.float64), np.asarray(out_boxes)
        assert out.dtype == jnp.float32 and out_pts.shape == (4, 4, 2) and out_boxes.shape == (4, 4)
        np.testing.assert_allclose(centre_of_mass(out), out_pts[:, 0], atol=0.5)     # points follow the image
        # the affine each sample got, read off its moved corners; its scale is one of the choices
        q0, qx, qy = out_pts[:, 1], out_pts[:, 2], out_pts[:, 3]
        linear = np.stack([(qx - q0) / (x1 - x0), (qy - q0) / (y1 - y0)], axis=2)    # columns: images of x, y
        mats = np.tile(np.eye(3), (4, 1, 1))
        mats[:, :2, :2], mats[:, :2, 2] = linear, q0 - np.einsum("bij,j->bi", linear, [x0, y0])
        scale = np.sqrt(np.abs(np.linalg.det(linear)))                  # rotation and flips keep |det|
        assert np.abs(scale[:, None] - np.array(aug.scales)).min(axis=1).max() < 1e-3, scale
        scales += scale.round(3).tolist()
        # the box moved with them: the bounding box of the moved area, grown to whole pixels by mask coverage
        assert_grown_box(out_boxes, corner_bbox(boxes, mats))
        corners = np.stack([q0, qx, qy, qx + qy - q0], 1)
        assert ((corners > 0) & (corners < SIZE - 1)).all()              # inside: no clipping at the border
    assert len(set(scales)) > 1                   # the draws differ: the check saw more than one scale
