"""Checkpoints as msgpack files (flax.serialization), written atomically; unlike pickle, reading
one runs no code. A run directory holds best.msgpack ({"params", "batch_stats"} of the best epoch)
and last.msgpack (everything needed to resume; see rightwhale.training.fit)."""
from pathlib import Path

import jax
import numpy as np
from flax import serialization

from rightwhale.atomic import write_bytes


def save(path, tree) -> None:
    """Write a pytree (device or host arrays, dicts, struct dataclasses) to `path`."""
    write_bytes(path, serialization.msgpack_serialize(serialization.to_state_dict(jax.device_get(tree))))


def load(path, target=None):
    """The tree in `path` as nested dicts, or restored into the structure of `target` (a TrainState)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        restored = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # msgpack raises several unrelated types on bad bytes
        raise ValueError(f"checkpoint {path} is not a readable msgpack file: {e}") from e
    if target is None:
        return restored
    try:
        tree = serialization.from_state_dict(target, restored)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"checkpoint {path} does not match the expected structure: {e}") from e
    for (where, want), got in zip(jax.tree_util.tree_leaves_with_path(target), jax.tree_util.tree_leaves(tree)):
        if np.shape(want) != np.shape(got):  # from_state_dict takes any shape; other models must fail
            raise ValueError(f"checkpoint {path}: {jax.tree_util.keystr(where)} has shape "
                             f"{np.shape(got)}, expected {np.shape(want)}")
    return tree


def save_variables(path, params, batch_stats) -> None:
    """Model weights alone: what inference, feature extraction and the ensemble need."""
    save(path, {"params": params, "batch_stats": batch_stats})


def load_variables(path) -> dict:
    """{"params", "batch_stats"} ready for model.apply (numpy arrays)."""
    restored = load(path)
    if not isinstance(restored, dict) or "params" not in restored:
        raise ValueError(f"checkpoint {path} holds no model variables (no 'params' entry)")
    return {"params": restored["params"], "batch_stats": restored.get("batch_stats", {})}
