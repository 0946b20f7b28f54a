"""Keypoint weights: learnt from the gallery's leave-one-out votes, they silence keypoints that name other whales."""
import numpy as np
import pytest

from rightwhale.core.config import Match
from rightwhale.core.errors import DataError
from rightwhale.scorers import matching
from rightwhale.scorers.keypoint_weights import KeypointWeights
from rightwhale.scorers.match_run import fit_matcher

CFG = Match(index="exact", shortlist=3, neighbours=5, max_keypoints=60)   # ranks span the bins


def patch(rng, n, x_range):
    """n keypoints of one size in a band of x, with random RootSIFT-like descriptors."""
    kp = np.c_[rng.uniform(*x_range, n), rng.random(n), np.full(n, 0.03), np.zeros(n)].astype(np.float32)
    desc = np.clip(np.round(np.sqrt(rng.dirichlet(np.ones(matching.DIM) * 0.3, n)) * 255), 0, 255)
    return kp, desc.astype(np.uint8)


def seen_again(rng, part, keep=None):
    kp, desc = part
    keep = slice(None) if keep is None else slice(0, keep)
    desc = np.clip(desc[keep].astype(int) + rng.integers(-6, 7, desc[keep].shape), 0, 255).astype(np.uint8)
    return kp[keep] + np.float32(0.003), desc


def crop(*parts):
    return matching.Features(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


@pytest.fixture(scope="module")
def flight():
    """Eight whales of three crops. A whale's callosities sit on the right half of its crops; the left half
    is water, and each crop's water recurs in one crop of another whale (one flight, one sea)."""
    rng = np.random.default_rng(0)
    whales, crops = 8, 3
    patterns = [patch(rng, 30, (0.55, 0.95)) for _ in range(whales)]
    seas = [patch(rng, 30, (0.05, 0.45)) for _ in range(whales * crops // 2)]
    order = rng.permutation(whales * crops)          # crop i shares its sea with its partner crop
    sea_of = np.empty(whales * crops, np.int64)
    sea_of[order] = np.arange(whales * crops) // 2
    names, labels, feats = [], [], []
    for i in range(whales * crops):
        w = i // crops
        names.append(f"w_{i}.jpg"), labels.append(w)
        feats.append(crop(seen_again(rng, patterns[w]), seen_again(rng, seas[sea_of[i]])))
    classes = [f"whale_{w}" for w in range(whales)]
    gallery = matching.Gallery.empty().add(names, [classes[w] for w in labels], feats)
    # a new photo of whale 0, its callosities half seen, on the sea of a crop of whale 5
    sea = sea_of[5 * crops]
    query = crop(seen_again(rng, patterns[0], keep=15), seen_again(rng, seas[sea]))
    sea_whales = {labels[i] for i in np.flatnonzero(sea_of == sea)}
    return gallery, classes, np.array(labels), query, sea_whales


def test_weights_follow_where_votes_name_the_own_whale():
    rng = np.random.default_rng(1)
    n = 40000
    kp = np.c_[rng.random(n), rng.random(n), rng.uniform(0.01, 0.05, n), np.zeros(n)]
    right = kp[:, 0] > 0.5
    own, other = np.where(right, 1.0, 0.0), np.where(right, 0.2, 1.0)
    w = KeypointWeights.fit(kp, rng.integers(0, 500, n), own, other, max_keypoints=500)
    got = w.of(kp, rng.integers(0, 500, n))
    assert got[kp[:, 0] > 0.7].min() > 3 * got[kp[:, 0] < 0.3].max()
    assert abs(w.of(kp, np.zeros(n)).mean() - 1) < 0.2
    back = KeypointWeights.from_dict(w.to_dict(), "calibration.json")
    np.testing.assert_array_equal(back.of(kp[:50]), w.of(kp[:50]))
    bad = w.to_dict()
    bad["table"] = (-np.asarray(bad["table"])).tolist()
    with pytest.raises(DataError, match="calibration.json"):
        KeypointWeights.from_dict(bad, "calibration.json")
    with pytest.raises(DataError, match="calibration.json"):
        KeypointWeights.from_dict({"edges": [[0.5]], "table": [1.0, 2.0]}, "calibration.json")


def test_learnt_weights_let_callosities_outvote_a_shared_sea(flight):
    gallery, classes, labels, query, sea_whales = flight
    plain = matching.Matcher(gallery, classes, CFG).score(query)
    assert int(np.argmax(plain.scores)) in sea_whales and 0 not in sea_whales   # the sea names the whale
    matcher, loo, usable = fit_matcher(gallery, classes, labels, CFG, progress=False)
    assert matcher.weights is not None and usable.all()
    weighted = matcher.score(query)
    assert int(np.argmax(weighted.scores)) == 0
    for i in range(len(gallery)):        # a gallery row's weight is its keypoint's, ranked within its own crop
        rows = slice(gallery.offsets[i], gallery.offsets[i + 1])
        np.testing.assert_allclose(matcher.row_weight[rows], np.sqrt(matcher.weights.of(gallery.features(i).keypoints)))
    sea_side = matcher.weights.of(query.keypoints)[query.keypoints[:, 0] < 0.5]
    head_side = matcher.weights.of(query.keypoints)[query.keypoints[:, 0] > 0.5]
    assert sea_side.mean() < 0.6 * head_side.mean()
    # the gallery's own leave-one-out scores name every crop's whale under the weights
    assert (loo.argmax(axis=1) == labels).mean() > (matching.score_matrix(matching.Matcher(
        gallery, classes, CFG).score_many([gallery.features(i) for i in range(len(gallery))],
                                          exclude=gallery.names), len(classes)).argmax(axis=1) == labels).mean()
    off = fit_matcher(gallery, classes, labels, Match(index="exact", shortlist=3, neighbours=5, max_keypoints=60,
                                                      keypoint_weights=False), progress=False)[0]
    assert off.weights is None
