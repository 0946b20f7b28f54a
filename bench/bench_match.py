"""The matcher on real head crops: feature extraction and query milliseconds per crop against the full
3,610-crop gallery, and the approximate index (faiss IVF, 8-bit) against exact search in the same run:
top-1 / top-5 of leave-one-out queries and the speed ratio. Targets: query < 100 ms, extraction < 30 ms,
approximate within 1 point of exact; the gallery's memory is printed.

    python bench/bench_match.py [--heads DIR] [--queries 150]

Uses ../shared/data/rightwhale-heads (imgs/ + train.csv).
"""
from __future__ import annotations

import argparse
import dataclasses
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from rightwhale.core import metrics
from rightwhale.core.config import stage_config
from rightwhale.io.cache import build_cache
from rightwhale.io.survey import load_survey
from rightwhale.scorers import match_run, matching
from rightwhale.stages.match import build_gallery

REAL_HEADS = Path(__file__).resolve().parents[2] / "shared" / "data" / "rightwhale-heads"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--heads", type=Path, default=REAL_HEADS)
    p.add_argument("--queries", type=int, default=150, help="leave-one-out queries timed (random crops)")
    p.add_argument("--probes", type=int, help="IVF cells searched (default: the configuration's)")
    p.add_argument("--kinds", nargs="+", default=["ivf", "exact"], choices=["ivf", "exact", "jax"],
                   help="indexes to compare (default ivf exact)")
    args = p.parse_args(argv)
    cfg = stage_config("match").match
    if args.probes:
        cfg = dataclasses.replace(cfg, probes=args.probes)
    survey = load_survey(args.heads)
    cache = build_cache(args.heads, cfg.crop_size, progress=False)
    names = [n for n in survey.train if n in cache.names]      # all 3,610 crops: the gallery and the queries
    images = [cache.images[cache.index(n)] for n in names]

    started = time.perf_counter()
    features, _ = matching.extract(images, names, cfg.max_keypoints, cfg.upright, progress=False)
    extract_ms = (time.perf_counter() - started) / len(names) * 1000
    gallery = build_gallery(names, [survey.train[n] for n in names], features, cfg, seed=0)
    with tempfile.TemporaryDirectory() as tmp:     # stored and loaded back, index built: what identify waits for
        gallery.save(Path(tmp) / "gallery.npz")
        started = time.perf_counter()
        matching.Matcher(matching.Gallery.load(Path(tmp) / "gallery.npz"), sorted(set(gallery.whales)), cfg)
        load_s = time.perf_counter() - started
    print(f"gallery: {len(gallery)} crops, {len(gallery.descriptors)} descriptors; arrays "
          f"{gallery.nbytes() / 2**20:.0f} MB (+ the IVF index's 8-bit codes, "
          f"{len(gallery.descriptors) * matching.DIM / 2**20:.0f} MB)")
    print(f"gallery load + index build: {load_s:.1f} s")
    print(f"feature extraction: {extract_ms:.1f} ms per crop ({cfg.crop_size} px, target < 30)")

    classes = sorted(set(gallery.whales))
    labels = np.array([classes.index(w) for w in gallery.whales])
    others = match_run.matchable(labels, len(classes))      # a whale with another crop can be found at all
    rng = np.random.default_rng(0)
    pick = rng.choice(np.flatnonzero(others), min(args.queries, int(others.sum())), replace=False)
    results = {}
    for kind in args.kinds:
        matcher = matching.Matcher(gallery, classes, dataclasses.replace(cfg, index=kind))
        started = time.perf_counter()
        scores = matching.score_matrix(matcher.score_many([features[i] for i in pick], exclude=[names[i] for i in pick]),
                         len(classes))
        ms = (time.perf_counter() - started) / len(pick) * 1000
        results[kind] = ms
        print(f"{kind:>5}: query {ms:.1f} ms per crop; leave-one-out top-1 "
              f"{metrics.top_k_accuracy(scores, labels[pick], 1):.1%}, top-5 "
              f"{metrics.top_k_accuracy(scores, labels[pick], 5):.1%} ({len(pick)} queries)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory of this process (every crop's features, the gallery, the indexes compared): {peak:.0f} MB")
    if {"ivf", "exact"} <= results.keys():
        print(f"ivf ({cfg.probes} of {cfg.cells} cells) / exact speed: {results['exact'] / results['ivf']:.1f}x "
              f"faster; query + extraction {results['ivf'] + extract_ms:.0f} ms per crop (target < 100 query)")


if __name__ == "__main__":
    main()
