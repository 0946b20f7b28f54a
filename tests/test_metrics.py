import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from rightwhale.core import metrics


def test_log_loss_matches_sklearn_on_normalised_probabilities():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=20)
    labels = rng.integers(0, 5, 20)
    expected = skm.log_loss(labels, probs, labels=range(5))
    assert metrics.log_loss(probs, labels) == pytest.approx(expected, rel=1e-12)


def test_log_loss_clips_and_renormalises_like_kaggle():
    probs = np.array([[1.0, 0.0, 0.0], [2.0, 1.0, 1.0]])   # a zero on the truth, an unnormalised row
    labels = np.array([1, 0])
    eps = 1e-15
    row0 = eps / (1 + eps)                 # [1-eps, eps, eps] renormalised
    row1 = 0.5                             # [2, 1, 1] rescaled to [.5, .25, .25]
    assert metrics.log_loss(probs, labels) == pytest.approx(-(np.log(row0) + np.log(row1)) / 2)
    assert np.isfinite(metrics.log_loss(probs, labels))
    # chance level for K classes is ln K
    assert metrics.log_loss(np.full((4, 447), 1 / 447), np.arange(4)) == pytest.approx(np.log(447))


def test_log_loss_rejects_bad_input_with_clear_errors():
    with pytest.raises(ValueError, match="3 labels for 2 rows"):
        metrics.log_loss(np.ones((2, 3)), [0, 1, 2])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        metrics.log_loss(np.ones((2, 3)), [0, 3])
    with pytest.raises(ValueError, match="integer"):
        metrics.log_loss(np.ones((2, 3)), [0.0, 1.0])


def test_top_k_accuracy_by_hand_and_against_sklearn():
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]])
    labels = np.array([1, 2, 0])          # ranks of the truth: 1st, 2nd, 3rd
    assert metrics.top_k_accuracy(probs, labels, 1) == pytest.approx(1 / 3)
    assert metrics.top_k_accuracy(probs, labels, 2) == pytest.approx(2 / 3)
    assert metrics.top_k_accuracy(probs, labels, 3) == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    p, y = rng.dirichlet(np.ones(6), size=30), rng.integers(0, 6, 30)
    for k in (1, 3):
        assert metrics.top_k_accuracy(p, y, k) == pytest.approx(
            skm.top_k_accuracy_score(y, p, k=k, labels=range(6)))


def test_iou_by_hand():
    a = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 4, 4]], float)
    b = np.array([[0, 0, 2, 2], [1, 0, 2, 2], [5, 5, 1, 1], [1, 1, 2, 2]], float)
    np.testing.assert_allclose(metrics.iou(a, b), [1.0, 2 / 6, 0.0, 4 / 16])
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        metrics.iou(a[:, :3], b[:, :3])


def test_point_errors_in_pixels_and_head_lengths():
    true = np.array([[0, 0, 3, 4], [10, 10, 10, 20]], float)   # head lengths 5 and 10
    pred = np.array([[3, 4, 3, 4], [10, 12, 10, 20]], float)
    pixels, fraction = metrics.point_errors(pred, true)
    np.testing.assert_allclose(pixels, [[5, 0], [2, 0]])
    np.testing.assert_allclose(fraction, [[1.0, 0], [0.2, 0]])


def test_per_example_metrics_run_unchanged_under_jit():
    rng = np.random.default_rng(2)
    a = rng.uniform(0, 10, (5, 4)).astype(np.float32)
    b = rng.uniform(0, 10, (5, 4)).astype(np.float32)
    scores = rng.normal(size=(5, 7)).astype(np.float32)
    labels = rng.integers(0, 7, 5)
    np.testing.assert_allclose(jax.jit(metrics.iou)(a, b), metrics.iou(a, b), rtol=1e-5)
    for got, want in zip(jax.jit(metrics.point_errors)(a, b), metrics.point_errors(a, b)):
        np.testing.assert_allclose(got, want, rtol=1e-5)
    hits = jax.jit(metrics.top_k_hits, static_argnums=2)(scores, jnp.asarray(labels), 2)
    np.testing.assert_array_equal(hits, metrics.top_k_hits(scores, labels, 2))
