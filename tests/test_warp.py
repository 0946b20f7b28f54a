"""`transforms.warp` against an independent oracle: scipy.ndimage.map_coordinates at the same inverse map.

scipy's mode "grid-constant" is skimage.transform.warp's mode="constant" (the image padded with cval and
interpolated across its edge; scipy's own "constant" stops interpolating at the edge). The oracle works in
float64 from the float64 inverse of the float32 matrices; the warp rounds its coordinates in float32, so
order 1 is compared on smooth images (a coordinate error of ~1e-5 px then moves a value by far less than
the tolerance), and order 0 everywhere except where a coordinate lies within 1e-3 of a .5 tie, which
float32 may round either way.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from rightwhale.geometry import transforms as T

HW = (37, 53)           # odd, non-square input
OUT_HW = (29, 61)       # output of another size: shorter and wider


def smooth_images(rng, batch, hw=HW, channels=3):
    """float32 in [0, 1] with gentle gradients (under ~0.1 per pixel)."""
    noise = rng.normal(size=(batch, *hw, channels))
    field = ndimage.gaussian_filter(noise, sigma=(0, 3, 3, 0))
    field -= field.min(axis=(1, 2, 3), keepdims=True)
    return (field / field.max(axis=(1, 2, 3), keepdims=True)).astype(np.float32)


def random_mats(rng, batch, hw=HW):
    """Rotations of any angle, scale 0.7-1.4, shear, translations that push part of the image out."""
    return np.asarray(T.affine_matrix(
        scale=rng.uniform(0.7, 1.4, batch), rotation_deg=rng.uniform(-180, 180, batch),
        shear_deg=rng.uniform(-15, 15, batch), tx=rng.uniform(-12, 12, batch), ty=rng.uniform(-12, 12, batch),
        center=T.image_center(hw)))


def source_coords(mat, out_hw):
    """float64 (sy, sx) of every output pixel: inv(M) q."""
    inv = np.linalg.inv(np.asarray(mat, np.float64))
    ys, xs = np.mgrid[: out_hw[0], : out_hw[1]].astype(np.float64)
    return inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2], inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]


def oracle(image, mat, out_hw, order, cval=0.0):
    """(Ho, Wo, C) float64 by scipy, channel by channel."""
    sy, sx = source_coords(mat, out_hw)
    planes = np.asarray(image, np.float64)
    return np.stack([ndimage.map_coordinates(planes[..., c], [sy, sx], order=order, mode="grid-constant",
                                             cval=cval) for c in range(planes.shape[-1])], axis=-1)


def near_tie(mat, out_hw, margin=1e-3):
    """(Ho, Wo) True where round() of either coordinate is ambiguous in float32."""
    return np.any([np.abs(np.abs(v - np.floor(v)) - 0.5) < margin for v in source_coords(mat, out_hw)], axis=0)


def per_image(mats, batch):
    return mats if mats.ndim == 3 else np.broadcast_to(mats, (batch, 3, 3))


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("out_hw", [None, OUT_HW])
def test_bilinear_float_matches_oracle(shared, out_hw):
    rng = np.random.default_rng(0)
    images = smooth_images(rng, 4)
    mats = random_mats(rng, 1)[0] if shared else random_mats(rng, 4)
    out = np.asarray(T.warp(images, mats, out_hw=out_hw, order=1))
    hw = out_hw or HW
    assert out.shape == (4, *hw, 3) and out.dtype == np.float32
    for image, mat, got in zip(images, per_image(mats, 4), out):
        np.testing.assert_allclose(got, oracle(image, mat, hw, 1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_nearest_matches_oracle_away_from_ties(shared, dtype):
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(4, *HW, 3))                     # not smooth: nearest copies pixels exactly
    images = (images * 255).astype(np.uint8) if dtype == np.uint8 else images.astype(np.float32)
    mats = random_mats(rng, 1)[0] if shared else random_mats(rng, 4)
    out = np.asarray(T.warp(images, mats, out_hw=OUT_HW, order=0))
    assert out.dtype == dtype
    for image, mat, got in zip(images, per_image(mats, 4), out):
        clear = ~near_tie(mat, OUT_HW)
        assert clear.mean() > 0.98                             # the comparison covers nearly every pixel
        np.testing.assert_array_equal(got[clear], oracle(image, mat, OUT_HW, 0)[clear].astype(dtype))


@pytest.mark.parametrize("shared", [False, True])
def test_bilinear_uint8_within_one_level(shared):
    rng = np.random.default_rng(2)
    images = np.round(smooth_images(rng, 3) * 255).astype(np.uint8)
    mats = random_mats(rng, 1)[0] if shared else random_mats(rng, 3)
    out = np.asarray(T.warp(images, mats, out_hw=OUT_HW, order=1))
    assert out.dtype == np.uint8
    for image, mat, got in zip(images, per_image(mats, 3), out):
        assert np.abs(got.astype(np.float64) - oracle(image, mat, OUT_HW, 1)).max() <= 1.0


@pytest.mark.parametrize("order", [0, 1])
def test_fill_value_outside_and_across_the_edge(order):
    """cval fills outside and blends into the edge pixels as skimage's constant mode does."""
    rng = np.random.default_rng(3)
    images = smooth_images(rng, 2, channels=1)
    mats = random_mats(rng, 2)
    out = np.asarray(T.warp(images, mats, out_hw=OUT_HW, order=order, cval=0.3))
    for image, mat, got in zip(images, mats, out):
        ref = oracle(image, mat, OUT_HW, order, cval=0.3)
        clear = ~near_tie(mat, OUT_HW) if order == 0 else np.ones(OUT_HW, bool)
        assert (np.abs(ref - 0.3) < 1e-9).mean() > 0.05        # the matrices do reach outside
        np.testing.assert_allclose(got[clear], ref[clear], atol=1e-5, rtol=0)


