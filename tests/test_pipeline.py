"""The pipeline end to end on a tiny generated survey: every stage, the ensemble, identify."""
import json
import math
import shutil
from dataclasses import asdict

import numpy as np
import pytest
from conftest import TINY as SURVEY

from rightwhale.__main__ import main as rightwhale_main
from rightwhale.cli.ensemble import main as ensemble_main
from rightwhale.cli.evaluate import evaluate
from rightwhale.core.config import Split
from rightwhale.core.records import EnsembleRecord, RunRecord
from rightwhale.ensemble.stacking import LogLinearPool, Stacker
from rightwhale.io.split import ensure_split, load_split, make_split
from rightwhale.io.submission import check_submission, read_submission
from rightwhale.io.survey import load_survey
from rightwhale.stages import main

TINY = ["--epochs", "1", "--batch-size", "4", "--no-progress"]
RUN_FILES = ["config.json", "best.msgpack", "last.msgpack", "history.json", "history.png", "report.md",
             "results.json"]


class Pipeline:
    """The tiny survey and one runs folder shared by the stage tests. `ensure` runs a step, after the
    steps it needs, once per module, so that each test can also run alone or in any order."""
    STEPS = {   # step: (the steps it needs, how to run it)
        "align": ((), lambda p: p.run("--stage", "align", "--image-size", "32", "--crop-size", "16")),
        "classify": (("align",), lambda p: p.run("--stage", "classify", "--image-size", "16")),
        "oxfordnet": (("align",), lambda p: p.run("--stage", "classify", "--image-size", "16",
                                                   "--model", "oxfordnet19_gap")),
        "localize": ((), lambda p: p.run("--stage", "localize", "--image-size", "32", "--crop-size", "16")),
        "classify boxes": (("localize",), lambda p: p.run("--stage", "classify", "--crops", "boxes",
                                                          "--image-size", "16")),
        "naive": ((), lambda p: p.run("--stage", "naive", "--image-size", "32")),
        "match": (("align",), lambda p: main(["--data-dir", str(p.survey), "--runs", str(p.runs), "--stage", "match",
                                               "--no-progress"])),   # no network: no epochs, no batch size
        "ensemble": (("classify", "oxfordnet"), lambda p: ensemble_main(
            ["--runs", *map(str, p.members), "--out", str(p.runs / "ensemble"), "--folds", "2"])),
    }

    def __init__(self, survey, runs):
        self.survey, self.runs, self.done = survey, runs, set()
        self.members = [runs / "classify-aligned-resnet19", runs / "classify-aligned-oxfordnet19_gap"]

    def run(self, *args, runs=None) -> int:
        return main(["--data-dir", str(self.survey), "--runs", str(runs or self.runs), *TINY, *args])

    def ensure(self, *steps) -> None:
        for step in steps:
            if step not in self.done:
                needs, run = self.STEPS[step]
                self.ensure(*needs)
                assert run(self) == 0, f"step {step} failed"
                self.done.add(step)


@pytest.fixture(scope="module")
def pipeline(make_survey, tmp_path_factory):
    return Pipeline(make_survey(), tmp_path_factory.mktemp("runs"))


def check_run(folder, extra, survey_dir, epochs=1):
    """The run folder's files, and what they hold: finite results within their bounds, one history record per
    epoch, and features.npz (where the run writes one) row for row with the stored split."""
    missing = [f for f in RUN_FILES + extra if not (folder / f).exists()]
    assert not missing, f"{folder} lacks {missing}"
    results = RunRecord.load(folder).figures
    survey = load_survey(survey_dir)
    split = load_split(survey)
    for key, value in results.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        assert math.isfinite(value) and value >= 0, (key, value)
        if any(word in key for word in ("accuracy", "IoU", "share")):
            assert value <= 1, (key, value)
        if isinstance(value, int) and ("photos" in key or "images" in key or "written" in key):
            assert value <= len(survey.train) + len(survey.test), (key, value)
    valid = results.get("validation images", results.get("validation photos"))
    assert valid == len(split.valid), (valid, len(split.valid))       # every photo of the stored split's valid
    if "log loss" in results:
        assert results["chance log loss (ln K)"] == pytest.approx(math.log(len(survey.classes)))
        assert results["top-1 accuracy"] <= results["top-5 accuracy"]
    history = json.loads((folder / "history.json").read_text())
    assert [r["epoch"] for r in history] == list(range(1, epochs + 1))
    assert all(math.isfinite(r[k]) and r[k] >= 0 for r in history for k in ("train_loss", "valid_loss", "seconds"))
    best = min(history, key=lambda r: r["valid_loss"])
    assert best["best"] and results["validation loss at the best epoch"] == pytest.approx(best["valid_loss"], rel=1e-5)
    if (folder / "features.npz").exists():
        with np.load(folder / "features.npz") as z:
            classes = z["classes"].tolist()
            assert classes == survey.classes
            width = z["train_features"].shape[1]
            for part, names in (("train", split.train), ("valid", split.valid), ("test", survey.test)):
                got = z[f"{part}_names"].tolist()
                assert sorted(got) == sorted(names), part           # every image of the split, once
                assert z[f"{part}_features"].shape == (len(got), width)
                probs = z[f"{part}_probabilities"]
                assert probs.shape == (len(got), len(classes)) and np.isfinite(z[f"{part}_features"]).all()
                np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
                if part != "test":
                    assert z[f"{part}_labels"].tolist() == [classes.index(survey.train[n]) for n in got]
    return results


