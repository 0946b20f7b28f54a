"""The synthetic survey: exact Kaggle layout, deterministic, Kaggle-like label table, points on the whale."""
from __future__ import annotations

import csv
import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rightwhale.io import synth

SMALL = dict(width=64, height=48, workers=1, progress=False)
LAYOUT = {"train.csv", "test_labels.csv", "sample_submission.csv", "whale_types.csv", "points1.json",
          "points2.json", "head_boxes.json", "survey.json", "imgs"}


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    return header, rows


def _sloth(path: Path) -> dict[str, dict]:
    entries = json.loads(path.read_text())
    assert all(e["class"] == "image" and len(e["annotations"]) == 1 for e in entries)
    return {e["filename"]: e["annotations"][0] for e in entries}


def test_every_file_of_the_layout_parses_and_agrees(tiny_survey):
    root = tiny_survey
    spec = json.loads((root / "survey.json").read_text())["spec"]
    assert {p.name for p in root.iterdir()} == LAYOUT
    assert not root.with_name(root.name + ".partial").exists()
    header, train = _rows(root / "train.csv")
    assert header == ["Image", "whaleID"]
    header, test_labels = _rows(root / "test_labels.csv")
    assert header == ["Image", "whaleID"]
    header, submission = _rows(root / "sample_submission.csv")
    classes = header[1:]
    assert header[0] == "Image" and classes == sorted(classes) == sorted({w for _, w in train})
    assert [r[0] for r in submission] == [r[0] for r in test_labels]
    assert all(math.isclose(sum(map(float, r[1:])), 1, rel_tol=1e-6) for r in submission)
    assert {w for _, w in test_labels} <= set(classes)         # test photos show known whales
    header, types = _rows(root / "whale_types.csv")
    assert header == ["whaleID", "pattern_type"] and [w for w, _ in types] == classes
    assert {int(t) for _, t in types} <= set(range(len(synth.PATTERN_TYPES)))

    names = [n for n, _ in train] + [n for n, _ in test_labels]
    assert len(set(names)) == len(names) and set(names) == {p.name for p in (root / "imgs").iterdir()}
    for name in names:
        with Image.open(root / "imgs" / name) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (spec["width"], spec["height"]))
            im.load()

    bonnets, blowheads, boxes = (_sloth(root / f) for f in ("points1.json", "points2.json", "head_boxes.json"))
    assert set(bonnets) == set(blowheads) == set(boxes) == {n for n, _ in train}   # annotated: training photos
    w, h = spec["width"], spec["height"]
    lo, hi = spec["head_range"]
    for name in bonnets:
        p1 = np.array([bonnets[name]["x"], bonnets[name]["y"]])
        p2 = np.array([blowheads[name]["x"], blowheads[name]["y"]])
        box = boxes[name]
        assert bonnets[name]["class"] == blowheads[name]["class"] == "point" and box["class"] == "rect"
        for x, y in (p1, p2):
            assert 0 <= x <= w - 1 and 0 <= y <= h - 1
            assert box["x"] <= x <= box["x"] + box["width"] and box["y"] <= y <= box["y"] + box["height"]
        assert box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= w - 1 + 1e-3
        assert box["y"] + box["height"] <= h - 1 + 1e-3
        assert lo * w - 1e-2 <= np.linalg.norm(p1 - p2) <= hi * w + 1e-2
    meta = json.loads((root / "survey.json").read_text())
    assert meta["train_photos"] == len(train) and meta["test_photos"] == len(test_labels)


