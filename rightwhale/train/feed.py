"""Batches onto the devices: each process reads its rows of a batch (a thread reads ahead), the ragged end
dropped or padded under a mask; `evaluate` and `predict` run every image once in eval mode."""
import functools
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np
from jax.sharding import Mesh

from rightwhale.train.sharding import data_mesh, replicate, shard_batch, to_host
from rightwhale.train.state import Task, TrainState, eval_step, forward


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    if batch_size < 1 or batch_size % mesh.size:
        raise ValueError(f"batch size {batch_size} must be a positive multiple of the "
                         f"{mesh.size} devices it is split over")


def check_images(images, what: str, targets=None) -> None:
    source = getattr(images, "filename", None) or what
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"{source}: images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    if targets is not None and len(targets) != len(images):
        raise ValueError(f"{source}: {len(images)} images but {len(targets)} targets")


def device_batches(data: dict, order, batch_size: int, mesh: Mesh, pad: bool):
    """Batches of the rows `order` (sorted within each) on the devices, read ahead in a thread; each process
    reads its share. The ragged end is dropped, or padded with copies of a row under "mask" 0."""
    share = lambda a: np.array_split(a, jax.process_count())[jax.process_index()]

    def load(start):
        idx = np.sort(order[start:start + batch_size])
        rows = share(np.pad(idx, (0, batch_size - len(idx)), constant_values=idx[0]))
        batch = {"image": np.asarray(data["image"][rows]),
                 "mask": share((np.arange(batch_size) < len(idx)).astype(np.float32))}
        if "target" in data:
            target = np.asarray(data["target"][rows])
            batch["target"] = target.astype(np.int32 if target.dtype.kind in "iu" else np.float32)
        return shard_batch(batch, mesh)

    with ThreadPoolExecutor(1) as reader:       # one thread, so batches come in order
        ahead = []
        for start in range(0, len(order) if pad else len(order) - len(order) % batch_size, batch_size):
            ahead.append(reader.submit(load, start))
            if len(ahead) > 2:
                yield ahead.pop(0).result()
        while ahead:
            yield ahead.pop(0).result()


def limit_in_flight(results, limit: int = 2) -> None:
    """Wait for older steps: dispatch runs ahead, and each queued step holds its batch."""
    if len(results) > limit:
        jax.block_until_ready(results[-limit - 1])


def evaluate(state: TrainState, task: Task, data: dict, batch_size: int, *,
             order=None, mesh: Mesh | None = None) -> dict:
    """Mean loss and metrics in eval mode over `data` (or its rows `order`), each image once."""
    mesh = mesh or data_mesh()
    order = np.arange(len(data["image"])) if order is None else order
    sums = []
    for batch in device_batches(data, order, batch_size, mesh, pad=True):
        sums.append(eval_step(state, batch, task)[0])
        limit_in_flight(sums)
    totals = {k: sum(float(to_host(s[k])) for s in sums) for k in sums[0]}
    return {k: v / totals["count"] for k, v in totals.items() if k != "count"}


_predict_batch = jax.jit(forward, static_argnums=0)


def predict(model, variables: dict, images, batch_size: int = 16):
    """(outputs, pre_logits) as numpy for any number of uint8 images, in eval mode."""
    check_images(images, "predict")
    mesh = data_mesh()
    check_batch_size(batch_size, mesh)
    variables = replicate({"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}, mesh)
    if len(images) == 0:
        shapes = jax.eval_shape(functools.partial(forward, model.apply), variables,
                                jax.ShapeDtypeStruct((1, *images.shape[1:]), np.uint8))
        return tuple(np.zeros((0, *s.shape[1:]), s.dtype) for s in shapes)
    results = [tuple(map(to_host, _predict_batch(model.apply, variables, batch["image"])))
               for batch in device_batches({"image": images}, np.arange(len(images)), batch_size, mesh, pad=True)]
    return tuple(np.concatenate(parts)[:len(images)] for parts in zip(*results))     # (outputs, pre_logits)
