"""The local-feature matcher: features, the growing gallery, leave-one-out, calibration, the match stage."""
import json

import numpy as np
import pytest
from conftest import TINY

from rightwhale.cli.catalogue import main as catalogue_main
from rightwhale.cli.ensemble import main as ensemble_main
from rightwhale.core.config import Match
from rightwhale.core.errors import DataError
from rightwhale.core.records import RunRecord
from rightwhale.io.crop_folders import crop_data_dir
from rightwhale.scorers import matching
from rightwhale.scorers.match_run import MatchRun
from rightwhale.stages import main as train_main

EXACT = Match(index="exact", shortlist=3)


def random_features(rng, n=40, offset=0.0):
    kp = np.concatenate([rng.random((n, 2)), rng.random((n, 1)) * 0.05, rng.random((n, 1)) * 360], axis=1)
    desc = np.sqrt(rng.dirichlet(np.ones(matching.DIM) * 0.3, n)) + offset
    return matching.Features(kp.astype(np.float32), np.clip(np.round(desc * 255), 0, 255).astype(np.uint8))


def jittered(rng, f, noise=0.004):
    """The same pattern seen again: keypoints moved a little, descriptors perturbed."""
    desc = np.clip(f.descriptors.astype(int) + rng.integers(-6, 7, f.descriptors.shape), 0, 255).astype(np.uint8)
    return matching.Features(f.keypoints + np.float32(noise) * np.array([1, 1, 0, 0], np.float32), desc)


@pytest.fixture(scope="module")
def catalogue():
    """Five whales of three sightings each: a sighting is its whale's pattern, jittered."""
    rng = np.random.default_rng(0)
    patterns = [random_features(rng) for _ in range(5)]
    names, whales, feats = [], [], []
    for w, pattern in enumerate(patterns):
        for s in range(3):
            names.append(f"w_{w}_{s}.jpg"), whales.append(f"whale_{w}"), feats.append(jittered(rng, pattern))
    return names, whales, feats, [f"whale_{w}" for w in range(5)], rng


def test_rootsift_features_of_a_textured_crop():
    rng = np.random.default_rng(1)
    crop = (np.kron(rng.random((20, 20)), np.ones((8, 8))) * 255).astype(np.uint8)[..., None].repeat(3, 2)
    f = matching.crop_features(crop, max_keypoints=50)
    assert 10 <= len(f) <= 50
    assert f.descriptors.dtype == np.uint8 and f.keypoints.shape == (len(f), 4)
    assert (0 <= f.keypoints[:, :2]).all() and (f.keypoints[:, :2] <= 1).all()
    root = matching.as_float(f.descriptors)                   # RootSIFT: unit L2 norm
    assert np.allclose(np.linalg.norm(root, axis=1), 1, atol=0.03)
    assert not len(matching.crop_features(np.full((64, 64, 3), 128, np.uint8), 50))   # blank: no features


def test_matcher_finds_the_right_whale_and_never_itself(catalogue):
    names, whales, feats, classes, rng = catalogue
    gallery = matching.Gallery.empty().add(names, whales, feats)
    matcher = matching.Matcher(gallery, classes, EXACT)
    loo = matcher.score_many(feats, exclude=names)
    assert all(int(np.argmax(q.scores)) == i // 3 for i, q in enumerate(loo))
    for i, q in enumerate(loo):       # leave-one-out: no pair of the query with its own crop
        assert i not in q.pairs and i not in q.best_image.values()
    # leave-one-out equals scoring against the gallery without that crop
    rest = matching.Gallery.empty().add(names[1:], whales[1:], feats[1:])
    alone = matching.Matcher(rest, classes, EXACT).score(feats[0])
    np.testing.assert_allclose(loo[0].scores, alone.scores)
    # a shuffled pattern (same descriptors, other places) loses its geometric support
    moved = matching.Features(feats[0].keypoints[rng.permutation(len(feats[0]))], feats[0].descriptors)
    assert matcher.score(moved, exclude=names[0]).scores.max() < 0.5 * loo[0].scores.max()


def test_grown_gallery_scores_like_one_built_at_once(catalogue, tmp_path):
    names, whales, feats, classes, rng = catalogue
    whole = matching.Gallery.empty().add(names, whales, feats)
    whole.centroids = matching.train_centroids(whole.descriptors, 8)
    part = matching.Gallery.empty().add(names[:9], whales[:9], feats[:9])
    part.centroids = whole.centroids
    part.save(tmp_path / "g.npz")
    grown = matching.Gallery.load(tmp_path / "g.npz").add(names[9:], whales[9:], feats[9:])
    query = jittered(rng, feats[10])
    for kind in ("ivf", "exact"):
        cfg = Match(index=kind, shortlist=3, probes=2)
        a = matching.Matcher(whole, classes, cfg).score(query)
        b = matching.Matcher(grown, classes, cfg).score(query)
        np.testing.assert_array_equal(a.scores, b.scores)
    with pytest.raises(DataError, match="already present"):
        grown.add(names[:1], whales[:1], feats[:1])


def test_corrupt_gallery_names_the_file(catalogue, tmp_path):
    names, whales, feats, _, _ = catalogue
    path = tmp_path / "g.npz"
    matching.Gallery.empty().add(names, whales, feats).save(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match="g.npz"):
        matching.Gallery.load(path)
    path.write_bytes(b"")
    with pytest.raises(DataError, match="g.npz"):
        matching.Gallery.load(path)


def test_exact_search_in_jax_equals_faiss():
    rng = np.random.default_rng(3)
    g = rng.random((300, matching.DIM)).astype(np.float32)
    q = rng.random((17, matching.DIM)).astype(np.float32)
    d_jax, i_jax = matching.exact_knn_jax(q, g, 5, chunk=128)      # three chunks, the last padded
    faiss = matching._faiss()
    index = faiss.IndexFlatL2(matching.DIM)
    index.add(g)
    d_ref, i_ref = index.search(q, 5)
    np.testing.assert_array_equal(i_jax, i_ref)
    np.testing.assert_allclose(d_jax, d_ref, rtol=1e-4, atol=1e-3)


def test_calibration_is_a_probability_and_sharpens_separable_scores():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 6, 60)
    scores = rng.random((60, 6)) + 3.0 * np.eye(6)[labels]
    cal = matching.calibrate(scores, labels, np.full(6, 1 / 6))
    p = cal.probabilities(scores)
    assert np.isfinite(p).all() and np.allclose(p.sum(axis=1), 1)
    assert p[np.arange(60), labels].mean() > 0.8


