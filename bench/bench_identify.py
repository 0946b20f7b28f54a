"""A batch of head crops through `python -m rightwhale identify --crops`: minutes for the batch (target: 1,000
crops under 10 minutes on 2 cores), peak memory, and the ratio of its time per crop to the bare matcher's
query of the same crops in the same run (what the workflow adds: contact sheets, match pictures, records,
grouping, the review page; the batch also loads the run and builds its index, the bare matcher does not).

    python bench/bench_identify.py --run RUNS/match-rightwhale-heads [--crops 1000]

The crops are the run's validation crops first (not in its gallery), then its training crops.
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from rightwhale.cli.identify import main as identify_main
from rightwhale.io.images import read_image
from rightwhale.io.survey import load_survey
from rightwhale.scorers.match_run import MatchRun

PEER = 100      # crops the bare matcher scores


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, required=True, help="a match run (python train.py --stage match)")
    p.add_argument("--crops", type=int, default=1000, help="crops in the batch (default 1000)")
    args = p.parse_args(argv)
    run = MatchRun(args.run)
    survey = load_survey(run.crops_dir)
    names = sorted(survey.train, key=lambda n: n in run.trained_on)[:args.crops]     # validation crops first
    paths = [survey.image_path(n) for n in names]
    run.matcher                                    # the index is built once, outside the timing
    start = time.perf_counter()
    run.identify([read_image(path) for path in paths[:PEER]])
    bare = (time.perf_counter() - start) / min(PEER, len(paths))
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        identify_main([*map(str, paths), "--crops", "--runs", str(args.run), "--out", out, "--no-progress"])
        batch = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nbatch of {len(paths)} crops: {batch / 60:.1f} min ({batch / len(paths) * 1000:.0f} ms per crop); "
          f"peak memory {peak:.0f} MB")
    print(f"bare matcher (decode, features, query): {bare * 1000:.0f} ms per crop; the batch takes "
          f"{batch / len(paths) / bare:.2f}x that per crop")


if __name__ == "__main__":
    main()
