"""The descriptor whitening: learnt from pairs it finds in the gallery, it makes nearest neighbours right."""
import dataclasses

import numpy as np
import pytest
from test_matching import jittered, random_features

from rightwhale.core.config import Match
from rightwhale.core.errors import DataError
from rightwhale.scorers import matching, whitening
from rightwhale.scorers.match_run import learn_space


def nuisance_views(rng, nuisance, points=300, views=2):
    """Descriptors of `points` physical points seen `views` times: each view moved far along three directions
    shared by all points (glare, blur: what two photos of one callosity differ by), and a little otherwise."""
    base = rng.normal(128, 10, (points, 128))
    seen = [base + rng.normal(0, 90, (points, 3)) @ nuisance + rng.normal(0, 3, (points, 128)) for _ in range(views)]
    return [np.clip(np.round(v), 0, 255).astype(np.uint8) for v in seen]


def nearest_is_own(first, second, transform):
    a, b = transform(first), transform(second)
    d = (a ** 2).sum(1)[:, None] - 2 * a @ b.T + (b ** 2).sum(1)[None]
    return np.mean(d.argmin(axis=1) == np.arange(len(a)))


def test_whitening_from_pairs_makes_nearest_neighbours_right():
    rng = np.random.default_rng(0)
    nuisance = np.linalg.qr(rng.normal(size=(128, 3)))[0].T          # (3, 128) orthonormal
    learn_first, learn_second = nuisance_views(rng, nuisance)
    descriptors = np.concatenate([learn_first, learn_second])
    n = len(learn_first)
    white = whitening.Whitening.fit(descriptors, np.arange(n), np.arange(n) + n)
    new_first, new_second = nuisance_views(rng, nuisance)         # other points, the same nuisance
    raw = nearest_is_own(new_first, new_second, matching.as_float)
    whitened = nearest_is_own(new_first, new_second, white.apply)
    assert raw < 0.5 < 0.95 < whitened, (raw, whitened)
    assert np.allclose(np.linalg.norm(white.apply(new_first), axis=1), 1, atol=1e-4)


def small_gallery(rng, whales=4, sightings=3):
    patterns = [random_features(rng, n=80) for _ in range(whales)]
    names, labels, feats = [], [], []
    for w, pattern in enumerate(patterns):
        for s in range(sightings):
            names.append(f"w_{w}_{s}.jpg"), labels.append(f"whale_{w}"), feats.append(jittered(rng, pattern))
    return matching.Gallery.empty().add(names, labels, feats), feats


def test_positive_pairs_join_one_point_of_one_whale():
    gallery, _ = small_gallery(np.random.default_rng(1))
    a, b = whitening.positive_pairs(gallery)
    owner = gallery.owner
    assert len(a) > 0.8 * 4 * 3 * 80                       # most keypoints of every pair of sightings
    assert (np.array(gallery.whales)[owner[a]] == np.array(gallery.whales)[owner[b]]).all()
    assert (owner[a] != owner[b]).all()
    # a sighting lists its pattern's keypoints in order: a true pair has the same place in both lists
    assert (a - gallery.offsets[owner[a]] == b - gallery.offsets[owner[b]]).all()


def test_too_few_pairs_learn_nothing():
    rng = np.random.default_rng(2)
    single = matching.Gallery.empty().add([f"w_{i}.jpg" for i in range(5)], [f"whale_{i}" for i in range(5)],
                                          [random_features(rng) for _ in range(5)])
    assert whitening.learn(single) is None
    space = learn_space(single, Match(cells=4), seed=0)
    assert space.whitening is None and space.centroids.shape[1] == matching.DIM


def fitted(gallery):
    return whitening.Whitening.fit(gallery.descriptors, *whitening.positive_pairs(gallery))


def test_whitened_gallery_round_trip_and_growth(tmp_path):
    rng = np.random.default_rng(3)
    whole, feats = small_gallery(rng)
    white = fitted(whole)
    whole = dataclasses.replace(whole, whitening=white,
                                centroids=matching.train_centroids(whole.descriptors, 8, whitening=white))
    part = whole.subset(np.arange(7))
    part.save(tmp_path / "g.npz")
    back = matching.Gallery.load(tmp_path / "g.npz")
    np.testing.assert_array_equal(back.whitening.projection, white.projection)
    grown = back.add(whole.names[7:], whole.whales[7:], feats[7:])
    np.testing.assert_array_equal(grown.whitening.mean, white.mean)
    np.testing.assert_array_equal(grown.whitening.projection, white.projection)
    query = jittered(rng, feats[8])
    classes = sorted(set(whole.whales))
    for kind in ("ivf", "exact"):
        cfg = Match(index=kind, shortlist=3, probes=8)
        a = matching.Matcher(whole, classes, cfg).score(query)
        b = matching.Matcher(grown, classes, cfg).score(query)
        np.testing.assert_array_equal(a.scores, b.scores)
        assert np.argmax(a.scores) == 2                     # feats[8] is whale_2's
    # the IVF codes hold the whitened vectors to their 1/255 grid: the same nearest neighbours as exact search
    queries = np.concatenate([jittered(rng, f).descriptors for f in feats[:3]])
    _, i_ivf = matching.Index(whole, "ivf", probes=8).search(queries, 3)
    _, i_exact = matching.Index(whole, "exact").search(queries, 3)
    assert np.mean(i_ivf[:, 0] == i_exact[:, 0]) > 0.97


def test_old_and_corrupt_whitening_in_a_gallery_file(tmp_path):
    rng = np.random.default_rng(4)
    gallery, _ = small_gallery(rng)
    old = tmp_path / "old.npz"          # a gallery saved before the whitening (format 1)
    np.savez(old, format=1, names=np.array(gallery.names), whales=np.array(gallery.whales), offsets=gallery.offsets,
             keypoints=gallery.keypoints, descriptors=gallery.descriptors, centroids=np.zeros((0, 128), np.float32))
    assert matching.Gallery.load(old).whitening is None
    bad = dataclasses.replace(gallery, whitening=dataclasses.replace(
        fitted(gallery), projection=np.full((128, 128), np.nan, np.float32)))
    bad.save(tmp_path / "bad.npz")
    with pytest.raises(DataError, match="bad.npz.*whitening"):
        matching.Gallery.load(tmp_path / "bad.npz")
