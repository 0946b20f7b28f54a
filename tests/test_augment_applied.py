"""Each training stage hands `fit` an augmentation built from its own configuration, and it changes the batch.

The stage runs as `train.py` runs it up to the call of `fit`, which is replaced by a stand-in that keeps what it
was given and stops the stage (no training). The task's augmentation is then applied to the stage's own first
training batch, as `training.train_step` applies it: two keys give two different batches, one key the same
batch twice, and the same augmentation function with every probability 0 gives the batch back unchanged.
"""
import dataclasses
import functools

import flax.linen as nn
import jax
import numpy as np
import pytest

from rightwhale.core import config, metrics
from rightwhale.io.checkpoint import load_variables
from rightwhale.stages import align, fit_classifier, localize, main
from rightwhale.train import feed, loop
from rightwhale.train import state as train_steps

TINY = ["--batch-size", "4", "--no-progress"]


class Stopped(Exception):
    """Raised by the stand-in for fit: the stage got as far as training."""


@pytest.fixture(scope="module")
def survey(make_survey):
    return make_survey()


def capture_fit(monkeypatch, module):
    """Replace `fit` where `module` looks it up; returns the dict the stand-in fills."""
    seen = {}

    def fake_fit(model, cfg, task, train, valid, run_dir, **kwargs):
        seen.update(model=model, cfg=cfg, task=task, train=train, valid=valid)
        raise Stopped
    monkeypatch.setattr(module, "fit", fake_fit)
    return seen


def still(augment: config.Augment) -> config.Augment:
    """The same augmentation with every random change switched off."""
    return dataclasses.replace(augment, probability=0.0, flip_horizontal=0.0, flip_vertical=0.0,
                               gamma_probability=0.0, brightness=(1.0,))


# stage, module whose fit it calls, its augmentation function, the preset's augmentation, extra flags
STAGES = {
    "align": (align, align.augment_points, config.ALIGN_AUGMENT, ["--image-size", "32"]),
    "localize": (localize, localize.augment_boxes, config.BOX_AUGMENT, ["--image-size", "32"]),
    "naive": (fit_classifier, fit_classifier.augment_images, config.NAIVE_AUGMENT, ["--image-size", "32"]),
    "classify": (fit_classifier, fit_classifier.augment_images, config.CLASSIFY_AUGMENT,
                 ["--image-size", "16", "--crops", "annotated"]),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_trains_with_its_augmentation(stage, survey, tmp_path, monkeypatch):
    module, augment_fn, preset_augment, flags = STAGES[stage]
    seen = capture_fit(monkeypatch, module)
    with pytest.raises(Stopped):
        main(["--stage", stage, "--data-dir", str(survey), "--runs", str(tmp_path), *TINY, *flags])
    cfg, task = seen["cfg"], seen["task"]
    size = int(flags[flags.index("--image-size") + 1])
    # the preset's augmentation, its translations scaled from 256 px to the input
    assert cfg.augment == dataclasses.replace(preset_augment,
                                              translations=tuple(t * size / 256 for t in preset_augment.translations))
    assert task.augment is not None and task.augment.func is augment_fn
    assert task.augment.keywords["augment"] == cfg.augment

    # the stage's first training batch, as train_step sees it: uint8 rows / 255 and the targets
    rows = np.arange(cfg.batch_size)
    images = np.asarray(seen["train"]["image"][rows]).astype(np.float32) / 255.0
    target = np.asarray(seen["train"]["target"][rows])
    assert images.shape == (cfg.batch_size, size, size, 3)
    target = target.astype(np.int32 if target.dtype.kind in "iu" else np.float32)
    run = jax.jit(task.augment)
    first, first_target = map(np.asarray, run(jax.random.key(1), images, target))
    again, again_target = map(np.asarray, run(jax.random.key(1), images, target))
    other, other_target = map(np.asarray, run(jax.random.key(2), images, target))
    assert first.shape == images.shape and first_target.shape == target.shape
    np.testing.assert_array_equal(first, again)                         # one key, one batch
    np.testing.assert_array_equal(first_target, again_target)
    changed = np.abs(first - images).reshape(len(images), -1).max(axis=1) > 0.05
    assert changed.sum() >= cfg.augment.probability * len(images) - 1e-9 and changed.any()   # the picked samples moved
    assert np.abs(first - other).max() > 0.05                          # another key, another batch
    if stage in ("align", "localize"):                                  # the targets move with the image
        assert np.abs(first_target - other_target).max() > 1e-3

    # with every probability 0 the same function changes nothing (boxes only snap to whole pixels, as the
    # original's mask boxes do)
    plain = jax.jit(functools.partial(augment_fn, augment=still(cfg.augment)))
    same, same_target = map(np.asarray, plain(jax.random.key(1), images, target))
    np.testing.assert_allclose(same, images, atol=1e-6)
    np.testing.assert_allclose(same_target, target, atol=1.0 / size if stage == "localize" else 1e-6)


# --- a few epochs with the stage's task and augmentation beat the baseline that knows no pixels ---------------

class PointRegressor(nn.Module):
    """The aligner's interface in miniature: one convolution, then a dense layer on the whole map (positions
    need the layout a global pool would lose)."""
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        flat = x.reshape(x.shape[0], -1)
        return nn.Dense(4)(flat), {"pre_logits": flat}


def blob_images(rng, n, size=16, sigma=1.2):
    """uint8 images with a red (bonnet) and a green (blowhead) blob at random points: (images, (n, 2, 2) points)."""
    points = rng.uniform(4, size - 5, (n, 2, 2))
    ys, xs = np.mgrid[:size, :size]
    images = np.zeros((n, size, size, 3), np.float64)
    for k in range(2):
        x, y = points[:, k, 0, None, None], points[:, k, 1, None, None]
        images[..., k] = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2))
    images[..., 2] = rng.uniform(0, 0.2, images.shape[:3])
    return np.round(images * 255).astype(np.uint8), points


def test_a_few_epochs_of_the_aligners_training_beat_the_mean_point(tmp_path):
    size = 16
    rng = np.random.default_rng(0)
    (train_images, train_points), (valid_images, valid_points) = blob_images(rng, 96), blob_images(rng, 24)
    augment = config.ALIGN_AUGMENT.rescaled(size)           # the aligner's own: p 0.5, any rotation, scale, shift
    task = train_steps.regression_task(metrics=functools.partial(align.point_error_metric, size=size),
                                    headline="point error (px)",
                                    augment=functools.partial(align.augment_points, augment=augment))
    cfg = config.Train(batch_size=8, max_epochs=12, patience=100, learning_rate=3e-3, l2=0.0, augment=augment)
    model = PointRegressor()
    target = lambda pts: (pts / size).reshape(-1, 4).astype(np.float32)       # noqa: E731, as the align stage
    loop.fit(model, cfg, task, {"image": train_images, "target": target(train_points)},
                 {"image": valid_images, "target": target(valid_points)}, tmp_path, progress=False, log=lambda *_: None)
    variables = load_variables(tmp_path / "best.msgpack")
    predicted = feed.predict(model, variables, valid_images, 8)[0] * size
    error = metrics.point_errors(predicted, valid_points.reshape(-1, 4))[0].mean()
    mean_point = np.broadcast_to(train_points.reshape(-1, 4).mean(axis=0), predicted.shape)
    baseline = metrics.point_errors(mean_point, valid_points.reshape(-1, 4))[0].mean()
    # about 0.25 of the baseline here; with points that stay put while the image moves, about 0.6
    assert error < 0.45 * baseline, (error, baseline)
