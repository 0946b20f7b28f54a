"""The nolearn NeuralNet training loop of the original, as pure JAX functions.

Shaped like Flax's ImageNet example: a `TrainState` carrying step, params,
batch_stats, optimizer state and a PRNG key; jitted `train_step` / `eval_step`;
`fit` runs epochs, prints nolearn's table, keeps the best weights, stops
early and resumes from `last.msgpack` to the same bits as an uninterrupted run.

What a stage supplies is a `Task`: per-example loss and metrics and an
optional augmentation applied inside the jitted step.

Images travel as uint8 NHWC (4x less to read and transfer than float32) and
become float32 inside the step: x / 255 in [0, 1] (what augmentation warps),
then - 0.5. The original subtracted a per-pixel mean image of its training
cache; a constant centre needs no stored statistics, and batch norm after the
first convolution absorbs what remains.

Faithful to Lasagne/nolearn:
- loss = mean task loss + l2 * sum of squared kernels (regularize_network_params
  skips biases and batch-norm beta/gamma); the reported losses are task losses.
- Nesterov momentum is Lasagne's form (velocity holds lr-scaled gradients);
  Adam is optax's (Lasagne added epsilon before undoing the bias correction:
  the two differ only for gradients of order 1e-7 or smaller).
- StepDecay moves the learning rate once per epoch along linspace(start, stop,
  max_epochs), see `epoch_learning_rate`.
- Early stopping after `patience` epochs without a lower validation loss.
  (nolearn_utils' EarlyStopping also skipped epochs whose training loss
  exceeded the validation loss; not reproduced: with heavy augmentation that
  can disable stopping for the whole run.)

Data parallel: batches are sharded over a Mesh of all devices (axis "data"),
the state is replicated; one device runs the same code. Multi-host: start the
same script on every host, calling `jax.distributed.initialize()` first
(arguments coordinator_address="host0:1234", num_processes=N, process_id=i
where the cluster is not auto-detected). Every process draws the same
permutation and feeds its own slice of each global batch; process 0 writes
the run directory.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training import train_state
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from rightwhale import checkpoint, history as history_io
from rightwhale.config import Train
from rightwhale.metrics import top_k_hits


# --- tasks ---------------------------------------------------------------------

def _no_metrics(output, target):
    return {}


@dataclasses.dataclass(frozen=True)
class Task:
    """What is learned: per-example loss and metrics, optional in-step augmentation.

    loss(output, target) -> (B,); metrics(output, target) -> {name: (B,)},
    averaged over each epoch; augment(key, images in [0, 1], target) ->
    (images, target) or None; headline: the metric shown in the epoch table.
    Frozen and hashable: jit treats it as a static argument.
    """
    loss: Callable
    metrics: Callable = _no_metrics
    headline: str | None = None
    augment: Callable | None = None


def _softmax_cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def _accuracy(logits, labels):
    return {"accuracy": top_k_hits(logits, labels, 1).astype(jnp.float32)}


def _squared_error(output, target):
    # Lasagne's squared_error, aggregated by mean over all elements.
    return jnp.mean((output - target) ** 2, axis=tuple(range(1, output.ndim)))


def classification_task(augment=None) -> Task:
    """Softmax cross-entropy on logits and integer labels; accuracy."""
    return Task(_softmax_cross_entropy, _accuracy, "accuracy", augment)


def regression_task(metrics=_no_metrics, headline: str | None = None, augment=None) -> Task:
    """Mean squared error on raw outputs; `metrics` e.g. IoU of boxes or point errors."""
    return Task(_squared_error, metrics, headline, augment)


# --- state and optimizer -----------------------------------------------------------

class TrainState(train_state.TrainState):
    batch_stats: Any = None
    key: jax.Array = None                                   # per step: fold_in(key, step)
    l2: float = struct.field(pytree_node=False, default=0.0)


def epoch_learning_rate(cfg: Train, epoch):
    """Learning rate of 0-based `epoch` under nolearn_utils' StepDecay.

    StepDecay ran after each epoch e (1-based) and set lr = linspace(start,
    stop, max_epochs)[e - 1], so the first two epochs train at start, epoch
    e >= 2 at entry e - 2, and `stop` itself is set after the last epoch and
    never used. Without final_learning_rate the rate is constant.
    """
    if cfg.final_learning_rate is None or cfg.max_epochs < 2:
        return jnp.float32(cfg.learning_rate)
    index = jnp.clip(jnp.asarray(epoch) - 1, 0, cfg.max_epochs - 1)
    step = (cfg.final_learning_rate - cfg.learning_rate) / (cfg.max_epochs - 1)
    return (cfg.learning_rate + step * index).astype(jnp.float32)


def make_optimizer(cfg: Train, steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam or Lasagne's Nesterov momentum, with StepDecay per epoch."""
    # One object per distinct update rule: a state holding an equal optimizer reuses
    # the compiled steps (runs differing only in patience, seed or, without decay,
    # max_epochs share them).
    decays = cfg.final_learning_rate is not None and cfg.max_epochs >= 2
    rule = Train(optimizer=cfg.optimizer, learning_rate=cfg.learning_rate, momentum=cfg.momentum,
                 final_learning_rate=cfg.final_learning_rate if decays else None,
                 max_epochs=cfg.max_epochs if decays else 1)
    return _make_optimizer(rule, steps_per_epoch if decays else 1)


