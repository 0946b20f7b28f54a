"""The nolearn NeuralNet training loop of the original as pure JAX functions, shaped like Flax's
ImageNet example: a `TrainState` (with batch_stats and a PRNG key), jitted `train_step` / `eval_step`,
and `fit`: epochs, nolearn's table, best weights, early stopping, and resuming from `last.msgpack` to
the same bits as an uninterrupted run. A stage supplies a `Task`.

Images travel as uint8 NHWC (4x less to read and transfer than float32) and become x / 255 - 0.5 in
the step: a constant centre, no stored statistics (batch norm after the first convolution absorbs the
rest). The original stored a mean image but never subtracted it (docs/final-ensemble.md).

As Lasagne/nolearn: loss = mean task loss + l2 * sum of squared kernels and batch-norm gammas
(Train.l2_gamma, as the original's regularizable tags) (tables report task losses);
Lasagne's Nesterov momentum; StepDecay once per epoch; early stopping after `patience` epochs without
a lower validation loss (nolearn_utils also skipped epochs whose training loss exceeded the validation
loss: with heavy augmentation, that can disable stopping for a whole run).

Data parallel: batches are sharded over a Mesh of all devices (axis "data"). Multi-host: call
`jax.distributed.initialize()`, then start the same script on every host; process 0 writes the
checkpoints and history, and `fit` returns on every host once they are written: the run folder must
be on a shared filesystem, since every host reads best.msgpack back. The stages' predictions, crops and
reports are written through rightwhale/atomic.py, which lets only process 0 write (tested by simulating
process 1; only one host has run it for real). The image cache is built under a file lock instead. Not yet
multi-host safe: `reproduce` and the annotated crops (stages/crops.py); align's and localize's crop folders
are process 0's.
"""
import dataclasses
import functools
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
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
from rightwhale.atomic import write_json
from rightwhale.config import Train
from rightwhale.images import model_input
from rightwhale.metrics import top_k_hits


def _no_metrics(output, target):
    return {}


@dataclasses.dataclass(frozen=True)  # hashable: jit takes it as a static argument
class Task:
    """loss(output, target) -> (B,); metrics(output, target) -> {name: (B,)}, averaged per epoch;
    augment(key, images in [0, 1], target) -> (images, target); headline: the metric in the table."""
    loss: Callable
    metrics: Callable = _no_metrics
    headline: str | None = None
    augment: Callable | None = None


def _accuracy(logits, labels):
    return {"accuracy": top_k_hits(logits, labels, 1).astype(jnp.float32)}


def _squared_error(output, target):  # Lasagne's squared_error, aggregated by mean over all elements
    return jnp.mean((output - target) ** 2, axis=tuple(range(1, output.ndim)))


def classification_task(augment=None) -> Task:
    """Softmax cross-entropy on logits and integer labels; accuracy."""
    return Task(optax.softmax_cross_entropy_with_integer_labels, _accuracy, "accuracy", augment)


def regression_task(metrics=_no_metrics, headline: str | None = None, augment=None) -> Task:
    """Mean squared error on raw outputs; `metrics` e.g. IoU of boxes or point errors."""
    return Task(_squared_error, metrics, headline, augment)


class TrainState(train_state.TrainState):
    batch_stats: Any = None
    key: jax.Array = None                                   # per step: fold_in(key, step)
    l2: float = struct.field(pytree_node=False, default=0.0)
    l2_gamma: bool = struct.field(pytree_node=False, default=False)


def epoch_learning_rate(cfg: Train, epoch):
    """Learning rate of 0-based `epoch` under nolearn_utils' StepDecay, which after each epoch e (1-based)
    set lr = linspace(start, stop, max_epochs)[e - 1]: the first two epochs train at start, epoch e >= 2
    at entry e - 2, and `stop` is never used. Without final_learning_rate the rate is constant."""
    if cfg.final_learning_rate is None or cfg.max_epochs < 2:
        return jnp.float32(cfg.learning_rate)
    index = jnp.clip(jnp.asarray(epoch) - 1, 0, cfg.max_epochs - 1)
    step = (cfg.final_learning_rate - cfg.learning_rate) / (cfg.max_epochs - 1)
    return (cfg.learning_rate + step * index).astype(jnp.float32)