def test_same_seed_same_bytes_whatever_the_workers(tiny_survey, make_survey):
    again = make_survey(workers=2)                     # the process pool, vs the fixture's serial run
    files = sorted(p.relative_to(tiny_survey) for p in tiny_survey.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (tiny_survey / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_a_different_seed_gives_a_different_survey():
    one = synth.plan_survey(synth.SurveySpec(whales=3, seed=0, width=64, height=48))
    two = synth.plan_survey(synth.SurveySpec(whales=3, seed=1, width=64, height=48))
    assert [w.whale_id for w in one.whales] != [w.whale_id for w in two.whales]
    assert [p.bonnet for p in one.photos] != [p.bonnet for p in two.photos]
    assert not np.array_equal(synth.render_photo(one, one.photos[0]), synth.render_photo(two, two.photos[0]))
    assert np.array_equal(synth.render_photo(one, one.photos[0]), synth.render_photo(one, one.photos[0]))


def test_default_label_table_looks_like_kaggle():
    survey = synth.plan_survey(synth.SurveySpec())          # 40 whales, 480x320; no pixels rendered
    train = Counter(p.whale for p in survey.photos if not p.test)
    test = Counter(p.whale for p in survey.photos if p.test)
    per_whale = np.array([train[w] for w in range(40)])
    assert 9 <= per_whale.mean() <= 11.5 and per_whale.min() == 1 and per_whale.max() >= 20
    assert 1 <= np.sum(per_whale == 1) <= 3                 # ~5% of whales have a single image
    assert 350 <= sum(train.values()) <= 450 and 150 <= sum(test.values()) <= 250
    assert set(test) <= {w for w in range(40) if train[w] >= 2}
    shared = sum(train[w] + test[w] for w in test)
    assert abs(sum(test.values()) / shared - 1 / 3) < 0.05
    # sightings: several per whale, never shared between whales, some mixing train and test
    owners = {}
    for p in survey.photos:
        assert owners.setdefault(p.sighting, p.whale) == p.whale
    assert len(owners) > 40
    mixed = {p.sighting for p in survey.photos if p.test} & {p.sighting for p in survey.photos if not p.test}
    assert len(mixed) >= 10
    # geometry: bonnet-blowhead distance like the real annotations, heading uniform
    d = np.array([np.hypot(*np.subtract(p.bonnet, p.blowhead)) for p in survey.photos]) / 480
    assert 0.075 <= np.median(d) <= 0.1 and 0.04 <= np.percentile(d, 10) <= 0.07
    assert 0.11 <= np.percentile(d, 90) <= 0.17
    heading = [math.atan2(p.blowhead[1] - p.bonnet[1], p.blowhead[0] - p.bonnet[0]) for p in survey.photos]
    quadrants = np.histogram(heading, bins=4, range=(-math.pi, math.pi))[0]
    assert quadrants.min() > 0.18 * len(heading)


def test_bonnet_point_sits_on_the_whale():
    """Callosity and skin are redder than the blue-green sea: check the pixels at the bonnet."""
    survey = synth.plan_survey(synth.SurveySpec(whales=3, seed=5, width=192, height=128, head_median=0.15,
                                                head_range=(0.12, 0.2)))
    for photo in survey.photos[:12]:
        img = synth.render_photo(survey, photo).astype(float)
        red_minus_blue = img[..., 0] - img[..., 2]
        bonnet, blowhead = np.array(photo.bonnet), np.array(photo.blowhead)
        x, y = np.round(bonnet + 0.08 * (blowhead - bonnet)).astype(int)  # just behind the tip
        on_head = red_minus_blue[y - 1:y + 2, x - 1:x + 2].mean()
        assert on_head > np.median(red_minus_blue) + 12, photo.name


def test_refuses_to_clobber_and_leaves_no_partial_directory(tmp_path, make_survey):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="mine.*not empty"):
        synth.generate_survey(foreign, whales=2, **SMALL)
    with pytest.raises(FileExistsError, match="not a synthetic survey"):
        synth.generate_survey(foreign, whales=2, overwrite=True, **SMALL)
    assert (foreign / "notes.txt").read_text() == "keep me"

    survey = make_survey(whales=2)
    stale = survey.with_name(survey.name + ".partial")
    (stale / "imgs").mkdir(parents=True)
    (stale / "survey.json").write_text("{}")               # an interrupted run with other parameters
    (stale / "imgs" / "w_999.jpg").write_bytes(b"junk")
    synth.generate_survey(survey, whales=3, overwrite=True, **SMALL)
    assert not stale.exists() and not (survey / "imgs" / "w_999.jpg").exists()
    assert json.loads((survey / "survey.json").read_text())["whales"] == 3


def test_cli_writes_survey_and_preview(tmp_path, capsys):
    out, png = tmp_path / "s", tmp_path / "preview.png"
    synth.main(["--out", str(out), "--whales", "2", "--width", "64", "--height", "48", "--workers", "1",
                "--preview", str(png)])
    assert (out / "train.csv").is_file()
    with Image.open(png) as im:                            # photos with bonnet and blowhead marks
        colours = {c for _, c in im.convert("RGB").getcolors(1 << 16)}
    assert {(255, 48, 48), (48, 192, 255)} <= colours
    for bad, message in ((["--test-fraction", "1.5"], "test_fraction must be in [0, 1)"),
                         (["--mean-photos", "3"], "mean_photos=3.0 is too small")):
        with pytest.raises(SystemExit) as exit_:
            synth.main(["--out", str(tmp_path / "t"), *bad])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_an_interrupted_run_resumes_with_the_photos_it_finished(tiny_survey, tmp_path, monkeypatch):
    out = tmp_path / "survey"
    partial = out.with_name("survey.partial")
    shutil.copytree(tiny_survey, partial)                             # as if killed before the rename,
    (partial / "imgs" / ".w_1.jpg.x1y2.tmp").write_bytes(b"half")     # with a half-written temp file
    monkeypatch.setattr(synth, "_jpeg", lambda *a: pytest.fail("re-rendered a finished photo"))
    spec = json.loads((tiny_survey / "survey.json").read_text())["spec"]
    synth.generate_survey(out, workers=1, progress=False, **spec)
    assert (out / "train.csv").read_bytes() == (tiny_survey / "train.csv").read_bytes()
    names = [sorted(p.name for p in (root / "imgs").iterdir()) for root in (out, tiny_survey)]
    assert names[0] == names[1]
