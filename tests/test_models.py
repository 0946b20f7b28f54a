"""The networks: shapes and parameter counts from shapes alone (jax.eval_shape, no
compile), behaviour (padding, batch norm, dropout) on tiny inputs."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rightwhale.models import MODELS, count_params, get_model, layer_rows, model_names
from rightwhale.models.__main__ import main as layer_table_cli
from rightwhale.models.layers import ConvBN

K = 447  # whales in the Kaggle training set

# Width of the pooled feature vector (the ensemble's input) at 256 px input.
PRE_LOGITS_WIDTH = {
    "localize_pts_dec31": 2 * 2 * 256, "box_localizer": 2 * 2 * 256, "naive_oxfordnet": 256,
    "resnet19": 64, "cropped_dec21_3": 128, "resnet31": 128, "cropped_jan02": 128, "resnet37": 128,
    "resnet67": 128, "oxfordnet19_gap": 128, "cropped_jan03": 192, "cropped_jan05_2": 192,
    "cropped_dec19": 128, "cropped_jan05_4": 128,     # the original definitions' names of oxfordnet19_gap, resnet67
    "cropped_jan05_3": 2048,
}


def outputs_for(name):
    return 4 if name in ("localize_pts_dec31", "box_localizer") else K


def test_registry_names():
    assert set(model_names()) == set(PRE_LOGITS_WIDTH) == set(MODELS)


# --- parameter counts at 256 px ------------------------------------------------------

def test_hand_counts_of_design_md():
    assert count_params("localize_pts_dec31", (256, 256, 3), 4) == 1_967_764
    for classes in (447, 10):
        assert count_params("resnet19", (256, 256, 3), classes) == 271_824 + 65 * classes
    assert count_params("cropped_dec21_3", (256, 256, 3), K) == 2_093_215


# Derived by hand from the Lasagne definitions, for K = 447: a ConvBN k x k from c to w
# has k*k*c*w + 2w; a bare 1x1 shortcut c*w; a post-sum BN 2w; the output 447*(C + 1).
PINNED = {
    "box_localizer": 1_967_764,     # the aligner's architecture
    # aligner trunk 1,963,664 - its 1024-input dense + GAP 256 -> 447: 257*447
    "naive_oxfordnet": 2_078_543,
    # cropped_dec19: 4,768 + 48: 13,920 + 2x20,832 + 64: 27,776 + 2x36,992
    #   + 80: 46,240 + 3x57,760 + 96: 69,312 + 3x83,136 + 128: 110,848 + 3x147,712 + 129*447
    "oxfordnet19_gap": 1_311_999,
    "cropped_jan03": 2_221_503,     # as dec19 with widths 48, 64, 80, 128, 192
    "cropped_jan05_2": 2_325_311,   # as dec19 with widths 48, 64, 96, 128, 192
    "resnet31": 2_093_215,          # = cropped_dec21_3
    # residual_block3: bare shortcut + post-sum BN; blocks 3-3-3-4-5, last three of 3 convs
    "cropped_jan02": 4_097_087,
    "resnet37": 2_852_703,          # cropped_jan02's layout, 2 convs per block
    # residual_block3_localbn, blocks 3-4-23-3 of widths 48, 64, 80, 128
    "resnet67": 3_968_863,
    # inception: a conv kh x kw from c to w has kh*kw*c*w + 2w. Stem 172,672; blocks A 255,904, A 277,472,
    # B 1,153,280, C 1,297,408, C 2,141,952, D 1,698,304, E 5,044,608, E 6,076,800; out 2049*447
    "cropped_jan05_3": 19_034_303,
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pinned_counts(name):
    assert count_params(name, (256, 256, 3), outputs_for(name)) == PINNED[name]


# --- shapes ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PRE_LOGITS_WIDTH))
def test_output_and_pre_logits_shapes(name):
    model = get_model(name, outputs_for(name))
    x = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)
    (out, extras), variables = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x), x)
    assert out.shape == (2, outputs_for(name))
    assert extras["pre_logits"].shape == (2, PRE_LOGITS_WIDTH[name])
    # the pooled features are exactly what the output layer reads
    assert variables["params"]["out"]["kernel"].shape == (PRE_LOGITS_WIDTH[name], outputs_for(name))


def test_feature_map_sizes_follow_the_original():
    rows = dict((name, shape) for name, shape, _ in layer_rows("resnet67", (256, 256, 3), K))
    assert rows["l1c1"] == (128, 128, 32)
    assert rows["l1p"] == (63, 63, 32)   # unpadded 3x3 stride-2 max pool, as cuDNN's
    assert rows["3c0"] == (32, 32, 64) and rows["5c2"] == (8, 8, 128)
    names = [name for name, _, _ in layer_rows("localize_pts_dec31", (256, 256, 3), 4)]
    assert names[:3] == ["in", "l1c1", "l1p"] and names[-3:] == ["gp", "gpdrop", "out"]


def test_inception_feature_maps_follow_the_original():
    rows = dict((name, shape) for name, shape, _ in layer_rows("cropped_jan05_3", (299, 299, 3), K))
    # Lasagne's unpadded convs and 3x3/2 pools: 299 -> 149 -> 147 -> 73 -> 71 -> 35 -> 17 -> 8
    assert rows["1c1"] == (149, 149, 32) and rows["1c2"] == (147, 147, 32) and rows["2c2"] == (71, 71, 192)
    assert rows["3_1_1x1"][:2] == (35, 35) and rows["5_1_3x3"] == (17, 17, 384)
    assert rows["8_1_3x3"] == (8, 8, 320) and rows["11_4_1x1"] == (8, 8, 192)
    with pytest.raises(ValueError, match="at least 75x75"):
        count_params("cropped_jan05_3", (74, 74, 3), K)
    assert count_params("cropped_jan05_3", (75, 75, 3), K) == PINNED["cropped_jan05_3"]   # the CPU preset's size


def test_table_cli_prints_the_total(capsys):
    assert layer_table_cli(["resnet19", "--classes", "10", "--size", "64"]) == 0
    text = capsys.readouterr().out
    assert "l1c1" in text and "2c0" in text
    assert text.strip().endswith(f"total learnable parameters: {271_824 + 650:,}")
    assert layer_table_cli(["--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == model_names()
    assert "cropped_jan05_4.py" in next(line for line in listed if line.startswith("resnet67"))


# --- bad input -------------------------------------------------------------------------

def test_bad_requests_are_named():
    with pytest.raises(ValueError, match="unknown model 'resnet18'"):
        get_model("resnet18", 10)
    with pytest.raises(ValueError, match="pool_window"):
        get_model("resnet19", 10, pool_window=4)
    with pytest.raises(ValueError, match="num_outputs"):
        get_model("resnet19", 0)
    with pytest.raises(ValueError, match="gp: a 8x8 pool"):   # 64 px leaves a 4x4 map
        count_params("localize_pts_dec31", (64, 64, 3), 4)
    with pytest.raises(ValueError, match="input_shape must be"):
        count_params("resnet19", (64, 64), 10)
    model = get_model("resnet19", 10)
    with pytest.raises(ValueError, match="float NHWC"):
        model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3), jnp.uint8))


# --- behaviour on tiny inputs ----------------------------------------------------------

def test_stride_two_conv_pads_symmetrically_like_lasagne():
    """A 3x3 stride-2 conv pads 1 on every side: output (i, j) sees input rows 2i-1..2i+1.
    An impulse at (2, 2) lands only on output (1, 1), through the kernel's centre.
    Flax's "SAME" would pad (0, 1) and put it on outputs (0..1, 0..1) instead."""
    layer = ConvBN(1, kernel=3, stride=2)
    x = jnp.zeros((1, 8, 8, 1)).at[0, 2, 2, 0].set(1.0)
    variables = layer.init(jax.random.key(0, impl="rbg"), x)
    kernel = jnp.arange(1.0, 10.0).reshape(3, 3, 1, 1)          # all positive: ReLU passes them
    variables = {**variables, "params": {**variables["params"], "conv": {"kernel": kernel}}}
    y = np.asarray(layer.apply(variables, x))[0, :, :, 0] * np.sqrt(1 + 1e-4)   # undo eval BN
    expected = np.zeros((4, 4))
    expected[1, 1] = 5.0                                          # kernel[1, 1]
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    # and a 7x7 stride-2 conv keeps the map at exactly half, as Lasagne's pad 3 does
    conv7 = ConvBN(4, kernel=7, stride=2)
    x = jax.ShapeDtypeStruct((1, 9, 9, 1), jnp.float32)
    assert jax.eval_shape(lambda x: conv7.init_with_output(jax.random.key(0), x), x)[0].shape == (1, 5, 5, 4)


