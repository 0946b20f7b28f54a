"""Data parallel: batches are sharded over a Mesh of all devices (axis "data"), the state replicated.

Multi-host: call `jax.distributed.initialize()`, then start the same script on every host; process 0
writes the checkpoints and history, and `fit` returns on every host once they are written: the run
folder must be on a shared filesystem, since every host reads best.msgpack back. The stages'
predictions, crops and reports are written through rightwhale/core/atomic.py, which lets only process 0
write (tested by simulating process 1; only one host has run it for real). The image cache is built
under a file lock instead. Not yet multi-host safe: `reproduce` and the annotated crops
(stages/crops.py); align's and localize's crop folders are process 0's.
"""
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all (or the given) devices; batches split along "data"."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), ("data",))


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Global arrays split over the mesh from this process's rows of a batch."""
    sharding, n = NamedSharding(mesh, P("data")), jax.process_count()
    return {k: jax.make_array_from_process_local_data(sharding, v, (len(v) * n, *v.shape[1:]))
            for k, v in batch.items()}


def to_host(x):
    """A device array as numpy, also where it spans several hosts."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