def make_optimizer(cfg: Train, steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam or Lasagne's Nesterov momentum, with StepDecay per epoch."""
    # One cached object per update rule: runs differing only in patience, seed... share compiled steps.
    decays = cfg.final_learning_rate is not None and cfg.max_epochs >= 2
    rule = Train(optimizer=cfg.optimizer, learning_rate=cfg.learning_rate, momentum=cfg.momentum,
                 final_learning_rate=cfg.final_learning_rate if decays else None,
                 max_epochs=cfg.max_epochs if decays else 1)
    return _make_optimizer(rule, steps_per_epoch if decays else 1)


@functools.lru_cache(maxsize=32)
def _make_optimizer(cfg: Train, steps_per_epoch: int) -> optax.GradientTransformation:
    schedule = lambda count: epoch_learning_rate(cfg, count // steps_per_epoch)
    if cfg.optimizer == "adam":
        return optax.adam(schedule)  # Lasagne's differs only for gradients of order 1e-7 or smaller
    if cfg.optimizer == "nesterov":
        # Scaling first makes the trace Lasagne's velocity v = m v - lr g; update m v - lr g.
        return optax.chain(optax.scale_by_learning_rate(schedule),
                           optax.trace(decay=cfg.momentum, nesterov=True))
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: expected 'adam' or 'nesterov'")


def create_train_state(model, cfg: Train, image_shape, steps_per_epoch: int, key,
                       mesh: Mesh | None = None) -> TrainState:
    """Initialise weights from `key`, replicated over the mesh."""
    init = _initializer(model, make_optimizer(cfg, steps_per_epoch), cfg.l2, cfg.l2_gamma, tuple(image_shape),
                        mesh or data_mesh())
    # Classic threefry: the default compiles 3-10x slower on XLA:CPU, and our draws are too small to need it.
    with jax.threefry_partitionable(False):
        return init(key)


@functools.lru_cache(maxsize=32)  # one compiled initializer per setting
def _initializer(model, tx, l2, l2_gamma, image_shape, mesh):
    def init(key):
        init_key, dropout_key, state_key = jax.random.split(key, 3)
        variables = model.init({"params": init_key, "dropout": dropout_key},
                               jnp.zeros((1, *image_shape), jnp.float32), train=False)
        return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                                 batch_stats=variables.get("batch_stats", {}), key=state_key, l2=l2,
                                 l2_gamma=l2_gamma).replace(step=jnp.int32(0))  # not weak-typed: as a restored one

    return jax.jit(init, out_shardings=NamedSharding(mesh, P()))


def l2_penalty(params, gamma: bool = False):
    """Sum of squared kernels (conv and dense weights), and with `gamma` of batch-norm scales too: the
    original's regularizable params (its BatchNormLayer tagged gamma regularizable)."""
    penalised = ("kernel", "scale") if gamma else ("kernel",)
    return sum(jnp.sum(jnp.square(x)) for path, x in jax.tree_util.tree_leaves_with_path(params)
               if getattr(path[-1], "key", None) in penalised)


def _forward(apply_fn, variables, images):
    """Eval-mode outputs and GAP features of uint8 images."""
    output, extras = apply_fn(variables, model_input(images.astype(jnp.float32) / 255.0), train=False)
    return output, extras["pre_logits"]


_predict_batch = jax.jit(_forward, static_argnums=0)


@functools.partial(jax.jit, static_argnames="task", donate_argnames="state")
def train_step(state: TrainState, batch: dict, task: Task):
    """One update on batch {"image": uint8, "target"}; consumes (donates) `state`."""
    with jax.threefry_partitionable(False):  # as in create_train_state
        augment_key, dropout_key = jax.random.split(jax.random.fold_in(state.key, state.step))
        images, target = batch["image"].astype(jnp.float32) / 255.0, batch["target"]
        if task.augment is not None:
            images, target = task.augment(augment_key, images, target)
        images = model_input(images)

        def objective(params):
            (output, _), updates = state.apply_fn(
                {"params": params, "batch_stats": state.batch_stats}, images, train=True,
                rngs={"dropout": dropout_key}, mutable=["batch_stats"])
            data_loss = jnp.mean(task.loss(output, target))
            return data_loss + state.l2 * l2_penalty(params, state.l2_gamma), (data_loss, output, updates)

        grads, (data_loss, output, updates) = jax.grad(objective, has_aux=True)(state.params)
        state = state.apply_gradients(grads=grads).replace(
            batch_stats=updates.get("batch_stats", state.batch_stats))
        metrics = {name: jnp.mean(v) for name, v in task.metrics(output, target).items()}
        return state, {"loss": data_loss, **metrics}


@functools.partial(jax.jit, static_argnames="task")
def eval_step(state: TrainState, batch: dict, task: Task):
    """Dropout off, running batch-norm statistics. Returns (masked sums, outputs, pre_logits):
    the sums (loss, each metric, "count") let padded batches count each real image once."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    output, pre_logits = _forward(state.apply_fn, variables, batch["image"])
    mask = batch.get("mask", jnp.ones(output.shape[0], jnp.float32))
    values = {"loss": task.loss(output, batch["target"]), **task.metrics(output, batch["target"])}
    sums = {name: jnp.sum(v * mask) for name, v in values.items()}
    return {**sums, "count": jnp.sum(mask)}, output, pre_logits


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


def _check_images(images, what: str, targets=None) -> None:
    source = getattr(images, "filename", None) or what
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"{source}: images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    if targets is not None and len(targets) != len(images):
        raise ValueError(f"{source}: {len(images)} images but {len(targets)} targets")


def _device_batches(data: dict, order, batch_size: int, mesh: Mesh, pad: bool):
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


def _limit_in_flight(results, limit: int = 2) -> None:
    """Wait for older steps: dispatch runs ahead, and each queued step holds its batch."""
    if len(results) > limit:
        jax.block_until_ready(results[-limit - 1])


def evaluate(state: TrainState, task: Task, data: dict, batch_size: int, *,
             order=None, mesh: Mesh | None = None) -> dict:
    """Mean loss and metrics in eval mode over `data` (or its rows `order`), each image once."""
    mesh = mesh or data_mesh()
    order = np.arange(len(data["image"])) if order is None else order
    sums = []
    for batch in _device_batches(data, order, batch_size, mesh, pad=True):
        sums.append(eval_step(state, batch, task)[0])
        _limit_in_flight(sums)
    totals = {k: sum(float(_host(s[k])) for s in sums) for k in sums[0]}
    return {k: v / totals["count"] for k, v in totals.items() if k != "count"}


def predict(model, variables: dict, images, batch_size: int = 16):
    """(outputs, pre_logits) as numpy for any number of uint8 images, in eval mode."""
    _check_images(images, "predict")
    mesh = data_mesh()
    _check_batch_size(batch_size, mesh)
    variables = replicate({"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}, mesh)
    if len(images) == 0:
        shapes = jax.eval_shape(functools.partial(_forward, model.apply), variables,
                                jax.ShapeDtypeStruct((1, *images.shape[1:]), np.uint8))
        return tuple(np.zeros((0, *s.shape[1:]), s.dtype) for s in shapes)
    results = [tuple(map(_host, _predict_batch(model.apply, variables, batch["image"])))
               for batch in _device_batches({"image": images}, np.arange(len(images)), batch_size, mesh, pad=True)]
    return tuple(np.concatenate(parts)[:len(images)] for parts in zip(*results))     # (outputs, pre_logits)


_NEW_RUN = {"epoch": 0, "best_valid_loss": math.inf, "best_epoch": 0, "bad_epochs": 0, "history_json": "[]",
            "n_train": 0, "batch_size": 0}    # last.msgpack besides the state: all a run needs to continue


def _start_run(model, cfg: Train, run_dir: Path, train: dict, valid: dict, mesh, resume, log) -> dict:
    """Check what fit was handed; a fresh run, or the one saved in run_dir/last.msgpack."""
    for what, data in (("train", train), ("valid", valid)):
        if not isinstance(data, dict) or "image" not in data or "target" not in data:
            raise ValueError(f"{what}: expected a dict with 'image' and 'target' arrays")
        _check_images(data["image"], what, data["target"])
    n_train, n_valid = len(train["image"]), len(valid["image"])
    if n_valid == 0:
        raise ValueError("valid: the validation set is empty; early stopping and best weights need one")
    if train["image"].shape[1:] != valid["image"].shape[1:]:
        raise ValueError(f"train images {train['image'].shape[1:]} and valid images "
                         f"{valid['image'].shape[1:]} differ in shape")
    _check_batch_size(cfg.batch_size, mesh)
    if n_train < cfg.batch_size:
        raise ValueError(f"train: {n_train} images make no full batch of {cfg.batch_size}")
    last_path = run_dir / "last.msgpack"
    if last_path.exists() and not resume:
        raise FileExistsError(f"{last_path} exists: pass resume=True to continue that run, "
                              "or choose another run directory")
    state = create_train_state(model, cfg, train["image"].shape[1:], n_train // cfg.batch_size,
                               jax.random.PRNGKey(cfg.seed), mesh)
    if not last_path.exists():
        if resume:
            log(f"nothing to resume in {run_dir}: starting a new run")
        return {"state": state, **_NEW_RUN, "n_train": n_train, "batch_size": cfg.batch_size}
    saved = checkpoint.load(last_path, {"state": jax.tree_util.tree_map(_host, state), **_NEW_RUN})
    if (saved["n_train"], saved["batch_size"]) != (n_train, cfg.batch_size):
        raise ValueError(f"{last_path} was trained on {saved['n_train']} images in batches of "
                         f"{saved['batch_size']}, not {n_train} in batches of {cfg.batch_size}")
    log(f"resuming {run_dir} after epoch {saved['epoch']}")
    return saved | {"state": replicate(saved["state"], mesh)}


def _evaluate_halves(state, task: Task, valid: dict, batch_size: int, mesh):
    """Validation scores, and each half's (even and odd rows) apart: the best epoch is chosen by the same
    images' loss, and choosing it on one half and reading the other measures what that choice flatters."""
    n = len(valid["image"])
    if n < 2:
        return evaluate(state, task, valid, batch_size, mesh=mesh), []
    halves = [evaluate(state, task, valid, batch_size, order=np.arange(h, n, 2), mesh=mesh) for h in (0, 1)]
    sizes = ((n + 1) // 2, n // 2)
    return {k: sum(size * half[k] for size, half in zip(sizes, halves)) / n for k in halves[0]}, halves


def _run_epoch(state, epoch: int, cfg: Train, task: Task, train, valid, train_eval_order, mesh, bar):
    """Train one epoch, then evaluate: the new state and the epoch's history record."""
    started = time.perf_counter()
    order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train["image"]))
    losses = []
    for batch in _device_batches(train, order, cfg.batch_size, mesh, pad=False):
        state, metrics = train_step(state, batch, task)
        losses.append(metrics["loss"])
        _limit_in_flight(losses)
        bar.update()
    train_loss = float(np.mean([_host(loss) for loss in losses]))
    train_eval = evaluate(state, task, train, cfg.batch_size, order=train_eval_order, mesh=mesh)
    valid_eval, halves = _evaluate_halves(state, task, valid, cfg.batch_size, mesh)
    valid_loss = valid_eval.pop("loss")
    return state, {"epoch": epoch, "train_loss": train_loss, "train_eval_loss": train_eval["loss"],
                   "valid_loss": valid_loss, "train_valid_ratio": train_loss / valid_loss if valid_loss else math.inf,
                   **{f"valid_{k}": v for k, v in valid_eval.items()},
                   **{f"valid_loss_half{h}": half["loss"] for h, half in enumerate(halves)},
                   "learning_rate": float(epoch_learning_rate(cfg, epoch - 1)),
                   "seconds": time.perf_counter() - started}


