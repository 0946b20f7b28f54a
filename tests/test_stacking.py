import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import KFold

from rightwhale.core.metrics import log_loss
from rightwhale.ensemble.stacking import LogLinearPool, Stacker, choose_params, cross_val_choice, nested_cv_proba


def blobs(n_per_class=6, classes=4, dim=8, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (classes, dim))
    labels = np.repeat(np.arange(classes), n_per_class)
    return centres[labels] + rng.normal(0, noise, (len(labels), dim)), labels


def test_save_load_round_trip(tmp_path):
    X, y = blobs()
    stacker = Stacker(num_classes=5, C=0.3, floor=0.05).fit(X, y)   # class 4 never seen
    stacker.save(tmp_path / "s.npz")
    loaded = Stacker.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(loaded.predict_proba(X), stacker.predict_proba(X))
    assert (loaded.C, loaded.floor) == (0.3, 0.05)
    probs = stacker.predict_proba(X)
    np.testing.assert_allclose(probs.sum(axis=1), 1)
    assert (probs[:, 4] > 0).all() and probs[:, 4].max() < 0.05   # only the floor reaches an unseen class
    assert (probs.argmax(axis=1) == y).mean() > 0.9


def test_binary_and_single_class_fits_match_sklearn_form():
    X, y = blobs(classes=2)
    probs = Stacker(3, C=1.0, floor=0.0).fit(X, y).predict_proba(X)
    assert (probs.argmax(axis=1) == y).all() and np.allclose(probs[:, 2], 0)
    one = Stacker(3, floor=0.0).fit(X[:3], np.zeros(3, int)).predict_proba(X)
    np.testing.assert_allclose(one[:, 0], 1)


def test_in_fold_fit_looks_perfect_held_out_does_not():
    """The writeup's trap on pure noise: in-fold loss near zero, held-out no better than chance."""
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(60, 40)), np.repeat(np.arange(6), 10)
    (C, floor), losses = choose_params(X, y, 6, folds=3)
    in_fold = Stacker(6, C=100.0, floor=0.01).fit(X, y)
    assert log_loss(in_fold.predict_proba(X), y) < 0.1
    held_out = nested_cv_proba(X, y, 6, folds=3)
    assert log_loss(held_out, y) > 0.9 * np.log(6)
    assert all(np.isfinite(v) for v in losses.values())


def test_choose_params_losses_are_those_of_the_pooled_out_of_fold_probabilities():
    """The definition GridSearchCV must reproduce, on folds of unequal size (20 rows, 3 folds)."""
    X, y = blobs(n_per_class=4, classes=5, noise=2.0)
    grid = ((0.01, 0.05), (0.01, 0.5), (1.0, 0.2))
    (C, floor), losses = choose_params(X, y, 5, grid, folds=3)
    expected = {}
    for params in grid:
        held = np.zeros((len(y), 5))
        for fit_idx, held_idx in KFold(3, shuffle=True, random_state=0).split(X):
            held[held_idx] = Stacker(5, *params).fit(X[fit_idx], y[fit_idx]).predict_proba(X[held_idx])
        expected[params] = log_loss(held, y)
    assert list(losses) == list(grid)
    np.testing.assert_allclose([losses[p] for p in grid], [expected[p] for p in grid], rtol=1e-12)
    assert (C, floor) == min(expected, key=expected.get)


@pytest.mark.parametrize("n_per_class, classes, folds", [(3, 6, 3), (2, 3, 5)])
def test_nested_cv_proba_is_choose_params_inside_each_fold(n_per_class, classes, folds):
    """Against the definition; 8 columns for 6 (or 3) whales, so folds lack classes, and 6 rows for 5 folds
    leaves inner fit sets of 4 or 5 rows: fewer folds inside, as KFold(min(folds, n)) has it."""
    X, y = blobs(n_per_class=n_per_class, classes=classes, noise=2.0, seed=3)
    grid = ((0.01, 0.05), (1.0, 0.5))                               # two points: every fit costs
    expected = np.zeros((len(y), 8))
    for fit_idx, held_idx in KFold(min(folds, len(y)), shuffle=True, random_state=0).split(X):
        params, _ = choose_params(X[fit_idx], y[fit_idx], 8, grid, folds=folds)
        expected[held_idx] = Stacker(8, *params).fit(X[fit_idx], y[fit_idx]).predict_proba(X[held_idx])
    np.testing.assert_allclose(nested_cv_proba(X, y, 8, grid, folds=folds), expected, rtol=1e-10)


def test_clone_gives_an_unfitted_copy_with_the_same_params():
    X, y = blobs()
    stacker = Stacker(5, C=0.3, floor=0.05, max_iter=500).fit(X, y)
    copy = clone(stacker)
    assert copy.get_params() == stacker.get_params() == {"num_classes": 5, "C": 0.3, "floor": 0.05,
                                                         "max_iter": 500}
    assert not [a for a in vars(copy) if a.endswith("_")]
    assert stacker.set_params(floor=0.5) is stacker and stacker.floor == 0.5