@functools.lru_cache(maxsize=32)
def _make_optimizer(cfg: Train, steps_per_epoch: int) -> optax.GradientTransformation:
    def schedule(count):
        return epoch_learning_rate(cfg, count // steps_per_epoch)

    if cfg.optimizer == "adam":
        return optax.adam(schedule)
    if cfg.optimizer == "nesterov":
        # Scaling first makes the trace Lasagne's velocity v = m v - lr g; update m v - lr g.
        return optax.chain(optax.scale_by_learning_rate(schedule),
                           optax.trace(decay=cfg.momentum, nesterov=True))
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: expected 'adam' or 'nesterov'")


def _classic_threefry():
    """JAX's default (partitionable) threefry compiles multi-dimensional draws (conv
    kernels, dropout masks) 3-10x slower on XLA:CPU. Our draws are small (weights
    at init, per-example masks and augmentation parameters), so the classic scheme
    costs nothing on accelerators; values stay independent of the sharding."""
    return jax.threefry_partitionable(False)


def create_train_state(model, cfg: Train, image_shape, steps_per_epoch: int, key,
                       mesh: Mesh | None = None) -> TrainState:
    """Initialise weights from `key`, replicated over the mesh."""
    init = _initializer(model, make_optimizer(cfg, steps_per_epoch), cfg.l2, tuple(image_shape),
                        mesh or data_mesh())
    with _classic_threefry():
        return init(key)


@functools.lru_cache(maxsize=32)  # one compiled initializer per setting
def _initializer(model, tx, l2, image_shape, mesh):
    def init(key):
        init_key, dropout_key, state_key = jax.random.split(key, 3)
        variables = model.init({"params": init_key, "dropout": dropout_key},
                               jnp.zeros((1, *image_shape), jnp.float32), train=False)
        return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                                 batch_stats=variables.get("batch_stats", {}), key=state_key, l2=l2,
                                 ).replace(step=jnp.int32(0))  # not weak-typed: as a restored one

    return jax.jit(init, out_shardings=NamedSharding(mesh, P()))


def l2_penalty(params):
    """Sum of squared kernels (conv and dense weights), as Lasagne's regularizable params."""
    return sum(jnp.sum(jnp.square(x)) for path, x in jax.tree_util.tree_leaves_with_path(params)
               if getattr(path[-1], "key", None) == "kernel")


# --- steps ----------------------------------------------------------------------------

def _to_float01(images):
    return images.astype(jnp.float32) / 255.0


def model_input(images01):
    """What the networks see: images in [0, 1] centred on 0. Shared with TTA and saliency."""
    return images01 - 0.5


def _forward(apply_fn, variables, images):
    """Eval-mode outputs and GAP features of uint8 images."""
    output, extras = apply_fn(variables, model_input(_to_float01(images)), train=False)
    return output, extras["pre_logits"]


@functools.partial(jax.jit, static_argnames="task", donate_argnames="state")
def train_step(state: TrainState, batch: dict, task: Task):
    """One update on batch {"image": uint8, "target"}; consumes (donates) `state`."""
    with _classic_threefry():
        return _train_step(state, batch, task)


def _train_step(state, batch, task):
    augment_key, dropout_key = jax.random.split(jax.random.fold_in(state.key, state.step))
    images, target = _to_float01(batch["image"]), batch["target"]
    if task.augment is not None:
        images, target = task.augment(augment_key, images, target)
    images = model_input(images)

    def objective(params):
        (output, _), updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats}, images, train=True,
            rngs={"dropout": dropout_key}, mutable=["batch_stats"])
        data_loss = jnp.mean(task.loss(output, target))
        return data_loss + state.l2 * l2_penalty(params), (data_loss, output, updates)

    grads, (data_loss, output, updates) = jax.grad(objective, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads).replace(
        batch_stats=updates.get("batch_stats", state.batch_stats))
    metrics = {name: jnp.mean(v) for name, v in task.metrics(output, target).items()}
    return state, {"loss": data_loss, **metrics}


