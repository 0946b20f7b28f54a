"""Batched JAX warp against the original's per-image scikit-image warp loop.

    python bench/bench_augment.py [--batch 16] [--size 256] [--repeats 10]

Both warp the same batch by the same random augmentation matrices (the
aligner's: scale, rotation, translation), bilinear, constant fill. The JAX
side is compiled and timed in steady state (block_until_ready); the peer is
what nolearn_utils' iterator did, one `skimage.transform.warp` per image.
The two are timed in alternating rounds and the ratio is the median of the
per-round ratios, which keeps it steady on a shared, busy machine.
Target: ratio >= 5.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import numpy as np
from skimage.transform import AffineTransform, warp as sk_warp

from rightwhale.config import ALIGN_AUGMENT
from rightwhale.transforms import augment_batch, sample_affine, warp


def interleaved_times(fns, repeats):
    """Seconds per run of each fn, timed in alternation so shared-machine load hits all alike.

    Returns (best seconds per fn, median over rounds of each fn's time / the first fn's).
    """
    rounds = []
    for _ in range(repeats):
        times = []
        for fn in fns:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        rounds.append(times)
    rounds = np.array(rounds)
    return rounds.min(axis=0), np.median(rounds / rounds[:, :1], axis=0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    images = rng.uniform(size=(args.batch, args.size, args.size, 3)).astype(np.float32)
    augment = dataclasses.replace(ALIGN_AUGMENT, probability=1.0).rescaled(args.size)
    mats = sample_affine(jax.random.key(0), args.batch, augment, args.size)
    inverse_maps = [np.linalg.inv(np.asarray(m, np.float64)) for m in mats]
    device_images = jax.device_put(images)

    key = jax.random.key(1)
    run_warp = lambda: warp(device_images, mats).block_until_ready()
    run_augment = lambda: augment_batch(key, device_images, augment)[0].block_until_ready()
    run_skimage = lambda: [sk_warp(im, AffineTransform(matrix=m), order=1) for im, m in zip(images, inverse_maps)]
    run_warp(), run_augment()                                            # compile
    best, ratio = interleaved_times([run_warp, run_augment, run_skimage], args.repeats)

    n = args.batch
    print(f"batch {n} of {args.size}x{args.size}x3 float32, {jax.devices()[0].platform}, "
          f"{args.repeats} interleaved rounds (best throughput, median ratio)")
    print(f"  jax warp (batched, jit)          {n / best[0]:8.1f} images/s")
    print(f"  jax augment_batch (sample+warp)  {n / best[1]:8.1f} images/s")
    print(f"  skimage warp, per-image loop     {n / best[2]:8.1f} images/s")
    print(f"  ratio skimage loop / jax warp    {ratio[2]:8.2f}x  (target >= 5)")


if __name__ == "__main__":
    main()
