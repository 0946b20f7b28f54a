"""Run records (rightwhale/core/records.py): written and read back typed, validated, older files still read."""
import json

import pytest

from rightwhale.core.errors import DataError
from rightwhale.core.records import AVERAGE, MEMBER, POOL, SCHEMA, EnsembleRecord, RunRecord


def test_a_run_record_reads_back_equal(tmp_path):
    record = RunRecord("align", "localize_pts_dec31", {"point error": 0.35, "notes": "text"}, seconds=12.5,
                       min_head_length=0.08)
    record.save(tmp_path)
    assert RunRecord.load(tmp_path) == record
    assert json.loads((tmp_path / "results.json").read_text())["schema"] == SCHEMA


def test_a_record_from_before_the_schema_still_reads(tmp_path):
    """Run folders made before the record (flat figures, the crop rule under its display name) stay usable."""
    (tmp_path / "config.json").write_text(json.dumps({"stage": "align", "model": "m"}))
    (tmp_path / "results.json").write_text(json.dumps({
        "point error": 0.3, "shortest predicted head for cropping / photo width": 0.07}))
    record = RunRecord.load(tmp_path)
    assert (record.stage, record.model, record.min_head_length) == ("align", "m", 0.07)
    assert record.figures["point error"] == 0.3 and record.seconds is None


@pytest.mark.parametrize("content, problem", [
    ("{not json", "unreadable run record"),
    ("[1, 2]", "not a run record"),
    (json.dumps({"schema": SCHEMA + 1, "stage": "a", "model": "b", "figures": {}}), "newer than this code"),
    (json.dumps({"schema": SCHEMA, "stage": "a", "model": "b", "figures": []}), "figures"),
    (json.dumps({"schema": SCHEMA, "stage": "a", "model": "b", "figures": {}, "min_head_length": "long"}),
     "min_head_length"),
])
def test_a_bad_run_record_names_its_file_and_problem(tmp_path, content, problem):
    (tmp_path / "results.json").write_text(content)
    with pytest.raises(DataError, match=problem) as e:
        RunRecord.load(tmp_path)
    assert str(tmp_path / "results.json") in str(e.value)


def test_a_missing_record_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="no run record"):
        RunRecord.load(tmp_path)


def test_an_ensemble_record_reads_back_and_resolves_its_members(tmp_path):
    out = tmp_path / "runs" / "ensemble"
    record = EnsembleRecord(["../a", "../b"], ["w1", "w2"], [3, 2], 0.03, 0.2, MEMBER, "b", {"a": 0.5, "b": 1.0})
    record.save(out)
    assert EnsembleRecord.load(out) == record
    assert record.member_dirs(out) == [(tmp_path / "runs" / n).resolve() for n in "ab"]


@pytest.mark.parametrize("use, expected", [("stacker", ("stacker", None)), ("log-linear pool", (POOL, None)),
                                           ("plain average", (AVERAGE, None)), ("resnet19", (MEMBER, "resnet19"))])
def test_an_ensemble_record_from_before_the_schema_maps_its_display_names(tmp_path, use, expected):
    (tmp_path / "stacker.json").write_text(json.dumps({"runs": ["../a", "../resnet19"], "classes": ["w1"],
                                                       "feature_dims": [1, 1], "C": 0.3, "floor": 0.05, "use": use}))
    record = EnsembleRecord.load(tmp_path)
    assert (record.combination, record.member) == expected


@pytest.mark.parametrize("change, problem", [({"combination": "vote"}, "unknown combination 'vote'"),
                                             ({"combination": MEMBER}, "names member None, not one of a"),
                                             ({"combination": MEMBER, "member": "b"}, "names member 'b'"),
                                             ({"member": "a"}, "takes no member"),
                                             ({"feature_dims": [1, 2]}, "2 feature sizes for 1 members"),
                                             ({"classes": "w1"}, "classes must be a list"),
                                             ({"schema": "1"}, "no version number"),
                                             ({"floor": 2.0}, "floor"), ({"classes": None}, "classes must be")])
def test_a_bad_ensemble_record_is_refused(tmp_path, change, problem):
    good = {"schema": SCHEMA, "members": ["../a"], "classes": ["w1"], "feature_dims": [1], "C": 0.3, "floor": 0.05,
            "combination": AVERAGE, "member": None}
    (tmp_path / "stacker.json").write_text(json.dumps(good | change))
    with pytest.raises(DataError, match=problem):
        EnsembleRecord.load(tmp_path)