@functools.partial(jax.jit, static_argnames="task")
def eval_step(state: TrainState, batch: dict, task: Task):
    """Dropout off, running batch-norm statistics. Returns (masked sums, outputs, pre_logits).

    The sums (loss, each metric, "count") let padded batches count each real image once.
    """
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    output, pre_logits = _forward(state.apply_fn, variables, batch["image"])
    mask = batch.get("mask", jnp.ones(output.shape[0], jnp.float32))
    values = {"loss": task.loss(output, batch["target"]), **task.metrics(output, batch["target"])}
    sums = {name: jnp.sum(v * mask) for name, v in values.items()}
    return {**sums, "count": jnp.sum(mask)}, output, pre_logits


_predict_batch = jax.jit(_forward, static_argnums=0)


# --- devices ----------------------------------------------------------------------------

def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all (or the given) devices; batches split along "data"."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), ("data",))


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Global arrays split over the mesh from this process's rows of a batch."""
    sharding = NamedSharding(mesh, P("data"))
    n = jax.process_count()
    return {k: jax.make_array_from_process_local_data(sharding, v, (len(v) * n, *v.shape[1:]))
            for k, v in batch.items()}


def _check_batch_size(batch_size: int, mesh: Mesh) -> None:
    if batch_size < 1 or batch_size % mesh.size:
        raise ValueError(f"batch size {batch_size} must be a positive multiple of the "
                         f"{mesh.size} devices it is split over")


def _host(x):
    """A device array as numpy, also where it spans several hosts."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


# --- data feeding ---------------------------------------------------------------------------

def _check_data(data, what: str) -> int:
    if not isinstance(data, dict) or "image" not in data or "target" not in data:
        raise ValueError(f"{what}: expected a dict with 'image' and 'target' arrays")
    images, target = data["image"], data["target"]
    source = getattr(images, "filename", None) or what
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"{source}: images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    if len(target) != len(images):
        raise ValueError(f"{source}: {len(images)} images but {len(target)} targets")
    return len(images)


def _batches(order, batch_size: int, pad: bool):
    """(indices, mask) per batch: the ragged end dropped, or padded with mask 0."""
    stop = len(order) if pad else len(order) - len(order) % batch_size
    for start in range(0, stop, batch_size):
        idx = np.asarray(order[start:start + batch_size])
        mask = np.zeros(batch_size, np.float32)
        mask[:len(idx)] = 1
        yield np.concatenate([idx, np.full(batch_size - len(idx), idx[0])]), mask


def _device_batch(data: dict, idx, mesh: Mesh, mask=None) -> dict:
    """Gather this process's rows (a read from the memmap) and place them on devices."""
    rows = np.array_split(idx, jax.process_count())[jax.process_index()]
    batch = {"image": np.asarray(data["image"][rows])}
    if "target" in data:
        target = np.asarray(data["target"][rows])
        batch["target"] = target.astype(np.int32 if target.dtype.kind in "iu" else np.float32)
    if mask is not None:
        batch["mask"] = np.array_split(mask, jax.process_count())[jax.process_index()]
    return shard_batch(batch, mesh)