@functools.lru_cache(maxsize=None)
def tiny(name, **kwargs):
    """A model at 16 px, batch 2, its variables and one jitted forward pass shared by the
    tests below (compiling is the slow part on CPU). The 'rbg' key compiles init ~8x faster."""
    model = get_model(name, 10, **kwargs)
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3)) + 3.0
    variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), x)

    @functools.partial(jax.jit, static_argnums=1)
    def forward(seed, train):
        """(output, pre_logits, updated batch_stats, the output of l1c1's conv)."""
        (out, extras), state = model.apply(
            variables, x, train=train, rngs={"dropout": jax.random.key(seed)},
            mutable=("batch_stats", "intermediates"),
            capture_intermediates=lambda module, _: module.name == "conv")
        return out, extras["pre_logits"], state["batch_stats"], \
            state["intermediates"]["l1c1"]["conv"]["__call__"][0]

    return variables, forward


def test_initialisation_is_glorot_uniform_without_conv_biases():
    params = tiny("resnet19")[0]["params"]
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
    assert [p for p in paths if "bias" in p and "bn" not in p] == ["['out']['bias']"]   # convs feed BN
    np.testing.assert_array_equal(params["out"]["bias"], 0)
    for w, fan_in, fan_out in [(params["out"]["kernel"], 64, 10),
                               (params["4c1"]["c0"]["conv"]["kernel"], 9 * 64, 9 * 64)]:
        limit = np.sqrt(6 / (fan_in + fan_out))
        assert limit * 0.9 < np.abs(w).max() <= limit             # uniform, filling its range
        assert abs(np.std(w) - limit / np.sqrt(3)) < 0.1 * limit


