"""Batched test-time augmentation against the original's per-image loop.

    python bench/bench_tta.py [--batch 16] [--size 256] [--repeats 3]

Both sides run the same jitted point regressor over the same grid of 36
transforms (3 scales x 4 rotations x 3 translations, the classifier TTA grid
of scripts/predict_from_head_crop.py), on uint8 images as the cache holds
them: once the dot locator of the tests (the cost of TTA itself), once a
small conv net (which adds the same cost of reading every copy to both
sides). The peer is utils/test_time_augmentation.py's way: per image, warp
the T copies with scikit-image (float64 out), predict them as one batch,
map each prediction back through its transform in numpy, average. Ours:
`tta_predict_points` on the whole batch: one compiled warp of all B x T
copies (uint8 out), one regressor call, one compiled back-mapping.
Target: ratio >= 5.
"""
from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from bench_augment import interleaved_times  # bench/ is on sys.path when run as a script
from skimage.transform import AffineTransform
from skimage.transform import warp as sk_warp

from rightwhale.train.tta import tta_matrices, tta_predict_points


class TinyRegressor(nn.Module):
    """4x4 average pool, two convs, global average pool, 2 points: a stand-in aligner."""
    @nn.compact
    def __call__(self, x):
        n, h, w, c = x.shape
        x = x.reshape(n, h // 4, 4, w // 4, 4, c).mean(axis=(2, 4))
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = nn.relu(nn.Conv(16, (3, 3), strides=2)(x))
        return nn.Dense(4)(x.mean(axis=(1, 2))).reshape(-1, 2, 2) * 100.0 + 128.0


def in_unit_range(images):
    """uint8 copies (ours) and skimage's float copies in [0, 1] (the peer's) as float32 in [0, 1]."""
    return images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images.astype(jnp.float32)


def locate_dots(images):
    """The dot locator of the tests: intensity centre of mass of channels 0 and 1, (N, 2, 2)."""
    _, h, w, _ = images.shape
    weights = images[..., :2]
    cols, rows = weights.sum(axis=1), weights.sum(axis=2)            # (N, W, 2), (N, H, 2)
    total = cols.sum(axis=1)
    return jnp.stack([jnp.einsum("nwk,w->nk", cols, jnp.arange(w, dtype=jnp.float32)) / total,
                      jnp.einsum("nhk,h->nk", rows, jnp.arange(h, dtype=jnp.float32)) / total], axis=-1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    # uint8 as cached: a bright dot per image in channels 0 (bonnet) and 1 (blowhead), noise in channel 2
    rng = np.random.default_rng(0)
    images = np.zeros((args.batch, args.size, args.size, 3), np.uint8)
    images[..., 2] = rng.integers(0, 256, images.shape[:3])
    for b, (x0, y0, x1, y1) in enumerate(rng.integers(args.size // 4, 3 * args.size // 4, (args.batch, 4))):
        images[b, y0 - 2:y0 + 3, x0 - 2:x0 + 3, 0] = images[b, y1 - 2:y1 + 3, x1 - 2:x1 + 3, 1] = 255
    model = TinyRegressor()
    params = model.init(jax.random.key(0), jnp.zeros((1, args.size, args.size, 3)))
    regressors = {"dot locator": jax.jit(lambda x: locate_dots(in_unit_range(x))),
                  "small conv net": jax.jit(lambda x: model.apply(params, in_unit_range(x)))}
    mats = tta_matrices(args.size, scales=(0.9, 1.0, 1.1), rotations=(0.0, 90.0, 180.0, 270.0),
                        translations=(-12.0, 0.0, 12.0))
    inverse_maps = [np.linalg.inv(np.asarray(m, np.float64)) for m in mats]
    device_images = jax.device_put(images)
    n, t = args.batch, len(mats)
    print(f"batch {n} of {args.size}x{args.size}x3 uint8, {t} transforms each, {jax.devices()[0].platform}, "
          f"{args.repeats} interleaved rounds (best throughput, median ratio)")

    for name, predict in regressors.items():
        batched = lambda x, predict=predict: tta_predict_points(predict, x, mats)

        def per_image_loop(predict=predict):
            means = []
            for x in images:
                copies = np.stack([sk_warp(x, AffineTransform(matrix=m), order=1) for m in inverse_maps])
                pts = np.asarray(predict(copies.astype(np.float32)))
                back = [AffineTransform(matrix=m)(p) for m, p in zip(inverse_maps, pts)]
                means.append(np.mean(back, axis=0))
            return np.stack(means)

        ours = batched(device_images)[0].block_until_ready()            # compile
        peer = per_image_loop()                                         # compile predict at batch T
        best, ratio = interleaved_times([lambda: batched(device_images)[0].block_until_ready(), per_image_loop],
                                        args.repeats)
        print(f"  {name}: mean points agree to {np.abs(np.asarray(ours) - peer).max():.4f} px")
        print(f"    jax tta_predict_points (batched) {n / best[0]:8.2f} images/s")
        print(f"    per-image skimage loop           {n / best[1]:8.2f} images/s")
        print(f"    ratio                            {ratio[1]:8.2f}x  (target >= 5)")


if __name__ == "__main__":
    main()
