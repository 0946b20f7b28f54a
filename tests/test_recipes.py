"""Each of the original's model definitions, pinned against DESIGN.md's table (section 3, stage 4) and, where
the table is silent, against the definition files themselves (felixlaumon/kaggle-right-whale)."""
import dataclasses

import numpy as np
import pytest

from rightwhale.core.config import ORIGINAL_DEFINITIONS, stage_config
from rightwhale.models import get_model

# definition: input, batch, optimizer, lr start -> end (None: constant), l2, max epochs, shift, shear (rad),
# rotation (deg), GAP dropout, gamma range. The gamma grids are the files' (DESIGN.md says 0.5-1.5 for all;
# cropped_jan02, jan03, jan05_2 and jan05_4 use 0.8-1.2).
TABLE = {
    "cropped_dec19": (256, 32, "adam", 1e-3, 1e-5, 1e-5, 1500, 64, 0.0, 0, 0.8, (0.5, 1.5)),
    "cropped_dec21_3": (256, 16, "nesterov", 0.1, 1e-3, 1e-6, 2500, 64, 0.0, 0, 0.5, (0.5, 1.5)),
    "cropped_jan02": (256, 16, "nesterov", 0.1, 1e-5, 1e-6, 2000, 32, 0.25, 45, 0.5, (0.8, 1.2)),
    "cropped_jan03": (256, 8, "nesterov", 1e-2, 1e-5, 1e-6, 2500, 64, 0.1, 30, 0.8, (0.8, 1.2)),
    "cropped_jan05_2": (256, 32, "nesterov", 1e-2, 1e-5, 1e-6, 2500, 64, 0.1, 30, 0.8, (0.8, 1.2)),
    "cropped_jan05_3": (299, 16, "nesterov", 0.1, 1e-3, 1e-6, 2500, 64, 0.1, 30, 0.8, (0.8, 1.2)),
    "cropped_jan05_4": (256, 16, "adam", 1e-3, None, 1e-6, 2000, 32, 0.25, 45, 0.8, (0.8, 1.2)),
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_original_preset_trains_each_definition_s_own_recipe(name):
    size, batch, optimizer, lr, final_lr, l2, epochs, shift, shear, rotation, dropout, gamma = TABLE[name]
    cfg = stage_config("classify", "original", model=name)
    t, a = cfg.train, cfg.train.augment
    assert (cfg.image_size, t.batch_size, t.optimizer, t.learning_rate, t.final_learning_rate, t.l2,
            t.max_epochs, t.patience) == (size, batch, optimizer, lr, final_lr, l2, epochs, 100)
    assert cfg.model_kwargs["dropout"] == dropout
    assert np.allclose(a.translations, np.arange(-shift, shift))          # pixels of the definition's input
    assert np.allclose(a.shears, np.degrees(np.linspace(-shear, shear, 11)) if shear else [0.0])
    assert a.rotations == (tuple(float(v) for v in np.arange(-rotation, rotation)) if rotation else (0.0,))
    assert np.allclose(a.scales, np.linspace(0.5, 1.5, 11)) and np.allclose(a.gammas, np.linspace(*gamma, 11))
    assert (a.probability, a.flip_horizontal, a.flip_vertical, a.gamma_probability) == (1.0, 0.5, 0.5, 0.5)
    get_model(cfg.model, 447, **cfg.model_kwargs)       # the network exists and takes the recipe's dropout


def test_readable_names_train_the_definition_s_recipe_and_flags_still_override():
    assert stage_config("classify", "original", model="resnet31").train == \
        stage_config("classify", "original", model="cropped_dec21_3").train
    assert stage_config("classify", "original", model="cropped_dec19").model == "cropped_dec19"    # run folder
    cfg = stage_config("classify", "original", model="cropped_jan03", max_epochs=5, batch_size=4)
    assert (cfg.train.max_epochs, cfg.train.batch_size, cfg.train.learning_rate) == (5, 4, 1e-2)
    # the CPU preset is the same recipe, shorter and at 64 px (its StepDecay spans the shorter run)
    cpu, original = stage_config("classify", "cpu", model="cropped_jan03"), stage_config(
        "classify", "original", model="cropped_jan03")
    assert (cpu.image_size, cpu.train.max_epochs, cpu.train.patience) == (64, 60, 20)
    assert dataclasses.replace(cpu.train, max_epochs=2500, patience=100, augment=original.train.augment) == \
        original.train
    assert cpu.train.augment == original.train.augment.rescaled(64, reference_size=256)
    assert cpu.model_kwargs == original.model_kwargs == {"dropout": 0.8}
    assert stage_config("classify", "cpu").train.optimizer == "adam"        # resnet19: no definition file
    assert set(ORIGINAL_DEFINITIONS) == set(TABLE)
    assert stage_config("classify", "original", model="resnet31").model == "resnet31"
    assert stage_config("classify", "original", model="resnet37").train == \
        stage_config("classify", "original", model="cropped_jan02").train      # jan02's layout, 2-conv blocks


def test_the_original_preset_runs_as_the_original_ran():
    import jax
    import jax.numpy as jnp

    from rightwhale.core.config import Augment
    from rightwhale.geometry.transforms import augment_batch
    from rightwhale.models import MODELS
    from rightwhale.train import state as train_steps
    for stage in ("naive", "localize", "align", "classify"):
        for preset in ("original", "cpu"):        # both presets: L2 on gamma, nearest-neighbour warp
            cfg = stage_config(stage, preset)
            assert cfg.train.l2_gamma and cfg.train.augment.interpolation == 0 and "bn_momentum" not in cfg.model_kwargs
    for name in MODELS:                           # BN running averages at alpha 0.1 in every network
        assert get_model(name, 3).bn_momentum == 0.9, name
    # L2 over kernels and batch-norm gammas, not biases or betas
    params = {"conv": {"kernel": jnp.full((3, 3), 2.0)}, "bn": {"scale": jnp.full(4, 3.0), "bias": jnp.ones(4)}}
    assert float(train_steps.l2_penalty(params)) == 36.0
    assert float(train_steps.l2_penalty(params, gamma=True)) == 36.0 + 36.0
    # the nearest-neighbour warp only moves pixel values, never blends them
    image = jnp.asarray(np.random.default_rng(0).random((2, 16, 16, 1)), jnp.float32)
    warped, _, _ = augment_batch(jax.random.PRNGKey(0), image, Augment(probability=1.0, rotations=(30.0,),
                                                                        interpolation=0))
    assert set(np.unique(np.asarray(warped))) <= set(np.unique(np.asarray(image))) | {0.0}
    blended, _, _ = augment_batch(jax.random.PRNGKey(0), image, Augment(probability=1.0, rotations=(30.0,),
                                                                        interpolation=1))
    assert not set(np.unique(np.asarray(blended))) <= set(np.unique(np.asarray(image))) | {0.0}


def test_the_aligner_s_definition_localize_pts_dec31():
    """DESIGN.md's last row: 256 px, batch 16, Adam 1e-4 constant, l2 1e-7, 1000 epochs, patience 150, dropout
    0.5; affine p 0.5 with scale linspace(0.75, 1.25, 21), shifts arange(-48, 48), rotations arange(-180, 180);
    the 243-copy TTA grid of scripts/create_test_head_crop_image.py."""
    cfg = stage_config("align", "original")
    t, a = cfg.train, cfg.train.augment
    assert (cfg.model, cfg.image_size, t.batch_size, t.optimizer, t.learning_rate, t.final_learning_rate, t.l2,
            t.max_epochs, t.patience) == ("localize_pts_dec31", 256, 16, "adam", 1e-4, None, 1e-7, 1000, 150)
    assert get_model(cfg.model, 4, **cfg.model_kwargs).dropout == 0.5
    assert a.probability == 0.5 and np.allclose(a.scales, np.linspace(0.75, 1.25, 21))
    assert np.allclose(a.translations, np.arange(-48, 48)) and np.allclose(a.rotations, np.arange(-180, 180))
    assert (a.shears, a.flip_horizontal, a.flip_vertical, a.gamma_probability) == ((0.0,), 0.0, 0.0, 0.0)
    assert cfg.tta.size == 243 and cfg.min_head_length is None
    # the CPU preset is the same definition at 128 px for 200 epochs (Adam 1e-3 -> 1e-4); l2 and grids its own
    cpu = stage_config("align", "cpu")
    assert (cpu.image_size, cpu.train.max_epochs, cpu.train.learning_rate, cpu.train.final_learning_rate) == \
        (128, 200, 1e-3, 1e-4)
    assert (cpu.train.l2, cpu.train.batch_size, cpu.train.augment) == (t.l2, t.batch_size, a.rescaled(128))