def fit(model, cfg: Train, task: Task, train: dict, valid: dict, run_dir, *,
        resume: bool = False, progress: bool = True, log=print):
    """Train with nolearn's loop; returns the final (state, history). run_dir receives best.msgpack (weights
    of the lowest validation loss), last.msgpack (all that resume=True needs), history.json and history.png.
    The loss with dropout off is measured on a fixed subset of the training images, as many as valid's."""
    run_dir, mesh = Path(run_dir), data_mesh()
    run = _start_run(model, cfg, run_dir, train, valid, mesh, resume, log)
    history = json.loads(run["history_json"])
    n_train, n_valid = len(train["image"]), len(valid["image"])
    train_eval_order = np.sort(np.random.default_rng(cfg.seed).permutation(n_train)[:n_valid])
    writer, plotted, unplotted = jax.process_index() == 0, time.monotonic(), False
    log(history_io.table_header(task.headline))
    try:
        with tqdm(total=n_train // cfg.batch_size, disable=not progress, leave=False) as bar:
            while run["epoch"] < cfg.max_epochs and run["bad_epochs"] < cfg.patience:
                epoch = run["epoch"] + 1
                bar.reset()
                bar.set_description(f"epoch {epoch}")
                state, record = _run_epoch(run["state"], epoch, cfg, task, train, valid, train_eval_order, mesh, bar)
                for key, name in (("train_loss", "training loss"), ("train_eval_loss", "training loss (dropout off)"),
                                  ("valid_loss", "validation loss")):
                    if not math.isfinite(record[key]):
                        raise FloatingPointError(
                            f"epoch {epoch}: {name} is {record[key]}; training diverged and stopped. "
                            f"The checkpoints of epoch {run['epoch']} in {run_dir} were left unchanged.")
                record["best"] = improved = record["valid_loss"] < run["best_valid_loss"]
                history.append(record)
                run |= {"state": state, "epoch": epoch, "history_json": json.dumps(history),
                        "bad_epochs": 0 if improved else run["bad_epochs"] + 1}
                run |= {"best_valid_loss": record["valid_loss"], "best_epoch": epoch} if improved else {}
                bar.clear()
                log(history_io.table_row(record, task.headline))
                if writer:
                    host_state = jax.tree_util.tree_map(_host, state)
                    if improved:  # before last.msgpack, so that last never refers to a missing best
                        checkpoint.save_variables(run_dir / "best.msgpack", host_state.params, host_state.batch_stats)
                    checkpoint.save(run_dir / "last.msgpack", run | {"state": host_state})
                    write_json(run_dir / "history.json", history)
                    unplotted = True
                    if time.monotonic() - plotted > 30:   # seconds; replotting takes ~0.1 s, too long for tiny epochs
                        history_io.plot_history(run_dir / "history.png", history, task.headline)
                        plotted, unplotted = time.monotonic(), False
    finally:
        if unplotted:  # the curves the throttle skipped, also when stopped by an error
            history_io.plot_history(run_dir / "history.png", history, task.headline)
    if run["bad_epochs"] >= cfg.patience:
        log(f"Early stopping: best valid loss {run['best_valid_loss']:.6f} at epoch {run['best_epoch']}.")
    if jax.process_count() > 1:     # the stages read best.msgpack next, on every host
        multihost_utils.sync_global_devices("rightwhale.fit: checkpoints written")
    return run["state"], history