def test_classify_before_align_names_the_fix(pipeline, tmp_path, capsys):
    assert pipeline.run("--stage", "classify", runs=tmp_path) == 2
    assert "python train.py --stage align" in capsys.readouterr().err


def test_align_writes_points_and_crops(pipeline):
    survey, runs = pipeline.survey, pipeline.runs
    pipeline.ensure("align")
    results = check_run(runs / "align", ["predictions.json", "points1.json", "points2.json", "valid_points.png",
                                         "aligned_crops.png", "crops/train.csv", "crops/source.json"], survey)
    assert results["TTA copies per photo"] == 12                        # the CPU preset's grid
    data = load_survey(survey)
    split = load_split(data)
    # every photo gets a crop: training photos from annotations, the rest from predictions (or the whole photo)
    assert results["head crops written"] == len(data.train) + len(data.test)
    predictions = json.loads((runs / "align" / "predictions.json").read_text())
    assert set(predictions) == set(split.valid) | set(data.test)
    assert all(np.isfinite(p["bonnet"]).all() and p["tta_spread_cache_px"] >= 0 for p in predictions.values())
    # the crops are cut from predicted pairs at least the training photos' median head length apart
    floor = results["median head length / photo width, training photos"] * SURVEY["width"]
    cut = {s: {e["filename"]: e["annotations"][0] for e in json.loads((runs / "align" / f).read_text())}
           for s, f in (("bonnet", "points1.json"), ("blowhead", "points2.json"))}
    lengths = [math.dist(*[(cut[s][n]["x"], cut[s][n]["y"]) for s in cut]) for n in predictions]
    assert 0 < floor < min(lengths) + 1e-3 and results["predicted pairs lengthened for cropping"] > 0


def test_classify_on_aligned_crops_writes_a_valid_submission(pipeline):
    survey, runs = pipeline.survey, pipeline.runs
    pipeline.ensure("classify")
    folder = runs / "classify-aligned-resnet19"
    results = check_run(folder, ["submission.csv", "features.npz", "valid_probabilities.csv", "valid_predictions.png"],
                        survey)
    check_submission(folder / "submission.csv", survey / "sample_submission.csv")
    data = load_survey(survey)
    split = load_split(data)
    # the stored split: disjoint, covering every training photo of the survey, and the one a fresh split of these
    # rows with the default settings gives (what the first stage stored, not something made up since)
    assert not set(split.train) & set(split.valid) and set(split.train) | set(split.valid) == set(data.train)
    assert 0 < len(split.valid) < len(split.train)
    assert split == make_split(data.train, **asdict(Split()))
    assert results["validation images"] == len(split.valid)
    predicted = set(json.loads((runs / "align" / "predictions.json").read_text()))   # what the aligner did not train on
    aligner_trained_on = set(data.train) - predicted
    assert all(data.points(n) is not None for n in data.train)      # so the aligner trained on all the rest
    with np.load(folder / "features.npz") as z:
        assert z["valid_features"].shape == (len(z["valid_names"]), 64)   # resnet19's GAP width
        # both stages read one split: the classifier trains on exactly the photos the aligner trained on and
        # validates on the survey's validation photos, whose crops were cut from the aligner's predictions
        assert set(z["train_names"]) == aligner_trained_on == set(split.train)
        assert set(z["valid_names"]) == set(split.valid) and set(z["valid_names"]) <= predicted
        assert set(z["test_names"]) == predicted - set(split.valid) == set(data.test)


