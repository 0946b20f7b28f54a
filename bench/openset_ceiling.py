"""How far the new-whale score can separate new whales, given how often the matcher names known ones right.

    python bench/openset_ceiling.py runs/match-rightwhale-heads

A new whale looks like a known crop the matcher cannot match. From a match run's validation scores
(every crop's whale is in the gallery), a crop's scores with its own whale's column set to zero stand in
for the same crop of a whale the catalogue lacks (what leaving the whale out changes beyond its own votes,
the LNBNN normaliser, is ignored). The ROC AUC is then split into the known crops the matcher names right
and those it names wrong: if the score separates the first well and the second no better than a coin, the
matcher's top-1 bounds the AUC, and only a better matcher raises it.
"""
import argparse
from pathlib import Path

import numpy as np

from rightwhale.core import atomic
from rightwhale.scorers import novelty


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path, help="a match run folder (python train.py --stage match)")
    args = p.parse_args(argv)
    z = atomic.read_npz(args.run / "features.npz", ["valid_features", "valid_labels"],
                        f"python train.py --stage match --run-dir {args.run}")
    scores, labels = z["valid_features"].astype(np.float64), z["valid_labels"]
    right = scores.argmax(axis=1) == labels
    left_out = scores.copy()
    left_out[np.arange(len(labels)), labels] = 0.0
    known, new = novelty.novelty_score(scores), novelty.novelty_score(left_out)
    auc_right, auc_wrong = novelty._auc(known[right], new), novelty._auc(known[~right], new)
    print(f"{len(labels)} validation crops; matcher top-1 {right.mean():.1%}")
    print(f"new-whale ROC AUC (own whale's column removed): {novelty._auc(known, new):.3f}")
    print(f"  known crops named right vs new: {auc_right:.3f}; named wrong vs new: {auc_wrong:.3f}")
    needed = (0.9 - auc_wrong) / (auc_right - auc_wrong)
    print(f"AUC 0.9 at these two figures needs top-1 {needed:.0%}")


if __name__ == "__main__":
    main()
