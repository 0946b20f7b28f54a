import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from rightwhale.core.config import Train
from rightwhale.io import checkpoint
from rightwhale.train import state as train_steps


class Dense(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = x.reshape(len(x), -1)
        return nn.Dense(2)(x), {"pre_logits": x}


def _state(seed=0):
    return train_steps.create_train_state(Dense(), Train(optimizer="nesterov", learning_rate=0.1,
                                                      final_learning_rate=0.01),
                                       (2, 2, 3), steps_per_epoch=3, key=jax.random.PRNGKey(seed))


def _assert_trees_equal(a, b):
    leaves_a, leaves_b = (jax.tree_util.tree_leaves_with_path(t) for t in (a, b))
    assert [p for p, _ in leaves_a] == [p for p, _ in leaves_b]
    for (where, x), (_, y) in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(where))


def test_round_trip_of_arrays_and_scalars(tmp_path):
    tree = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "nested": {"i": np.int32(7)},
            "epoch": 3, "best": float("inf"), "text": "[1, 2]"}
    checkpoint.save(tmp_path / "c.msgpack", tree)
    back = checkpoint.load(tmp_path / "c.msgpack")
    np.testing.assert_array_equal(back["w"], tree["w"])
    assert back["w"].dtype == np.float32
    assert (back["nested"]["i"], back["epoch"], back["best"], back["text"]) == (7, 3, float("inf"), "[1, 2]")
    assert [p.name for p in tmp_path.iterdir()] == ["c.msgpack"]   # no temporary file left behind


def test_train_state_restores_optimizer_state_and_key(tmp_path):
    state = _state(0)
    grads = jax.tree_util.tree_map(jnp.ones_like, state.params)
    state = state.apply_gradients(grads=grads)                      # non-trivial momentum
    checkpoint.save(tmp_path / "s.msgpack", state)
    restored = checkpoint.load(tmp_path / "s.msgpack", target=_state(1))
    _assert_trees_equal(restored, state)
    assert int(restored.step) == 1


def test_variables_round_trip(tmp_path):
    state = _state(0)
    checkpoint.save_variables(tmp_path / "best.msgpack", state.params, state.batch_stats)
    variables = checkpoint.load_variables(tmp_path / "best.msgpack")
    _assert_trees_equal(variables["params"], jax.device_get(state.params))
    x = np.ones((1, 2, 2, 3), np.float32)
    np.testing.assert_array_equal(Dense().apply(variables, x)[0],
                                  Dense().apply({"params": state.params}, x)[0])


def test_bad_files_give_errors_naming_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.msgpack"):
        checkpoint.load(tmp_path / "missing.msgpack")
    (tmp_path / "junk.msgpack").write_bytes(b"\xc1 this is not msgpack")
    with pytest.raises(ValueError, match="junk.msgpack"):
        checkpoint.load(tmp_path / "junk.msgpack")
    checkpoint.save(tmp_path / "other.msgpack", {"w": np.zeros(3)})
    with pytest.raises(ValueError, match="other.msgpack.*no 'params' entry"):
        checkpoint.load_variables(tmp_path / "other.msgpack")
    with pytest.raises(ValueError, match=r"other.msgpack.*\['w'\] has shape \(3,\), expected \(4,\)"):
        checkpoint.load(tmp_path / "other.msgpack", target={"w": np.zeros(4)})
    with pytest.raises(ValueError, match="other.msgpack does not match"):
        checkpoint.load(tmp_path / "other.msgpack", target={"v": np.zeros(3)})


def test_damaged_checkpoints_are_one_line_errors_naming_the_file(tmp_path):
    path = tmp_path / "best.msgpack"
    checkpoint.save_variables(path, {"w": np.arange(5000, dtype=np.float32)}, {})
    good = path.read_bytes()
    damaged = {"empty": b"", "truncated": good[:len(good) // 2],
               "overwritten": good[:1000] + bytes(range(256)) * 20 + good[1000 + 5120:]}   # same length
    for what, data in damaged.items():
        path.write_bytes(data)
        with pytest.raises(checkpoint.CorruptCheckpoint, match=re.escape(str(path)) + ": corrupt checkpoint"):
            checkpoint.load_variables(path)
    # a checkpoint written before the checksum still loads, unless its values are not finite
    legacy = serialization.msgpack_serialize({"params": {"w": np.ones(3, np.float32)}})
    path.write_bytes(legacy)
    np.testing.assert_array_equal(checkpoint.load_variables(path)["params"]["w"], np.ones(3))
    path.write_bytes(serialization.msgpack_serialize({"params": {"w": np.array([1, np.nan], np.float32)}}))
    with pytest.raises(checkpoint.CorruptCheckpoint, match=r"non-finite values in \['params'\]\['w'\]"):
        checkpoint.load_variables(path)