def test_fit_again_forgets_the_earlier_fit():
    X, y = blobs(classes=4)
    X2, y2 = blobs(classes=3, seed=5)
    fresh = {1: Stacker(6, C=0.3).fit(X2[:4], np.ones(4, int)), 3: Stacker(6, C=0.3).fit(X2, y2)}
    for first in ((X, y), (X2[:4], np.ones(4, int))):            # many classes first, then one class first
        for n_classes, (Xb, yb) in ((1, (X2[:4], np.ones(4, int))), (3, (X2, y2))):
            again = Stacker(6, C=0.3).fit(*first).fit(Xb, yb)
            for attr in ("classes_", "mean_", "scale_", "coef_", "intercept_", "prior_"):
                np.testing.assert_array_equal(getattr(again, attr), getattr(fresh[n_classes], attr))
            np.testing.assert_array_equal(again.predict_proba(X), fresh[n_classes].predict_proba(X))


def test_every_class_has_a_column_when_the_fit_lacks_classes():
    X, y = blobs(classes=4)
    keep = y != 2                                               # class 2 and 4..6 never seen
    stacker = Stacker(7, C=0.3).fit(X[keep], y[keep])
    probs = stacker.predict_proba(X)
    assert probs.shape == (len(y), 7) and np.allclose(probs.sum(axis=1), 1)
    np.testing.assert_array_equal(stacker.classes_, np.arange(7))
    assert set(stacker.predict(X)) <= {0, 1, 3} and (stacker.predict(X[keep]) == y[keep]).mean() > 0.9
    assert stacker.score(X[keep], y[keep]) > 0.9                 # ClassifierMixin's accuracy
    with pytest.raises(ValueError, match="class indices"):
        Stacker(3).fit(X, y)


def test_log_linear_pool_trusts_the_member_that_knows():
    from rightwhale.ensemble.stacking import LogLinearPool, cross_val_pool
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, 120)
    sharp = np.full((120, 8), 0.02)
    sharp[np.arange(120), labels] = 0.86                     # right, confident
    noise = rng.dirichlet(np.ones(8), 120)                   # knows nothing
    probs = np.stack([sharp, noise])
    pool = LogLinearPool().fit(probs, labels, 8)
    assert pool.weights_[0] > 5 * pool.weights_[1]
    p = pool.predict_proba(probs)
    assert np.allclose(p.sum(axis=1), 1) and (p.argmax(axis=1) == labels).all()
    held = cross_val_pool(probs, labels, 8, folds=3)
    assert log_loss(held, labels) < log_loss(noise, labels)


def test_corrupt_stacker_and_pool_files_are_named(tmp_path):
    from rightwhale.core.errors import DataError
    X, y = blobs()
    Stacker(num_classes=5, C=0.3).fit(X, y).save(tmp_path / "stacker.npz")
    probs = np.stack([np.full((len(y), 5), 0.2)] * 2)
    LogLinearPool().fit(probs, y, 5).save(tmp_path / "pool.npz")
    for name, load in (("stacker.npz", Stacker.load), ("pool.npz", LogLinearPool.load)):
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[:len(data) // 2])
        with pytest.raises(DataError, match=f"{name}: unreadable .*python ensemble.py"):
            load(tmp_path / name)


def test_choosing_among_estimates_is_held_out():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 200)
    good = np.full((200, 10), 0.05)
    good[np.arange(200), labels] = 0.55                       # right everywhere
    # twenty guessers: the luckiest of them on all 200 images looks better than guessing is
    guessers = {f"guess{i}": rng.dirichlet(np.ones(10), 200) for i in range(20)}
    guess_losses = [log_loss(p, labels) for p in guessers.values()]
    chosen = cross_val_choice(guessers, labels, folds=5, seed=0)
    assert log_loss(chosen, labels) > min(guess_losses) + 0.05    # the in-sample minimum flatters the choice
    # one candidate better on every fold is chosen on every fold: its own probabilities come back
    np.testing.assert_array_equal(cross_val_choice({"good": good, **guessers}, labels), good)


def test_a_grid_search_fits_each_C_once_per_fold(monkeypatch):
    """The floor does not change the fit: one logistic regression per C and fold, as before GridSearchCV."""
    from sklearn.linear_model import LogisticRegression

    from rightwhale.ensemble import stacking
    fits = []
    real_fit = LogisticRegression.fit
    monkeypatch.setattr(LogisticRegression, "fit", lambda self, X, y: fits.append(self.C) or real_fit(self, X, y))
    monkeypatch.setattr(stacking, "_FITS", {})
    X, y = blobs(classes=5, noise=2.0)
    grid = ((0.01, 0.05), (0.01, 0.5), (1.0, 0.2))
    cached = choose_params(X, y, 5, grid, folds=3)
    assert sorted(fits) == [0.01] * 3 + [1.0] * 3
    monkeypatch.setattr(stacking, "_FITS_KEPT", 0)              # no cache: what refitting gives
    monkeypatch.setattr(stacking, "_FITS", {})
    assert choose_params(X, y, 5, grid, folds=3) == cached