def _prefetch(items, size: int = 2):
    """Run an iterator in a thread, `size` items ahead: disk reads overlap compute."""
    buffer, stop, done = queue.Queue(maxsize=size), threading.Event(), object()

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        pass
            item = done
        except BaseException as e:  # re-raised in the consumer
            item = e
        while not stop.is_set():
            try:
                return buffer.put(item, timeout=0.1)
            except queue.Full:
                pass

    threading.Thread(target=produce, daemon=True).start()
    try:
        while (item := buffer.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


# --- epochs ------------------------------------------------------------------------------------

def _limit_in_flight(results, limit: int = 2) -> None:
    """Wait for older steps: dispatch runs ahead, and each queued step holds its batch."""
    if len(results) > limit:
        jax.block_until_ready(results[-limit - 1])


def _train_epoch(state, task, data, order, batch_size, mesh, bar):
    batches = (_device_batch(data, np.sort(idx), mesh) for idx, _ in _batches(order, batch_size, False))
    results = []
    for batch in _prefetch(batches):
        state, metrics = train_step(state, batch, task)
        results.append(metrics)
        _limit_in_flight(results)
        bar.update()
    return state, float(np.mean([_host(m["loss"]) for m in results]))


def evaluate(state: TrainState, task: Task, data: dict, batch_size: int, *,
             order=None, mesh: Mesh | None = None) -> dict:
    """Mean loss and metrics in eval mode over `data` (or its rows `order`), each image once."""
    mesh = mesh or data_mesh()
    order = np.arange(len(data["image"])) if order is None else order
    batches = (_device_batch(data, idx, mesh, mask) for idx, mask in _batches(order, batch_size, True))
    sums = []
    for batch in _prefetch(batches):
        sums.append(eval_step(state, batch, task)[0])
        _limit_in_flight(sums)
    totals = {k: sum(float(_host(s[k])) for s in sums) for k in sums[0]}
    count = totals.pop("count")
    return {k: v / count for k, v in totals.items()}


def predict(model, variables: dict, images, batch_size: int = 16):
    """(outputs, pre_logits) as numpy for any number of uint8 images, in eval mode."""
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"{getattr(images, 'filename', None) or 'predict'}: images must be uint8 "
                         f"(N, H, W, C), got {images.dtype} {images.shape}")
    mesh = data_mesh()
    _check_batch_size(batch_size, mesh)
    variables = replicate({"params": variables["params"],
                           "batch_stats": variables.get("batch_stats", {})}, mesh)
    if len(images) == 0:
        shapes = jax.eval_shape(functools.partial(_forward, model.apply), variables,
                                jax.ShapeDtypeStruct((1, *images.shape[1:]), np.uint8))
        return tuple(np.zeros((0, *s.shape[1:]), s.dtype) for s in shapes)
    data = {"image": images}
    batches = ((_device_batch(data, idx, mesh), int(mask.sum()))
               for idx, mask in _batches(np.arange(len(images)), batch_size, True))
    outputs, features = [], []
    for batch, n in _prefetch(batches):
        output, pre_logits = _predict_batch(model.apply, variables, batch["image"])
        outputs.append(_host(output)[:n])
        features.append(_host(pre_logits)[:n])
    return np.concatenate(outputs), np.concatenate(features)


# --- fit -------------------------------------------------------------------------------------------

PLOT_EVERY_S = 30.0  # replotting takes ~0.1 s: fine per epoch on real data, not for tiny epochs


def _run_template(state):
    """What last.msgpack holds besides the state: enough to continue as if never stopped."""
    return {"state": state, "epoch": 0, "best_valid_loss": math.inf, "best_epoch": 0,
            "bad_epochs": 0, "history_json": "[]", "n_train": 0, "batch_size": 0}


def _check_fit_inputs(cfg: Train, train: dict, valid: dict, mesh: Mesh) -> int:
    """Steps per epoch, after checking what fit was handed."""
    n_train, n_valid = _check_data(train, "train"), _check_data(valid, "valid")
    if n_valid == 0:
        raise ValueError("valid: the validation set is empty; early stopping and best weights need one")
    if train["image"].shape[1:] != valid["image"].shape[1:]:
        raise ValueError(f"train images {train['image'].shape[1:]} and valid images "
                         f"{valid['image'].shape[1:]} differ in shape")
    _check_batch_size(cfg.batch_size, mesh)
    if n_train < cfg.batch_size:
        raise ValueError(f"train: {n_train} images make no full batch of {cfg.batch_size}")
    return n_train // cfg.batch_size


def _start_run(model, cfg: Train, run_dir: Path, n_train: int, image_shape, mesh, resume, log) -> dict:
    """A fresh run, or the one saved in run_dir/last.msgpack."""
    last_path = run_dir / "last.msgpack"
    if last_path.exists() and not resume:
        raise FileExistsError(f"{last_path} exists: pass resume=True to continue that run, "
                              "or choose another run directory")
    state = create_train_state(model, cfg, image_shape, n_train // cfg.batch_size,
                               jax.random.PRNGKey(cfg.seed), mesh)
    if not last_path.exists():
        if resume:
            log(f"nothing to resume in {run_dir}: starting a new run")
        return _run_template(state) | {"n_train": n_train, "batch_size": cfg.batch_size}
    saved = checkpoint.load(last_path, _run_template(jax.tree_util.tree_map(_host, state)))
    if (saved["n_train"], saved["batch_size"]) != (n_train, cfg.batch_size):
        raise ValueError(f"{last_path} was trained on {saved['n_train']} images in batches of "
                         f"{saved['batch_size']}, not {n_train} in batches of {cfg.batch_size}")
    log(f"resuming {run_dir} after epoch {saved['epoch']}")
    return saved | {"state": replicate(saved["state"], mesh)}


