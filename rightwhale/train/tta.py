"""Test-time augmentation of the point regressor: predict on warped copies, map back, average.

The original (utils/test_time_augmentation.py) warped each image by every transform of a grid with
scikit-image in a process pool; here the batch is warped by all T transforms in one gather and the
regressor sees the B * T copies at once (or in chunks of transforms).
"""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from rightwhale.core.config import Tta
from rightwhale.geometry.transforms import affine_matrix, image_center, invert, transform_points, warp
from rightwhale.io.images import model_input


def tta_matrices(image_size, scales=(1.0,), rotations=(0.0,), translations=(0.0,), shears=(0.0,)):
    """(T, 3, 3): the original's product grid in its order (scale, shear, rotation, translation);
    as there, one translation value serves x and y alike (pixels at `image_size`). Shears are degrees."""
    z, s, r, t = jnp.asarray(list(itertools.product(scales, shears, rotations, translations)), jnp.float32).T
    return affine_matrix(scale=z, rotation_deg=r, shear_deg=s, tx=t, ty=t, center=image_center(image_size))


def tta_matrices_from_config(tta: Tta, image_size: int, reference_size: int = 256):
    """The grid of a `config.Tta`, whose translations are given at 256 px."""
    f = image_size / reference_size
    return tta_matrices(image_size, tta.scales, tta.rotations, tuple(t * f for t in tta.translations), tta.shears)


@jax.jit
def _copies(images, group):
    """(G * B, H, W, C): every image warped by every matrix of the group, transform-major."""
    return jax.vmap(lambda m: warp(images, m))(group).reshape((-1,) + images.shape[1:])


@jax.jit
def _map_back(group, pts):
    """Predictions (G * B, K, 2) on the copies -> (G, B, K, 2) in the original images' pixels."""
    return transform_points(invert(group)[:, None], pts.reshape((group.shape[0], -1) + pts.shape[1:]))


def tta_predict_points(predict_fn, images, mats, chunk=None):
    """Average point predictions over transformed copies; returns (mean_points, spread).

    predict_fn maps images (N, H, W, C) to points (N, K, 2) in pixels of the images it is given; mats
    (T, 3, 3). mean_points (B, K, 2) is in the original images' pixels; spread (B,) is the mean distance
    of the T back-mapped predictions from their mean, large when the copies disagree. `chunk` bounds
    memory: predict on `chunk` transforms (B * chunk images) at a time (the last padded with identities).
    Jittable; called unjitted, warps and predict_fn compile separately, which on XLA CPU is faster for
    regressors that start with a reduction (XLA fuses the warp into it).
    """
    images = jnp.asarray(images)
    t = mats.shape[0]
    chunk = t if chunk is None else min(chunk, t)
    n = -(-t // chunk)
    padded = jnp.concatenate([mats, jnp.broadcast_to(jnp.eye(3, dtype=mats.dtype), (n * chunk - t, 3, 3))])
    groups = [padded[i * chunk:(i + 1) * chunk] for i in range(n)]
    back = jnp.concatenate([_map_back(g, predict_fn(_copies(images, g))) for g in groups])[:t]
    mean = back.mean(axis=0)
    return mean, jnp.linalg.norm(back - mean, axis=-1).mean(axis=(0, 2))


@functools.partial(jax.jit, static_argnames=("apply_fn", "chunk"))
def _tta_batch(apply_fn, variables, images, mats, chunk):
    size = images.shape[1]

    def predict_points(images01):
        output, _ = apply_fn(variables, model_input(images01), train=False)
        return output.reshape(-1, 2, 2) * size

    return tta_predict_points(predict_points, images.astype(jnp.float32) / 255.0, mats, chunk=chunk)


def predict_with_tta(model, variables, images, tta, batch_size: int, chunk: int = 16):
    """(points (N, 2, 2) in image pixels, spread (N,)) averaged over the TTA grid."""
    if len(images) == 0:
        return np.zeros((0, 2, 2)), np.zeros(0)
    mats = tta_matrices_from_config(tta, images.shape[1])
    points, spread = [], []
    for start in range(0, len(images), batch_size):
        p, s = _tta_batch(model.apply, variables, np.asarray(images[start:start + batch_size]), mats, chunk)
        points.append(np.asarray(p))
        spread.append(np.asarray(s))
    return np.concatenate(points), np.concatenate(spread)
