"""Batched JAX warp against the original's per-image scikit-image warp loop.

    python bench/bench_augment.py [--batch 16] [--size 256] [--repeats 10] [--dtype float32]

All contenders warp the same batch by the same random augmentation matrices
(the aligner's: scale, rotation, translation), constant fill 0, at both
interpolation orders: 0 (nearest, what training runs: config.Augment.interpolation,
as nolearn_utils' warp used order=0) and 1 (bilinear). The contenders:

- ours: `rightwhale.geometry.transforms.warp`, one jitted call for the batch;
- map_coordinates: `jax.scipy.ndimage.map_coordinates` on the same source
  coordinates, vmapped over images and channels and jitted (issue 15 asked
  whether it beats ours; its "constant" mode interpolates across the edge as
  skimage's does, so the two agree but for rounding);
- the peer: what nolearn_utils' iterator did, one `skimage.transform.warp` per image,
  which runs skimage's Cython loop (`_warp_fast`) channel by channel. Recent
  scikit-image takes that loop at orders 1 and 3 only; order 0 goes through
  scipy.ndimage.map_coordinates, several times slower than the loop the original
  had at order 0 (the 2015 releases used it for orders 0-3). So the peer calls the
  Cython loop itself, and today's `warp(order=0)` is shown beside it, not as the peer.

`augment_batch` end to end (draw flips and affines, warp at the configured
order, photometric) is timed against the peer loop at that order; with --dtype
uint8 it gets what the training step gives it (uint8 scaled to [0, 1] in the same
jit). JAX sides are compiled first and timed in steady state (block_until_ready).
Contenders are timed in alternating rounds and each ratio is the median of the
per-round ratios, which keeps it steady on a shared, busy machine. Target: peer /
ours >= 5.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import skimage
from jax.scipy.ndimage import map_coordinates
from skimage.transform import AffineTransform
from skimage.transform import warp as sk_warp
from skimage.transform._warps_cy import _warp_fast

from rightwhale.core.config import ALIGN_AUGMENT
from rightwhale.geometry.transforms import augment_batch, invert, sample_affine, warp


def interleaved_rounds(fns, repeats):
    """(repeats, len(fns)) seconds, the fns timed in alternation so shared-machine load hits all alike."""
    rounds = []
    for _ in range(repeats):
        times = []
        for fn in fns:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        rounds.append(times)
    return np.array(rounds)


def interleaved_times(fns, repeats):
    """(best seconds per fn, median over rounds of each fn's time / the first fn's); bench_tta uses it."""
    rounds = interleaved_rounds(fns, repeats)
    return rounds.min(axis=0), np.median(rounds / rounds[:, :1], axis=0)


def ratio(rounds, slow, fast):
    """Median over rounds of fn `slow`'s time / fn `fast`'s: how many times faster `fast` is."""
    return float(np.median(rounds[:, slow] / rounds[:, fast]))


def source_coordinates(mats, hw):
    """(B, 2, H, W): the (row, col) each output pixel reads, inv(M) q, as map_coordinates takes them."""
    h, w = hw
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    q = jnp.stack([xs, ys, jnp.ones_like(xs)])
    src = jnp.einsum("bij,jhw->bihw", invert(mats)[:, :2], q)
    return src[:, ::-1]


def map_coordinates_warp(order):
    """A jitted batch warp by jax.scipy.ndimage.map_coordinates: per image, per channel, constant 0."""
    per_channel = lambda plane, coords: map_coordinates(plane, list(coords), order=order, mode="constant", cval=0.0)
    per_image = lambda image, coords: jax.vmap(per_channel, in_axes=(2, None), out_axes=2)(image, coords)

    @jax.jit
    def run(images, mats):
        return jax.vmap(per_image)(images, source_coordinates(mats, images.shape[1:3]))
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dtype", choices=("float32", "uint8"), default="float32",
                        help="pixel type of the batch (the training step's images are uint8)")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    images = rng.uniform(size=(args.batch, args.size, args.size, 3)).astype(np.float32)
    if args.dtype == "uint8":
        images = np.round(images * 255).astype(np.uint8)
    augment = dataclasses.replace(ALIGN_AUGMENT, probability=1.0).rescaled(args.size)
    mats = sample_affine(jax.random.key(0), args.batch, augment, args.size)
    inverse_maps = [np.linalg.inv(np.asarray(m, np.float64)) for m in mats]
    device_images = jax.device_put(images)
    key = jax.random.key(1)
    n = args.batch

    def peer(order):
        """skimage's Cython warp loop per image and channel (what `skimage.transform.warp` ran in 2015)."""
        planes = np.asarray(images, np.float32 if args.dtype == "float32" else np.float64)
        if args.dtype == "uint8":
            planes = planes / 255.0                   # warp's img_as_float
        fast = _warp_fast["float32_t" if planes.dtype == np.float32 else "float64_t"]
        mats_as = [m.astype(planes.dtype) for m in inverse_maps]
        return lambda: [np.dstack([fast(im[..., c], m, order=order, mode="constant", cval=0.0)
                                   for c in range(im.shape[2])]) for im, m in zip(planes, mats_as)]

    def skimage_warp(order):
        """Today's `skimage.transform.warp` per image (order 0: the scipy.ndimage path)."""
        return lambda: [sk_warp(im, AffineTransform(matrix=m), order=order) for im, m in zip(images, inverse_maps)]

    print(f"batch {n} of {args.size}x{args.size}x3 {args.dtype}, {jax.devices()[0].platform}, "
          f"{args.repeats} interleaved rounds (best throughput, median ratio)")
    for order, name in ((0, "nearest"), (1, "bilinear")):
        mapped = map_coordinates_warp(order)
        run_ours = lambda: warp(device_images, mats, order=order).block_until_ready()
        run_mapped = lambda: mapped(device_images, mats).block_until_ready()
        differ = np.abs(np.asarray(run_ours(), np.float32) - np.asarray(run_mapped(), np.float32))  # compiles too
        fns = [run_ours, run_mapped, peer(order)] + ([skimage_warp(order)] if order == 0 else [])
        rounds = interleaved_rounds(fns, args.repeats)
        best = rounds.min(axis=0)
        agree = (f"map_coordinates differs at {(differ > 0).mean():.3%} of values (.5 ties: it rounds them "
                 f"away from zero, ours to even)" if order == 0 else
                 f"map_coordinates differs by {differ.max():.2g} at most (float32 arithmetic; uint8: rounding)")
        print(f"order {order} ({name}); {agree}")
        print(f"  jax warp (batched, jit)           {n / best[0]:8.1f} images/s")
        print(f"  jax map_coordinates (vmap, jit)   {n / best[1]:8.1f} images/s   "
              f"ours {ratio(rounds, 1, 0):.2f}x faster")
        print(f"  skimage warp loop, per image      {n / best[2]:8.1f} images/s")
        if order == 0:
            print(f"  skimage {skimage.__version__} warp(order=0)      {n / best[3]:8.1f} images/s   "
                  f"ours {ratio(rounds, 3, 0):.2f}x faster (not the peer: see the docstring)")
        print(f"  ratio skimage loop / jax warp     {ratio(rounds, 2, 0):8.2f}x  (target >= 5)")
        print(f"  ratio skimage loop / map_coords   {ratio(rounds, 2, 1):8.2f}x")

    order = augment.interpolation
    run_augment = lambda: augment_batch(key, device_images, augment)[0].block_until_ready()
    run_augment()                                                          # compile
    rounds = interleaved_rounds([run_augment, peer(order)], args.repeats)
    print(f"augment_batch (sample, flip, warp at order {order}, photometric; float32 out)")
    print(f"  jax augment_batch                 {n / rounds[:, 0].min():8.1f} images/s")
    print(f"  ratio skimage loop / augment      {ratio(rounds, 1, 0):8.2f}x")


if __name__ == "__main__":
    main()
