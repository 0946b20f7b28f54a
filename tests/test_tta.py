import jax
import jax.numpy as jnp
import numpy as np

from rightwhale.core.config import ORIGINAL_TTA
from rightwhale.geometry import transforms as T
from rightwhale.train.tta import tta_matrices, tta_matrices_from_config, tta_predict_points

SIZE = 32
TRUE_POINTS = np.array([[[20.0, 14.0], [12.0, 17.0]], [[11.0, 11.0], [19.0, 21.0]]], np.float32)  # (B, K, 2)


def dot_images():
    """Bonnet as a dot in channel 0, blowhead in channel 1."""
    img = np.zeros((2, SIZE, SIZE, 2), np.float32)
    for b, pts in enumerate(TRUE_POINTS.astype(int)):
        for k, (x, y) in enumerate(pts):
            img[b, y, x, k] = 1.0
    return img


def locate_dots(images):
    """A jittable oracle regressor: the intensity centre of mass of each channel, (N, K, 2)."""
    ys, xs = jnp.mgrid[:SIZE, :SIZE]
    total = images.sum(axis=(1, 2))
    return jnp.stack([(images * xs[..., None]).sum(axis=(1, 2)) / total,
                      (images * ys[..., None]).sum(axis=(1, 2)) / total], axis=-1)


def test_grid_is_the_product_in_the_original_order():
    mats = tta_matrices(SIZE, scales=(0.9, 1.1), rotations=(0.0, 90.0, 180.0), translations=(-2.0, 2.0),
                        shears=(0.0, 10.0))
    assert mats.shape == (24, 3, 3)
    # itertools.product(scales, shears, rotations, translations): the last index varies fastest
    np.testing.assert_allclose(mats[1], T.affine_matrix(0.9, 0.0, 0.0, 2.0, 2.0, T.image_center(SIZE)), atol=1e-5)
    np.testing.assert_allclose(mats[6], T.affine_matrix(0.9, 0.0, 10.0, -2.0, -2.0, T.image_center(SIZE)), atol=1e-5)
    assert tta_matrices_from_config(ORIGINAL_TTA, 128).shape == (243, 3, 3)


def test_round_trip_recovers_the_true_points():
    mats = tta_matrices(SIZE, scales=(0.9, 1.0, 1.1), rotations=(0.0, 90.0, 180.0, 270.0), translations=(-2.0, 0.0, 2.0))
    run = jax.jit(lambda x, m: tta_predict_points(locate_dots, x, m))
    mean, spread = run(dot_images(), mats)
    assert mean.shape == (2, 2, 2) and spread.shape == (2,)
    np.testing.assert_allclose(mean, TRUE_POINTS, atol=0.3)
    assert (np.asarray(spread) < 0.5).all()
    chunked_mean, chunked_spread = tta_predict_points(locate_dots, dot_images(), mats, chunk=5)  # 36 = 7 x 5 + 1
    np.testing.assert_allclose(chunked_mean, mean, atol=1e-4)
    np.testing.assert_allclose(chunked_spread, spread, atol=1e-4)


def test_spread_flags_predictions_that_do_not_follow_the_image():
    def always_centre(images):
        return jnp.full((images.shape[0], 2, 2), 9.0)
    mats = tta_matrices(SIZE, rotations=(0.0, 90.0, 180.0, 270.0))
    mean, spread = tta_predict_points(always_centre, dot_images(), mats)
    # 9 is 6.5 px from the centre 15.5; the 4 back-rotated answers sit on a circle of that radius around it
    np.testing.assert_allclose(spread, 6.5 * np.sqrt(2), atol=1e-3)
    np.testing.assert_allclose(mean, np.full((2, 2, 2), 15.5), atol=1e-3)