def test_localize_then_box_classifier(pipeline):
    survey, runs = pipeline.survey, pipeline.runs
    pipeline.ensure("localize")
    results = check_run(runs / "localize", ["iou_histogram.png", "valid_boxes.png", "crops/train.csv"], survey)
    assert results["box crops written"] == len(load_survey(survey).train) + len(load_survey(survey).test)
    pipeline.ensure("classify boxes")
    check_submission(runs / "classify-boxes-resnet19" / "submission.csv", survey / "sample_submission.csv")


def test_naive_writes_saliency(pipeline):
    runs = pipeline.runs
    pipeline.ensure("naive")
    check_run(runs / "naive", ["saliency.png", "submission.csv", "features.npz"], pipeline.survey)
    images, classes, probs = read_submission(runs / "naive" / "submission.csv")
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-6)


def test_rerun_needs_continue_training(pipeline, capsys):
    pipeline.ensure("naive")
    capsys.readouterr()
    assert pipeline.run("--stage", "naive", "--image-size", "32") == 2
    assert "--continue-training" in capsys.readouterr().err
    assert pipeline.run("--stage", "naive", "--image-size", "24", "--continue-training") == 2
    assert "image_size: 32 -> 24" in capsys.readouterr().err


def test_stage_refuses_a_split_made_for_other_data(make_survey, tmp_path, capsys):
    survey = make_survey()
    ensure_split(load_survey(survey), Split())          # what the first stage stores
    rows = (survey / "train.csv").read_text().splitlines()
    (survey / "train.csv").write_text("\n".join(rows[:-3]) + "\n")
    assert main(["--stage", "align", "--data-dir", str(survey), "--runs", str(tmp_path), *TINY]) == 2
    assert "split.json" in capsys.readouterr().err


def test_ensemble_stacks_out_of_fold_features(pipeline):
    survey, runs, members = pipeline.survey, pipeline.runs, pipeline.members
    pipeline.ensure("ensemble")
    widths = []
    for member in members:   # out-of-fold: no stacked (validation) image was a training image of a member
        with np.load(member / "features.npz") as z:
            assert set(z["valid_names"]).isdisjoint(z["train_names"])
            widths.append(z["valid_features"].shape[1])
    results = RunRecord.load(runs / "ensemble").figures
    assert {r["model"] for r in results["table"]} >= {"plain average of the models",
                                                     "stacker, out-of-fold (nested 2-fold CV)"}
    check_submission(runs / "ensemble" / "submission.csv", survey / "sample_submission.csv")
    # new photos get the best of the four honest estimates
    losses = {r["model"]: r["log loss"] for r in results["table"]}
    best = results["best single model"]
    candidates = {"stacker": losses["stacker, out-of-fold (nested 2-fold CV)"],
                  "log-linear pool": losses["log-linear pool, out-of-fold (2-fold CV)"],
                  "plain average": losses["plain average of the models"], best: losses[best]}
    used = results["predictions from"]
    assert used == min(candidates, key=candidates.get)
    _, _, combined = read_submission(runs / "ensemble" / "submission.csv")
    members_probs = {m.name: read_submission(m / "submission.csv")[2] for m in members}
    if used == "log-linear pool":      # the submission is the pool of the members' submission rows
        pool = LogLinearPool.load(runs / "ensemble" / "pool.npz")
        expected = pool.predict_proba(np.stack(list(members_probs.values())))
    elif used != "stacker":
        expected = np.mean(list(members_probs.values()), axis=0) if used == "plain average" else members_probs[used]
    if used != "stacker":
        np.testing.assert_allclose(combined, expected, atol=1e-6)
    saved = Stacker.load(runs / "ensemble" / "stacker.npz")
    assert saved.coef_.shape[1] == sum(widths) == 64 + 128
    # fitted on the members' validation (out-of-fold) features, not on their training images: what the stacker
    # and the pool keep of their fitting rows (the prior of their labels, the stacker's feature means) is that of
    # the stored split's validation photos, rows gathered here by name from each member's features.npz
    from rightwhale.core.metrics import class_prior
    from rightwhale.core.records import load_features
    from rightwhale.ensemble.members import stack_features
    data = load_survey(survey)
    stored = load_split(data)
    pool = LogLinearPool.load(runs / "ensemble" / "pool.npz")
    info = EnsembleRecord.load(runs / "ensemble")
    for part, names in (("valid", stored.valid), ("train", stored.train)):
        labels = np.array([data.classes.index(data.train[n]) for n in names])
        rows = []
        for member in members:
            with np.load(member / "features.npz") as z:
                where = {n: i for i, n in enumerate(z[f"{part}_names"].tolist())}
                rows.append(z[f"{part}_features"][[where[n] for n in names]])
        same = part == "valid"
        assert np.allclose(saved.prior_, class_prior(labels, len(data.classes))) == same
        assert np.allclose(pool.prior_, class_prior(labels, len(data.classes))) == same
        assert np.allclose(saved.mean_, np.concatenate(rows, axis=1).mean(axis=0), atol=1e-5) == same
        # and refitting on those rows gives the stored fit back (on the training rows, another one)
        _, X, probs, y = stack_features([load_features(m) for m in members], part)
        assert len(y) == len(names)
        refit = Stacker(saved.num_classes, info.C, info.floor).fit(X, y)
        assert np.allclose(refit.coef_, saved.coef_, atol=1e-6) == same
        if same:          # (the pool's few weights may sit at a bound for either rows: compared where fitted)
            repooled = LogLinearPool().fit(probs, y, saved.num_classes)
            np.testing.assert_allclose(repooled.weights_, pool.weights_, atol=1e-6)
            assert repooled.floor == pytest.approx(pool.floor, abs=1e-6)


