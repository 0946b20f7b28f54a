"""Checkpoints as msgpack files (flax.serialization), written atomically.

msgpack rather than pickle: a checkpoint handed to someone else can be read
without executing code. A file holds a nested dict of numpy arrays and plain
scalars; `load` either returns that dict or restores it into a `target` of
the same structure (a TrainState, an optax state), which is how a resumed run
gets its optimizer state and PRNG key back.

Two kinds of files in a run directory (see rightwhale.training.fit):
  best.msgpack   {"params", "batch_stats"} of the best validation epoch
  last.msgpack   everything needed to resume: state, epoch, history, counters
"""
from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from flax import serialization

from rightwhale.atomic import write_bytes


def save(path, tree) -> None:
    """Write a pytree (device or host arrays, dicts, struct dataclasses) to `path`."""
    state_dict = serialization.to_state_dict(jax.device_get(tree))
    write_bytes(path, serialization.msgpack_serialize(state_dict))


def load(path, target=None):
    """Read `path`; with `target`, restore into its structure (shapes must match)."""
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
    _check_shapes(path, target, tree)
    return tree


def _check_shapes(path, target, tree) -> None:
    """from_state_dict accepts any array per leaf; a different model must fail loudly."""
    for (where, want), got in zip(jax.tree_util.tree_leaves_with_path(target),
                                  jax.tree_util.tree_leaves(tree)):
        if np.shape(want) != np.shape(got):
            raise ValueError(f"checkpoint {path}: {jax.tree_util.keystr(where)} has shape "
                             f"{np.shape(got)}, expected {np.shape(want)}")


def save_variables(path, params, batch_stats) -> None:
    """Model weights alone: what inference, feature extraction and the ensemble need."""
    save(path, {"params": params, "batch_stats": batch_stats})


def load_variables(path) -> dict:
    """{"params", "batch_stats"} ready for model.apply (numpy arrays)."""
    restored = load(path)
    if not isinstance(restored, dict) or "params" not in restored:
        raise ValueError(f"checkpoint {path} holds no model variables (no 'params' entry)")
    return {"params": restored["params"], "batch_stats": restored.get("batch_stats", {})}
