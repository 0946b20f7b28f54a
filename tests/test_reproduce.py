"""The reproduction reuses a finished step only when it is the step it would run (rightwhale.cli.reproduce)."""
import json
import os

import pytest

from rightwhale.cli import reproduce
from rightwhale.cli.reproduce import _run_step
from rightwhale.core.config import stage_config
from rightwhale.core.records import AVERAGE, MEMBER, STACKER, EnsembleRecord, RunRecord


def finished_run(folder, data_dir, preset="cpu", epochs=60, **settings):
    folder.mkdir(parents=True)
    cfg = stage_config("classify", preset, max_epochs=epochs, **settings).to_dict()
    (folder / "config.json").write_text(json.dumps({"data_dir": str(data_dir), **cfg}))
    (folder / "results.json").write_text(json.dumps({"log loss": 1.5}))
    (folder / "history.json").write_text(json.dumps([{"seconds": 30.0}, {"seconds": 90.0}]))
    return folder


def test_finished_step_is_reused_with_its_training_minutes(tmp_path):
    survey, crops = tmp_path / "survey", tmp_path / "crops"
    crops.mkdir()
    (crops / "source.json").write_text(json.dumps({"survey": str(survey)}))    # crops name their survey
    run = finished_run(tmp_path / "runs" / "classify", crops)
    assert _run_step(["--stage", "classify"], run, [], "cpu", survey) == ({"log loss": 1.5}, 2.0)


@pytest.mark.parametrize("args, preset, survey", [
    (["--stage", "classify"], "original", "survey"),              # another preset
    (["--stage", "classify"], "cpu", "other"),                    # another survey
    (["--stage", "classify", "--epochs", "25"], "cpu", "survey"),  # another epoch count
])
def test_a_step_made_differently_is_refused(tmp_path, args, preset, survey):
    run = finished_run(tmp_path / "runs" / "classify", tmp_path / "survey")
    with pytest.raises(SystemExit, match="another preset, data or epoch count"):
        _run_step(args, run, [], preset, tmp_path / survey)


def test_a_step_trained_with_other_settings_than_the_code_s_is_refused(tmp_path):
    run = finished_run(tmp_path / "runs" / "classify", tmp_path / "survey", l2_gamma=False)   # before issue 13
    with pytest.raises(SystemExit, match=r"other settings than this code's \(train.l2_gamma: False -> True\)"):
        _run_step(["--stage", "classify"], run, [], "cpu", tmp_path / "survey")


def test_a_step_trained_on_crops_cut_again_since_is_refused(tmp_path):
    survey, crops = tmp_path / "survey", tmp_path / "crops"
    crops.mkdir()
    (crops / "source.json").write_text(json.dumps({"survey": str(survey)}))
    run = finished_run(tmp_path / "runs" / "classify", crops)
    later = (run / "results.json").stat().st_mtime + 60
    os.utime(crops / "source.json", (later, later))                            # align ran again
    with pytest.raises(SystemExit, match="crops that .* has replaced since"):
        _run_step(["--stage", "classify"], run, [], "cpu", survey)


@pytest.mark.parametrize("used, marked", [((STACKER, None), "stacker, out-of-fold (nested 5-fold CV)"),
                                          ((AVERAGE, None), "plain average of the models"),
                                          ((MEMBER, "a"), "best single model, a")])
def test_the_ensemble_row_used_for_new_photos_is_marked(monkeypatch, tmp_path, used, marked):
    table = [{"model": m, "log loss": 1.0, "log loss / ln K": 0.5, "top-1 accuracy": 0.5}
             for m in ("a", "b", "plain average of the models", "stacker, out-of-fold (nested 5-fold CV)")]

    def fake_ensemble(runs, out):
        EnsembleRecord(["../a", "../b"], ["w1"], [1, 1], 0.03, 0.2, *used).save(out)
        return RunRecord("ensemble", "a+b", {"table": table}, seconds=6.0)
    monkeypatch.setattr(reproduce, "run_ensemble", fake_ensemble)
    rows = reproduce._ensemble_rows([tmp_path / "a", tmp_path / "b"], tmp_path / "ensemble", "ensemble")
    assert [r["step"] for r in rows if "used for new photos" in r["step"]] == [f"ensemble: {marked} (used for new photos)"]
    assert not any(r["step"].endswith(": b") for r in rows)            # members keep their own rows


def test_an_ensemble_is_remade_only_when_a_member_is_newer(monkeypatch, tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    for r in runs:
        r.mkdir()
        (r / "features.npz").write_bytes(b"")
    made = []
    table = [{"model": "plain average of the models", "log loss": 1.0, "log loss / ln K": 0.5, "top-1 accuracy": 0.5}]

    def fake_ensemble(members, out):
        made.append(out)
        out.mkdir(exist_ok=True)
        EnsembleRecord([f"../{m.name}" for m in members], ["w1"], [1] * len(members), 0.03, 0.2, AVERAGE).save(out)
        record = RunRecord("ensemble", "+".join(m.name for m in members), {"table": table}, seconds=6.0)
        record.save(out)
        return record
    monkeypatch.setattr(reproduce, "run_ensemble", fake_ensemble)
    out = tmp_path / "ensemble"
    reproduce._ensemble_rows(runs, out, "e")
    reproduce._ensemble_rows(runs, out, "e")                      # reused
    assert len(made) == 1
    later = (out / "results.json").stat().st_mtime + 60
    os.utime(runs[1] / "features.npz", (later, later))             # b trained again
    reproduce._ensemble_rows(runs, out, "e")
    reproduce._ensemble_rows(runs[:1], out, "e")                  # other members
    assert len(made) == 3


def test_a_stepdecay_step_trained_for_fewer_epochs_is_reused(tmp_path):
    """--epochs sets the StepDecay's span, so a run made with it has the settings this code gives it."""
    run = finished_run(tmp_path / "runs" / "classify", tmp_path / "survey", epochs=25, model="resnet31")
    assert _run_step(["--stage", "classify", "--model", "resnet31", "--epochs", "25"], run, [], "cpu",
                     tmp_path / "survey") == ({"log loss": 1.5}, 2.0)
