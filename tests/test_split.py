"""The one stored train/validation split (rightwhale.io.split)."""
import json
from collections import Counter

import numpy as np
import pytest
from test_data import LABELS, no_project_annotations, write_survey  # noqa: F401

from rightwhale.core import config
from rightwhale.core.errors import DataError
from rightwhale.io.split import SplitMismatch, ensure_split, fingerprint, load_split, main, make_split
from rightwhale.io.survey import Survey


def survey_labels(n_whales=60, seed=0):
    """Whales with 1 to 12 images each, several singletons, in shuffled row order."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 13, n_whales)
    counts[:7] = 1
    whales = [f"whale_{w:05d}" for w, c in enumerate(counts) for _ in range(c)]
    return {f"w_{i}.jpg": whales[i] for i in rng.permutation(len(whales))}


def test_split_is_stratified_and_keeps_every_whale_in_training():
    labels = survey_labels()
    split = make_split(labels, valid_fraction=0.15, seed=42)
    assert sorted(split.train + split.valid) == sorted(labels)
    assert not set(split.train) & set(split.valid)
    assert abs(len(split.valid) - round(0.15 * len(labels))) <= 1
    per_whale = Counter(labels.values())
    train_whales = Counter(labels[n] for n in split.train)
    valid_whales = Counter(labels[n] for n in split.valid)
    assert set(valid_whales) <= set(train_whales)                  # no whale only in validation
    assert all(train_whales[w] == 1 for w, c in per_whale.items() if c == 1)
    big = [w for w, c in per_whale.items() if c >= 10]
    assert all(1 <= valid_whales[w] <= 2 for w in big)             # proportional share
    assert split.train == [n for n in labels if n in set(split.train)]   # train.csv order


def test_split_is_deterministic_for_a_seed():
    labels = survey_labels()
    a = make_split(labels, seed=42)
    b = make_split(dict(reversed(list(labels.items()))), seed=42)      # row order is irrelevant
    assert set(a.valid) == set(b.valid) and a.fingerprint == b.fingerprint
    assert set(make_split(labels, seed=43).valid) != set(a.valid)
    assert make_split(labels, valid_fraction=0.0).valid == []
    with pytest.raises(ValueError, match="valid_fraction"):
        make_split(labels, valid_fraction=1.0)


def test_split_of_only_singletons_has_no_validation():
    labels = {f"w_{i}.jpg": f"whale_{i}" for i in range(10)}
    assert make_split(labels, valid_fraction=0.5).valid == []


def test_stored_split_is_reused_and_guarded(tmp_path):
    labels = survey_labels()
    survey = Survey(root=tmp_path, train=labels, test=[], classes=sorted(set(labels.values())))
    made = ensure_split(survey, config.Split())
    stored = json.loads((tmp_path / ".rightwhale" / "split.json").read_text())
    assert stored["fingerprint"] == fingerprint(survey) and stored["seed"] == 42
    assert ensure_split(survey, config.Split()) == made == load_split(survey)

    with pytest.raises(SplitMismatch, match="seed 42 and valid_fraction 0.15, but seed 7"):
        ensure_split(survey, config.Split(seed=7))
    with pytest.raises(SplitMismatch, match="valid_fraction 0.2 were asked"):
        ensure_split(survey, config.Split(valid_fraction=0.2))

    fewer = dict(list(labels.items())[:-3])
    changed = Survey(root=tmp_path, train=fewer, test=[], classes=survey.classes)
    n = len(labels)
    with pytest.raises(SplitMismatch, match=rf"different train.csv \({n} images vs {n - 3} in .*"
                                            "delete it to make a new split"):
        ensure_split(changed, config.Split())
    relabelled = Survey(root=tmp_path, train={**labels, "w_0.jpg": "whale_x"}, test=[],
                        classes=survey.classes)
    with pytest.raises(SplitMismatch):
        load_split(relabelled)


def test_missing_or_broken_split_file(tmp_path):
    survey = Survey(root=tmp_path, train=survey_labels(), test=[], classes=[])
    with pytest.raises(DataError, match="no stored split.*python -m rightwhale split --data-dir"):
        load_split(survey)
    (tmp_path / ".rightwhale").mkdir()
    (tmp_path / ".rightwhale" / "split.json").write_text("{not json")
    with pytest.raises(DataError, match="malformed split file.*delete it"):
        ensure_split(survey, config.Split())


def test_split_command_makes_then_checks_the_stored_split(tmp_path, capsys):
    root = write_survey(tmp_path / "survey", LABELS)
    assert main(["--data-dir", str(root)]) == 0
    made = capsys.readouterr().out
    assert "split.json:" in made and "training and" in made
    assert main(["--data-dir", str(root)]) == 0 and capsys.readouterr().out == made     # reused, not remade
    assert main(["--data-dir", str(root), "--seed", "7"]) == 2
    assert "seed 42" in capsys.readouterr().err
    assert main(["--data-dir", str(tmp_path / "nowhere")]) == 2