@pytest.mark.parametrize("name, kwargs, momentum", [
    ("localize_pts_dec31", {"pool_window": 1}, 0.9),             # Lasagne's batch norm, alpha 0.1
    ("resnet19", {}, 0.9),                                        # the repo's own, whose default alpha is 0.1 too
    ("resnet19", {"bn_momentum": 0.5}, 0.5),                      # and the option reaches every layer
])
def test_batch_norm_statistics_update_only_in_training(name, kwargs, momentum):
    variables, forward = tiny(name, **kwargs)
    initial = variables["batch_stats"]
    unchanged = jax.tree.map(np.array_equal, forward(0, False)[2], initial)
    assert all(jax.tree_util.tree_leaves(unchanged))

    _, _, stats, conv_out = forward(0, True)
    np.testing.assert_allclose(stats["l1c1"]["bn"]["mean"],        # started at 0
                               (1 - momentum) * conv_out.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), stats, initial)
    assert all(jax.tree_util.tree_leaves(changed))                 # every BN layer moved


def test_dropout_only_in_training():
    _, forward = tiny("resnet19")
    (a, feats_a, *_), (b, feats_b, *_) = forward(0, True), forward(1, True)
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(feats_a, feats_b)               # dropout comes after the pool
    np.testing.assert_array_equal(forward(0, False)[0], forward(1, False)[0])
