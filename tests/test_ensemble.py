"""ensemble.py picks, for new photos, the lowest held-out loss of the stacker, the pool, the average and one model."""
import json

import numpy as np

from rightwhale.core.records import EnsembleRecord, RunRecord
from rightwhale.ensemble.members import choice_name
from rightwhale.stages.ensemble import run_ensemble


def fake_run(folder, probs_of, rng, k=4, per_class=10):
    """A finished classify run: features.npz whose probabilities come from probs_of(labels)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"data_dir": str(folder.parent / "survey")}))
    arrays = {"classes": np.array([f"whale_{c}" for c in range(k)])}
    for split in ("train", "valid"):
        labels = np.repeat(np.arange(k), per_class)
        arrays |= {f"{split}_names": np.array([f"{split}_{i}.jpg" for i in range(len(labels))]),
                   f"{split}_labels": labels, f"{split}_probabilities": probs_of(labels),
                   f"{split}_features": rng.normal(size=(len(labels), 8)).astype(np.float32)}
    np.savez(folder / "features.npz", **arrays)
    return folder


def test_a_member_much_better_than_the_rest_is_used_alone(tmp_path):
    rng = np.random.default_rng(0)
    sharp = lambda y: np.where(np.eye(4)[y] == 1, 0.9, 0.1 / 3)     # 0.9 on the true whale
    flat = lambda y: np.full((len(y), 4), 0.25)
    runs = [fake_run(tmp_path / "sharp", sharp, rng), fake_run(tmp_path / "flat", flat, rng)]
    record = run_ensemble(runs, tmp_path / "ensemble", folds=2, log=lambda line: None)
    results = record.figures
    assert record == RunRecord.load(tmp_path / "ensemble") and record.stage == "ensemble"
    losses = {r["model"]: r["log loss"] for r in results["table"]}
    assert losses["sharp"] < losses["plain average of the models"] < losses["flat"]
    assert results["best single model"] == "sharp"
    # the lowest held-out loss wins: sharp alone, or the pool, which can only weigh sharp (flat says nothing)
    held_out = {"sharp": losses["sharp"], "plain average": losses["plain average of the models"],
                "stacker": losses["stacker, out-of-fold (nested 2-fold CV)"],
                "log-linear pool": losses["log-linear pool, out-of-fold (2-fold CV)"]}
    assert results["predictions from"] == min(held_out, key=held_out.get) in ("sharp", "log-linear pool")
    chosen = EnsembleRecord.load(tmp_path / "ensemble")
    assert choice_name(chosen.combination, chosen.member) == results["predictions from"]
    assert (chosen.combination, chosen.member) in (("member", "sharp"), ("pool", None))