@pytest.mark.parametrize("order", [0, 1])
def test_far_outside_reads_the_fill_value(order):
    """Coordinates beyond any image (a 10**6-pixel shift) are clipped, never wrapped into it."""
    images = np.ones((2, *HW, 3), np.float32)
    mats = np.asarray(T.translation(np.array([1e6, -1e6]), np.array([3.0, -1e6])))
    np.testing.assert_array_equal(np.asarray(T.warp(images, mats, order=order, cval=0.25)), 0.25)


@pytest.mark.parametrize("order", [0, 1])
def test_identity_and_integer_shift_are_exact(order):
    rng = np.random.default_rng(4)
    images = rng.uniform(size=(2, *HW, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(T.warp(images, np.eye(3, dtype=np.float32), order=order)), images)
    shifted = np.asarray(T.warp(images, T.translation(3.0, -2.0), order=order))
    np.testing.assert_array_equal(shifted[:, :-2, 3:], images[:, 2:, :-3])
    assert not shifted[:, -2:].any() and not shifted[:, :, :3].any()


@pytest.mark.parametrize("order", [0, 1])
def test_shared_matrix_under_vmap_matches_per_image(order):
    """test-time augmentation vmaps the shared-matrix path over its transforms."""
    rng = np.random.default_rng(5)
    images = smooth_images(rng, 3)
    group = random_mats(rng, 4)
    copies = jax.vmap(lambda m: T.warp(images, m, order=order))(jnp.asarray(group))
    for m, got in zip(group, np.asarray(copies)):
        np.testing.assert_array_equal(got, np.asarray(T.warp(images, np.broadcast_to(m, (3, 3, 3)), order=order)))


def test_nearest_ties_round_half_to_even():
    """A half-pixel shift puts every coordinate on a tie: x - 0.5 rounds to even (jnp.round), both ways."""
    image = np.arange(8, dtype=np.float32).reshape(1, 1, 8, 1) + 1
    out = np.asarray(T.warp(image, T.translation(0.5, 0.0), order=0))[0, 0, :, 0]
    np.testing.assert_array_equal(out, image[0, 0, np.round(np.arange(8) - 0.5).astype(int), 0])
    out = np.asarray(T.warp(image, T.translation(-0.5, 0.0), order=0))[0, 0, :, 0]
    expected = np.round(np.arange(8) + 0.5).astype(int)
    np.testing.assert_array_equal(out, np.where(expected < 8, image[0, 0, np.minimum(expected, 7), 0], 0))
