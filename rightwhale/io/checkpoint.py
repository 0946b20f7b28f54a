"""Checkpoints as msgpack files (flax.serialization), written atomically; unlike pickle, reading
one runs no code. A run directory holds best.msgpack ({"params", "batch_stats"} of the best epoch)
and last.msgpack (everything needed to resume; see rightwhale.train.loop.fit).

Each file ends with a SHA-256 of its msgpack bytes, checked on load: a truncated, empty or overwritten
checkpoint is a one-line error naming it, never a traceback or garbage weights that print NaN. Files
written before the checksum load without it (their values are still checked to be finite).
"""
import hashlib
from pathlib import Path

import jax
import numpy as np
from flax import serialization

from rightwhale.core.atomic import write_bytes
from rightwhale.core.errors import DataError

MAGIC = b"rightwhale-sha256:"        # then 32 bytes of digest: the file's last 50 bytes


class CorruptCheckpoint(DataError, ValueError):
    """A checkpoint that cannot be what was saved (ValueError too, for callers that caught that before)."""


def save(path, tree) -> None:
    """Write a pytree (device or host arrays, dicts, struct dataclasses) to `path`."""
    data = serialization.msgpack_serialize(serialization.to_state_dict(jax.device_get(tree)))
    write_bytes(path, data + MAGIC + hashlib.sha256(data).digest())


def _corrupt(path: Path, why: str) -> CorruptCheckpoint:
    return CorruptCheckpoint(f"{path}: corrupt checkpoint ({why}); train that run again (python train.py "
                             f"--stage ... --run-dir {path.parent}), or restore the file")


def load(path, target=None):
    """The tree in `path` as nested dicts, or restored into the structure of `target` (a TrainState)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    data = path.read_bytes()
    tail = len(MAGIC) + 32
    if data[-tail:-32] == MAGIC:
        data, digest = data[:-tail], data[-32:]
        if hashlib.sha256(data).digest() != digest:
            raise _corrupt(path, "its checksum does not match: overwritten or damaged")
    elif not data:
        raise _corrupt(path, "empty file")
    try:
        restored = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack raises several unrelated types on bad bytes
        raise _corrupt(path, f"not readable msgpack: {type(e).__name__}: {e}") from e
    bad = [jax.tree_util.keystr(k) for k, v in jax.tree_util.tree_leaves_with_path(restored)
           if isinstance(v, np.ndarray) and v.dtype.kind == "f" and not np.isfinite(v).all()]
    if bad:
        raise _corrupt(path, f"non-finite values in {', '.join(bad[:3])}")
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
        raise _corrupt(Path(path), "no 'params' entry: not model variables")
    return {"params": restored["params"], "batch_stats": restored.get("batch_stats", {})}
