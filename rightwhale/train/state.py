"""The train state and the pure steps, as in Flax's ImageNet example: a `TrainState` with batch_stats and a
PRNG key, jitted `train_step` / `eval_step`, and the `Task` (loss, metrics, augmentation) a stage supplies.

Images travel as uint8 NHWC (4x less to read and transfer than float32) and become x / 255 - 0.5 in
the step: a constant centre, no stored statistics (batch norm after the first convolution absorbs the
rest). The original stored a mean image but never subtracted it (docs/final-ensemble.md).

As Lasagne/nolearn: loss = mean task loss + l2 * sum of squared kernels and batch-norm gammas
(Train.l2_gamma, as the original's regularizable tags) (tables report task losses);
Lasagne's Nesterov momentum; StepDecay once per epoch.
"""
import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from rightwhale.core.config import Train
from rightwhale.core.metrics import top_k_hits
from rightwhale.io.images import model_input
from rightwhale.train.sharding import data_mesh


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


def forward(apply_fn, variables, images):
    """Eval-mode outputs and GAP features of uint8 images."""
    output, extras = apply_fn(variables, model_input(images.astype(jnp.float32) / 255.0), train=False)
    return output, extras["pre_logits"]


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
    output, pre_logits = forward(state.apply_fn, variables, batch["image"])
    mask = batch.get("mask", jnp.ones(output.shape[0], jnp.float32))
    values = {"loss": task.loss(output, batch["target"]), **task.metrics(output, batch["target"])}
    sums = {name: jnp.sum(v * mask) for name, v in values.items()}
    return {**sums, "count": jnp.sum(mask)}, output, pre_logits