# --- the match stage on a tiny survey --------------------------------------------------------------

@pytest.fixture(scope="module")
def crops(make_survey, tmp_path_factory):
    """Head crops (64 px) cut from the annotated points of a tiny survey with larger photos."""
    survey = make_survey(width=480, height=320)
    out = tmp_path_factory.mktemp("crops") / "crops"
    crop_data_dir(survey, out, 64, 64, progress=False)
    return survey, out


def test_match_stage_identifies_annotated_crops(crops, tmp_path):
    survey, out = crops
    assert train_main(["--stage", "match", "--crops", str(out), "--runs", str(tmp_path), "--no-progress"]) == 0
    run = tmp_path / "match-crops"
    results = RunRecord.load(run).figures
    # 6 whales, chance 1/6: the embedded survey's crops are easy for local features (a few wrong
    # answers of 6-8 validation crops would still pass at 0.6, chance would not)
    assert results["top-1 accuracy"] >= 0.6 and results["classes"] == TINY["whales"]
    assert results["log loss"] < 0.5 * results["chance log loss (ln K)"]
    with np.load(run / "features.npz") as z:
        for split in ("train", "valid"):
            p = z[f"{split}_probabilities"]
            assert np.isfinite(p).all() and np.allclose(p.sum(axis=1), 1)
        assert z["train_features"].shape == (len(z["train_names"]), TINY["whales"])
        train_names = z["train_names"].tolist()
    assert matching.Gallery.load(run / "gallery.npz").names == train_names
    for f in ("report.md", "valid_matches.png", "valid_probabilities.csv", "calibration.json"):
        assert (run / f).is_file()
    # the gallery grows by the crops it lacks (here the validation crops), the rest kept as they were
    before = matching.Gallery.load(run / "gallery.npz")
    assert catalogue_main(["add-crops", str(out), "--catalogue", str(run), "--no-progress"]) == 0
    grown = MatchRun(run)
    after = grown.gallery
    assert len(after) == len(train_names) + results["validation images"] and not grown.added_whales
    assert grown.crop_path(after.names[-1]) == run / "catalogue" / "imgs" / after.names[-1]
    assert after.names[:len(before)] == before.names
    np.testing.assert_array_equal(after.descriptors[:len(before.descriptors)], before.descriptors)
    # the stage learnt a whitening from the survey's crops, and the grown gallery keeps it as it was
    assert results["descriptors whitened"] and before.whitening is not None
    np.testing.assert_array_equal(after.whitening.projection, before.whitening.projection)
    # the keypoint weights the stage learnt come back with the run; a run that lost them says so
    calibration = json.loads((run / "calibration.json").read_text())
    assert grown.weights is not None and grown.matcher.row_weight.shape == (len(after.descriptors),)
    (run / "calibration.json").write_text(json.dumps({**calibration, "keypoint weights": None}))
    assert MatchRun(run).weights is None
    del calibration["keypoint weights"]
    (run / "calibration.json").write_text(json.dumps(calibration))
    with pytest.raises(DataError, match="calibration.json.*no keypoint weights"):
        MatchRun(run)


def test_bad_crops_are_skipped_and_reported(crops, tmp_path, capsys):
    survey, out = crops
    import shutil
    bad = tmp_path / "crops"
    shutil.copytree(out, bad)
    images = sorted((bad / "imgs").iterdir())
    images[0].write_bytes(b"not a jpeg")                                     # unreadable
    from PIL import Image
    Image.new("RGB", (64, 64), (90, 90, 90)).save(images[1], format="JPEG")   # blank: no keypoints
    assert train_main(["--stage", "match", "--crops", str(bad), "--runs", str(tmp_path), "--no-progress"]) == 0
    err = capsys.readouterr()
    text = err.out + err.err
    assert images[0].name in text and images[1].name in text and "no SIFT keypoint" in text
    assert RunRecord.load(tmp_path / "match-crops").figures["crops without features"] >= 1