def test_identify_a_photo(pipeline, tmp_path, capsys):
    survey, runs = pipeline.survey, pipeline.runs
    pipeline.ensure("ensemble")
    capsys.readouterr()
    photo = survey / "imgs" / sorted(json.loads((runs / "align" / "predictions.json").read_text()))[0]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    status = rightwhale_main(["identify", str(photo), str(bad), "--runs-root", str(runs), "--top", "3",
                              "--out", str(tmp_path / "out")])
    assert status == 0
    out = capsys.readouterr()
    chosen = EnsembleRecord.load(runs / "ensemble")
    assert {"stacker": "stacked ensemble", "average": "average of 2 classifier(s)",
            "pool": "log-linear pool of the ensemble's runs"}.get(
        chosen.combination, f"{chosen.member}, the best of the ensemble's candidates") in out.out
    assert "TTA spread" in out.out and out.out.count("  1. whale_") == 1
    assert "broken.jpg: skipped" in out.err
    assert (tmp_path / "out" / f"{photo.stem}_crop.png").is_file()
    assert (tmp_path / "out" / f"{photo.stem}_candidates.png").is_file()


def test_identify_and_evaluate_with_the_matcher(pipeline, tmp_path, capsys):
    survey, runs = pipeline.survey, pipeline.runs
    pipeline.ensure("classify", "match")
    members = [runs / "classify-aligned-resnet19", runs / "match-aligned"]
    assert ensemble_main(["--runs", *map(str, members), "--out", str(tmp_path / "ens"), "--folds", "2"]) == 0
    photo = survey / "imgs" / sorted(json.loads((runs / "align" / "predictions.json").read_text()))[0]
    capsys.readouterr()
    assert rightwhale_main(["identify", str(photo), "--runs-root", str(runs), "--ensemble", str(tmp_path / "ens"),
                            "--out", str(tmp_path / "out"), "--top", "3"]) == 0
    result = json.loads((tmp_path / "out" / "identifications.json").read_text())["photos"][0]
    top = [whale for whale, _ in result["top"]]
    assert list(result["matcher inliers"]) == top          # the matcher's evidence for every candidate
    assert "matcher inliers" in capsys.readouterr().out
    scores = evaluate(runs / "match-aligned", runs / "align" / "crops", progress=False)
    split = load_split(load_survey(survey))
    assert scores["training images of the run left out"] == len(split.train)
    assert 0 <= scores["top-1 accuracy"] <= 1 and math.isfinite(scores["log loss"])