def _save_epoch(run_dir: Path, run: dict, history: list, improved: bool) -> None:
    host_state = jax.tree_util.tree_map(_host, run["state"])
    if improved:  # before last.msgpack, so that last never refers to a missing best
        checkpoint.save_variables(run_dir / "best.msgpack", host_state.params, host_state.batch_stats)
    checkpoint.save(run_dir / "last.msgpack", run | {"state": host_state})
    history_io.save_history(run_dir / "history.json", history)


def _run_epoch(state, epoch: int, cfg: Train, task: Task, train, valid, train_eval_order, mesh, bar):
    """Train one epoch, then evaluate: the new state and the epoch's history record."""
    started = time.perf_counter()
    order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train["image"]))
    state, train_loss = _train_epoch(state, task, train, order, cfg.batch_size, mesh, bar)
    train_eval = evaluate(state, task, train, cfg.batch_size, order=train_eval_order, mesh=mesh)
    valid_eval = evaluate(state, task, valid, cfg.batch_size, mesh=mesh)
    valid_loss = valid_eval.pop("loss")
    return state, {"epoch": epoch, "train_loss": train_loss, "train_eval_loss": train_eval["loss"],
                   "valid_loss": valid_loss, "train_valid_ratio": train_loss / valid_loss if valid_loss else math.inf,
                   **{f"valid_{k}": v for k, v in valid_eval.items()},
                   "learning_rate": float(epoch_learning_rate(cfg, epoch - 1)),
                   "seconds": time.perf_counter() - started}


_LOSSES = {"train_loss": "training loss", "train_eval_loss": "training loss (dropout off)",
           "valid_loss": "validation loss"}


def fit(model, cfg: Train, task: Task, train: dict, valid: dict, run_dir, *,
        resume: bool = False, progress: bool = True, log=print):
    """Train with nolearn's loop; returns the final (state, history).

    run_dir receives best.msgpack (weights of the lowest validation loss),
    last.msgpack (everything to resume), history.json and history.png.
    resume=True continues from last.msgpack when it exists. The training loss
    with dropout off is measured on a fixed subset of the training images as
    large as the validation set.
    """
    run_dir, mesh = Path(run_dir), data_mesh()
    steps_per_epoch = _check_fit_inputs(cfg, train, valid, mesh)
    n_train, n_valid = len(train["image"]), len(valid["image"])
    run = _start_run(model, cfg, run_dir, n_train, train["image"].shape[1:], mesh, resume, log)
    history = json.loads(run["history_json"])
    train_eval_order = np.sort(np.random.default_rng(cfg.seed).permutation(n_train)[:n_valid])
    writer, plotted, unplotted = jax.process_index() == 0, time.monotonic(), False

    log(history_io.table_header(task.headline))
    try:
        with tqdm(total=steps_per_epoch, disable=not progress, leave=False) as bar:
            while run["epoch"] < cfg.max_epochs and run["bad_epochs"] < cfg.patience:
                epoch = run["epoch"] + 1
                bar.reset()
                bar.set_description(f"epoch {epoch}")
                state, record = _run_epoch(run["state"], epoch, cfg, task, train, valid, train_eval_order,
                                           mesh, bar)
                for key, name in _LOSSES.items():
                    if not math.isfinite(record[key]):
                        raise FloatingPointError(
                            f"epoch {epoch}: {name} is {record[key]}; training diverged and stopped. "
                            f"The checkpoints of epoch {run['epoch']} in {run_dir} were left unchanged.")
                record["best"] = improved = record["valid_loss"] < run["best_valid_loss"]
                history.append(record)
                run |= {"state": state, "epoch": epoch, "history_json": json.dumps(history),
                        "bad_epochs": 0 if improved else run["bad_epochs"] + 1}
                if improved:
                    run |= {"best_valid_loss": record["valid_loss"], "best_epoch": epoch}
                bar.clear()
                log(history_io.table_row(record, task.headline))
                if writer:
                    _save_epoch(run_dir, run, history, improved)
                    unplotted = True
                    if time.monotonic() - plotted > PLOT_EVERY_S:
                        history_io.plot_history(run_dir / "history.png", history, task.headline)
                        plotted, unplotted = time.monotonic(), False
    finally:
        if unplotted:  # the curves the throttle skipped, also when stopped by an error
            history_io.plot_history(run_dir / "history.png", json.loads(run["history_json"]), task.headline)
    if run["bad_epochs"] >= cfg.patience:
        log(f"Early stopping: best valid loss {run['best_valid_loss']:.6f} at epoch {run['best_epoch']}.")
    return run["state"], history
