"""The reproduction reuses a finished step only when it is the step it would run (rightwhale.reproduce)."""
import json
import os

import pytest

from rightwhale.reproduce import _run_step


def finished_run(folder, data_dir, preset="cpu", epochs=60):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"data_dir": str(data_dir), "preset": preset,
                                                    "train": {"max_epochs": epochs}}))
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


def test_a_step_trained_on_crops_cut_again_since_is_refused(tmp_path):
    survey, crops = tmp_path / "survey", tmp_path / "crops"
    crops.mkdir()
    (crops / "source.json").write_text(json.dumps({"survey": str(survey)}))
    run = finished_run(tmp_path / "runs" / "classify", crops)
    later = (run / "results.json").stat().st_mtime + 60
    os.utime(crops / "source.json", (later, later))                            # align ran again
    with pytest.raises(SystemExit, match="crops that .* has replaced since"):
        _run_step(["--stage", "classify"], run, [], "cpu", survey)