def test_classify_with_auxiliary_heads_then_evaluate(pipeline):
    survey, runs = pipeline.survey, pipeline.runs
    folder = runs / "classify-aux"
    pipeline.ensure("align", "localize")
    assert pipeline.run("--stage", "classify", "--image-size", "16", "--aux-targets", "--run-dir", str(folder)) == 0
    aux = json.loads((folder / "aux.json").read_text())
    assert aux["types"] >= 2 and aux["points"] == 4
    scores = evaluate(folder, runs / "align" / "crops", progress=False)
    split = load_split(load_survey(survey))
    # its own data: the training images are left out, the validation and labelled test crops scored
    assert scores["training images of the run left out"] == len(split.train)
    assert scores["images"] == len(split.valid) + len(load_survey(survey).test_labels)
    # crops cut from the same survey by another stage: still its training images are left out
    boxes = evaluate(folder, runs / "localize" / "crops", progress=False)
    assert boxes["training images of the run left out"] == len(split.train)
    # a folder with whales the run never saw: scored as misses, or left out when asked
    other = runs / "unseen-crops"
    shutil.copytree(runs / "align" / "crops", other)
    (other / "source.json").unlink()                              # a data set of its own
    rows = (other / "train.csv").read_text().splitlines()
    (other / "train.csv").write_text("\n".join([rows[0], *(r.split(",")[0] + ",whale_new" for r in rows[1:4]),
                                                *rows[4:]]) + "\n")
    for extra in ("test_labels.csv", "sample_submission.csv"):      # labels only from train.csv
        (other / extra).unlink()
    kept = evaluate(folder, other, progress=False)
    dropped = evaluate(folder, other, ignore_unseen=True, progress=False)
    assert kept["unseen-whale images"] == dropped["unseen images dropped"] == 3
    assert dropped["images"] == kept["images"] - 3 == len(rows) - 1 - 3
    assert dropped["log loss"] < kept["log loss"]


def test_align_and_classify_a_survey_without_test_photos(make_survey, tmp_path):
    """A researcher's labelled catalogue: no sample_submission.csv, so nothing to submit."""
    survey = make_survey()
    (survey / "sample_submission.csv").unlink()
    (survey / "test_labels.csv").unlink()
    args = ["--data-dir", str(survey), "--runs", str(tmp_path), *TINY]
    assert main(["--stage", "align", "--image-size", "32", "--crop-size", "16", *args]) == 0
    assert main(["--stage", "classify", "--image-size", "16", *args]) == 0
    assert not (tmp_path / "classify-aligned-resnet19" / "submission.csv").exists()
    assert RunRecord.load(tmp_path / "classify-aligned-resnet19").figures["validation images"] > 0


@pytest.mark.parametrize("stage, files, needs", [
    ("align", ["points1.json", "points2.json"], "bonnet and blowhead points"),
    ("localize", ["points1.json", "points2.json", "head_boxes.json"], "head boxes"),
])
def test_stage_without_annotations_fails_at_once(make_survey, tmp_path, capsys, stage, files, needs):
    survey = make_survey()
    for name in files:
        (survey / name).unlink()
    assert main(["--stage", stage, "--data-dir", str(survey), "--runs", str(tmp_path), *TINY]) == 2
    err = capsys.readouterr().err
    assert needs in err and "annotations/README.md" in err
    assert not list(survey.glob(".rightwhale/cache-*"))     # failed before decoding any photo


