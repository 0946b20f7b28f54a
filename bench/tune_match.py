"""Choose matcher settings on the real training crops only: leave-one-out top-1 / top-5 of a fixed random
subset of them against the rest of the training gallery, never a validation crop. Each setting is a JSON
object of rightwhale.core.config.Match fields; the gallery of each (max_keypoints, crop_size, upright, cells)
is computed once and kept in --work. The descriptor whitening and keypoint weights, when on, are learnt from
the crops that are no query.

    python bench/tune_match.py '{}' '{"upright": false}' '{"max_keypoints": 800}' [--queries 1000]

Uses ../shared/data/rightwhale-heads and its stored split (the one every stage uses).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from rightwhale.core.config import stage_config
from rightwhale.scorers import match_run, matching
from rightwhale.stages import match
from rightwhale.stages.workspace import open_workspace

REAL_HEADS = Path(__file__).resolve().parents[2] / "shared" / "data" / "rightwhale-heads"


def training_gallery(heads: Path, work: Path, cfg) -> tuple[matching.Gallery, list[str]]:
    """The gallery of the stored split's training crops for these feature settings (raw RootSIFT, its cells
    learnt without whitening), and the classes."""
    m = cfg.match
    key = f"gallery_{m.max_keypoints}_{m.crop_size}_{int(m.upright)}_{m.cells}_{cfg.train.seed}.npz"
    ws = open_workspace(cfg, heads, work / "run", progress=False, log=lambda *a: None)
    if (work / key).is_file():
        return matching.Gallery.load(work / key), ws.labels_source.classes
    cache = ws.cache(cfg.match.crop_size)
    names = ws.present(cache)["train"]
    features, _ = match.extract(ws.survey, cache, names, cfg.match, True, "features")
    gallery = match.build_gallery(names, [ws.labels_source.train[n] for n in names], features,
                                  dataclasses.replace(cfg.match, whitening=False), cfg.train.seed)
    gallery.save(work / key)
    return gallery, ws.labels_source.classes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("settings", nargs="+", help="JSON objects of Match fields, e.g. '{\"radius\": 0.09}'")
    p.add_argument("--heads", type=Path, default=REAL_HEADS)
    p.add_argument("--queries", type=int, default=1000, help="training crops scored (fixed random subset)")
    p.add_argument("--work", type=Path, help="where gallery features are kept between runs (default: a temp dir)")
    args = p.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="tune_match_"))
    work.mkdir(parents=True, exist_ok=True)
    for setting in args.settings:
        cfg = stage_config("match", **json.loads(setting))
        gallery, classes = training_gallery(args.heads, work, cfg)
        labels = np.array([classes.index(w) for w in gallery.whales])
        queries = np.sort(np.random.default_rng(0).permutation(np.flatnonzero(match_run.matchable(
            labels, len(classes))))[:args.queries])
        rest = np.setdiff1d(np.arange(len(gallery)), queries)
        if cfg.match.whitening:             # learnt from the other crops' matches among themselves
            gallery = match_run.learn_space(gallery, cfg.match, cfg.train.seed, learn_from=rest)
        matcher = matching.Matcher(gallery, classes, cfg.match)
        if cfg.match.keypoint_weights:      # learnt from the other crops' votes, as the match stage learns them
            others = matching.Matcher(gallery.subset(rest), classes, cfg.match)
            matcher = matcher.with_weights(match_run.learn_keypoint_weights(
                others, [gallery.names[i] for i in rest], [gallery.features(i) for i in rest], labels[rest], False))
        start = time.perf_counter()
        scores = matching.score_matrix(matcher.score_many([gallery.features(i) for i in queries],
                                                          exclude=[gallery.names[i] for i in queries]), len(classes))
        ms = (time.perf_counter() - start) / len(queries) * 1000
        truth = scores[np.arange(len(queries)), labels[queries]]
        rank = (scores > truth[:, None]).sum(axis=1)
        print(f"{setting}: top-1 {np.mean(rank < 1):.1%}, top-5 {np.mean(rank < 5):.1%} "
              f"({len(queries)} training crops, {ms:.0f} ms per query)", flush=True)


if __name__ == "__main__":
    main()