def test_stacking_the_matcher_with_a_cnn(crops, tmp_path):
    survey, out = crops
    common = ["--crops", str(out), "--runs", str(tmp_path), "--no-progress"]
    assert train_main(["--stage", "match", *common]) == 0
    assert train_main(["--stage", "classify", *common, "--image-size", "16", "--epochs", "1",
                       "--batch-size", "4"]) == 0
    runs = [tmp_path / "match-crops", tmp_path / "classify-crops-resnet19"]
    assert ensemble_main(["--runs", *map(str, runs), "--out", str(tmp_path / "ens"), "--folds", "2"]) == 0
    results = RunRecord.load(tmp_path / "ens").figures
    rows = {r["model"]: r for r in results["table"]}
    assert {"match-crops", "classify-crops-resnet19"} <= rows.keys()
    assert any(m.startswith("log-linear pool") for m in rows)


def test_ivf_index_probing_every_cell_is_exact(catalogue):
    names, whales, feats, _, _ = catalogue
    gallery = matching.Gallery.empty().add(names, whales, feats)
    gallery.centroids = matching.train_centroids(gallery.descriptors, 8)
    queries = np.concatenate([f.descriptors for f in feats[:4]])
    d_ivf, i_ivf = matching.Index(gallery, "ivf", probes=len(gallery.centroids)).search(queries, 6)
    d_ref, i_ref = matching.Index(gallery, "exact").search(queries, 6)
    np.testing.assert_array_equal(i_ivf, i_ref)         # the 8-bit codes are the stored descriptors: no loss
    np.testing.assert_allclose(d_ivf, d_ref, atol=1e-5)


def test_training_flags_are_refused_for_the_matcher(capsys):
    with pytest.raises(SystemExit):
        train_main(["--stage", "match", "--epochs", "3"])
    assert "trains no network" in capsys.readouterr().err


def test_only_process_0_of_several_hosts_writes(crops, tmp_path, monkeypatch):
    """Simulated process 1 of a multi-host run: it computes the stage, the run folder stays empty."""
    import jax
    survey, out = crops
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    assert train_main(["--stage", "match", "--crops", str(out), "--run-dir", str(tmp_path / "run"),
                       "--no-progress"]) == 0
    assert list((tmp_path / "run").iterdir()) == []
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    assert train_main(["--stage", "match", "--crops", str(out), "--run-dir", str(tmp_path / "run"),
                       "--no-progress"]) == 0
    assert (tmp_path / "run" / "results.json").is_file()


def test_match_settings_from_the_command_line(crops, tmp_path, capsys):
    survey, out = crops
    common = ["--stage", "match", "--crops", str(out), "--no-progress"]
    assert train_main([*common, "--run-dir", str(tmp_path / "r"), "--match-set", "shortlist=3",
                       "--match-set", "upright=false"]) == 0
    stored = json.loads((tmp_path / "r" / "config.json").read_text())["match"]
    assert (stored["shortlist"], stored["upright"]) == (3, False)
    assert train_main([*common, "--run-dir", str(tmp_path / "s"), "--match-set", "bogus=1"]) == 2
    assert "--match-set bogus=1: expected KEY=VALUE" in capsys.readouterr().err


def test_match_pictures_take_any_crop_shape(tmp_path):
    from PIL import Image

    from rightwhale.views import plots
    rows = [{"query": np.random.default_rng(0).random((30, 200, 1)), "candidate": np.zeros((400, 20, 3), np.uint8),
             "query_xy": [[1, 2]], "candidate_xy": [[3, 4]], "title": "grey float query, tall candidate"},
            {"query": np.zeros((2, 900), np.uint8), "candidate": np.zeros((50, 50, 3), np.uint8),
             "query_xy": [], "candidate_xy": [], "title": "a very wide query"}]
    with Image.open(plots.match_pairs(rows, tmp_path / "m.png", cell=100)) as im:
        assert im.width == 2 * 100 + plots.GAP_PX and im.height >= 2000 + 2    # the tall candidate is not cut
    with Image.open(plots.contact_sheet([np.ones((10, 10, 1)), None], tmp_path / "c.png", ["a", ""], ncols=2,
                                        cell=50)) as im:
        assert np.asarray(im)[plots.TITLE_PX + 5, 5].tolist() == [255, 255, 255]    # float 1.0 is white


def test_the_index_cells_do_not_depend_on_the_thread_count():
    """faiss's k-means sums in parallel; the centroids (and so every score) must not follow the machine's cores."""
    import faiss
    descriptors = (np.random.default_rng(0).random((20000, 128)) * 255).astype(np.uint8)
    threads = faiss.omp_get_max_threads()
    found = []
    try:
        for n in (1, 2):
            faiss.omp_set_num_threads(n)
            found.append(matching.train_centroids(descriptors, 64, seed=0))
    finally:
        faiss.omp_set_num_threads(threads)
    np.testing.assert_array_equal(found[0], found[1])