def test_a_copied_then_moved_runs_root_serves_its_own_runs(pipeline, tmp_path, capsys):
    survey, runs = pipeline.survey, pipeline.runs
    pipeline.ensure("ensemble")
    photo = survey / "imgs" / sorted(json.loads((runs / "align" / "predictions.json").read_text()))[0]
    copy = tmp_path / "copy"
    shutil.copytree(runs, copy)
    capsys.readouterr()
    assert rightwhale_main(["identify", str(photo), "--runs-root", str(copy), "--out", str(tmp_path / "a"),
                            "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert str((copy / "classify-aligned-resnet19").resolve()) in said and str(runs.resolve()) not in said
    moved = tmp_path / "moved"
    copy.rename(moved)
    assert rightwhale_main(["identify", str(photo), "--runs-root", str(moved), "--out", str(tmp_path / "b"),
                            "--no-progress"]) == 0
    assert str((moved / "classify-aligned-resnet19").resolve()) in capsys.readouterr().out
    first = json.loads((tmp_path / "a" / "identifications.json").read_text())["photos"][0]["top"]
    assert json.loads((tmp_path / "b" / "identifications.json").read_text())["photos"][0]["top"] == first


def test_a_second_writer_of_a_run_folder_is_refused(pipeline, tmp_path, capsys):
    import subprocess
    import sys
    pipeline.ensure("classify")
    folder = tmp_path / "run"
    shutil.copytree(pipeline.runs / "classify-aligned-resnet19", folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom rightwhale.core import runlock\n"
                               f"with runlock.hold({str(folder)!r}):\n    print('held', flush=True)\n"
                               "    time.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"        # another process writes into the folder
        capsys.readouterr()
        assert pipeline.run("--stage", "classify", "--image-size", "16", "--run-dir", str(folder),
                            "--continue-training") == 2
        assert f"in use by process {holder.pid}" in capsys.readouterr().err
        assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".lock"} == \
            {k: v for k, v in before.items() if k != ".lock"}                 # untouched
    finally:
        holder.kill()                   # killed, not released: the kernel frees its lock
        holder.wait()
    assert pipeline.run("--stage", "classify", "--image-size", "16", "--run-dir", str(folder),
                        "--continue-training", "--epochs", "2") == 0


def test_corrupt_artefacts_are_one_line_errors(pipeline, tmp_path, capsys):
    from rightwhale.cli.evaluate import main as evaluate_main
    survey, runs = pipeline.survey, pipeline.runs
    pipeline.ensure("ensemble")
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    run = copy / "classify-aligned-resnet19"
    photo = survey / "imgs" / sorted(json.loads((runs / "align" / "predictions.json").read_text()))[0]
    weights = (run / "best.msgpack").read_bytes()
    for damage in (weights[:len(weights) // 2], b"", weights[:500] + bytes(20000) + weights[20500:]):
        (run / "best.msgpack").write_bytes(damage)
        capsys.readouterr()
        assert evaluate_main(["--run", str(run), "--data-dir", str(copy / "align" / "crops")]) == 2
        assert f"{run / 'best.msgpack'}: corrupt checkpoint" in capsys.readouterr().err
        assert rightwhale_main(["identify", str(photo), "--runs-root", str(copy), "--out", str(tmp_path / "o"),
                                "--no-progress"]) == 2
        assert f"{run / 'best.msgpack'}: corrupt checkpoint" in capsys.readouterr().err
    features = (run / "features.npz").read_bytes()
    (run / "features.npz").write_bytes(features[:len(features) // 3])
    assert ensemble_main(["--runs", str(run), str(copy / "classify-aligned-oxfordnet19_gap"),
                          "--out", str(tmp_path / "ens")]) == 2
    assert f"{run / 'features.npz'}: unreadable" in capsys.readouterr().err


def test_the_final_six_model_ensemble_trains_what_is_missing(pipeline, tmp_path, monkeypatch):
    import rightwhale.stages
    from rightwhale.ensemble.members import FINAL_SIX
    pipeline.ensure("classify")
    root = tmp_path / "runs"
    trained_run = pipeline.runs / "classify-aligned-resnet19"
    for model in FINAL_SIX[:2]:                                  # two of the six trained already
        shutil.copytree(trained_run, root / f"classify-aligned-{model}")
    calls = []

    def fake_train(argv):        # stands in for `python train.py`: the real one is tested above
        calls.append(argv)
        shutil.copytree(trained_run, argv[argv.index("--run-dir") + 1])
        return 0
    monkeypatch.setattr(rightwhale.stages, "main", fake_train)
    assert ensemble_main(["--preset", "cpu", "--runs-root", str(root), "--out", str(tmp_path / "ens"),
                          "--folds", "2", "--train-flags", "--epochs 1 --no-progress"]) == 0
    assert [a[a.index("--model") + 1] for a in calls] == list(FINAL_SIX[2:])
    assert all(a[a.index("--preset") + 1] == "cpu" and a[-3:] == ["--epochs", "1", "--no-progress"] for a in calls)
    results = RunRecord.load(tmp_path / "ens").figures
    assert results["runs"] == [f"classify-aligned-{m}" for m in FINAL_SIX]


def test_process_1_of_several_hosts_writes_no_crops(tmp_path, monkeypatch):
    """The crop folder is swapped in by renames: only process 0 may (training itself cannot be simulated
    as process 1 of 2 on one host, so the guard is tested alone)."""
    import types

    import jax

    from rightwhale.stages.crops import write_crops
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    ws = types.SimpleNamespace(path=lambda name: tmp_path / name)      # any use of the workspace would fail
    assert write_crops(ws, "head", points={"w_1.jpg": np.zeros((2, 2))}) == {"count": 0, "fallback": 0}
    assert list(tmp_path.iterdir()) == []
