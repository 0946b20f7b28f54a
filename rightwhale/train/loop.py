"""`fit`: the nolearn NeuralNet loop of the original. Epochs, nolearn's table, best weights, early stopping
after `patience` epochs without a lower validation loss (nolearn_utils also skipped epochs whose training
loss exceeded the validation loss: with heavy augmentation, that can disable stopping for a whole run), and
resuming from `last.msgpack` to the same bits as an uninterrupted run."""
import json
import math
import time
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from rightwhale.core.atomic import write_json
from rightwhale.core.config import Train
from rightwhale.io import checkpoint
from rightwhale.io import history as history_io
from rightwhale.train.feed import check_batch_size, check_images, device_batches, evaluate, limit_in_flight
from rightwhale.train.sharding import data_mesh, replicate, to_host
from rightwhale.train.state import Task, create_train_state, epoch_learning_rate, train_step
from rightwhale.views import plots

_NEW_RUN = {"epoch": 0, "best_valid_loss": math.inf, "best_epoch": 0, "bad_epochs": 0, "history_json": "[]",
            "n_train": 0, "batch_size": 0}    # last.msgpack besides the state: all a run needs to continue


def _start_run(model, cfg: Train, run_dir: Path, train: dict, valid: dict, mesh, resume, log) -> dict:
    """Check what fit was handed; a fresh run, or the one saved in run_dir/last.msgpack."""
    for what, data in (("train", train), ("valid", valid)):
        if not isinstance(data, dict) or "image" not in data or "target" not in data:
            raise ValueError(f"{what}: expected a dict with 'image' and 'target' arrays")
        check_images(data["image"], what, data["target"])
    n_train, n_valid = len(train["image"]), len(valid["image"])
    if n_valid == 0:
        raise ValueError("valid: the validation set is empty; early stopping and best weights need one")
    if train["image"].shape[1:] != valid["image"].shape[1:]:
        raise ValueError(f"train images {train['image'].shape[1:]} and valid images "
                         f"{valid['image'].shape[1:]} differ in shape")
    check_batch_size(cfg.batch_size, mesh)
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
    saved = checkpoint.load(last_path, {"state": jax.tree_util.tree_map(to_host, state), **_NEW_RUN})
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
    for batch in device_batches(train, order, cfg.batch_size, mesh, pad=False):
        state, metrics = train_step(state, batch, task)
        losses.append(metrics["loss"])
        limit_in_flight(losses)
        bar.update()
    train_loss = float(np.mean([to_host(loss) for loss in losses]))
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
                    host_state = jax.tree_util.tree_map(to_host, state)
                    if improved:  # before last.msgpack, so that last never refers to a missing best
                        checkpoint.save_variables(run_dir / "best.msgpack", host_state.params, host_state.batch_stats)
                    checkpoint.save(run_dir / "last.msgpack", run | {"state": host_state})
                    write_json(run_dir / "history.json", history)
                    unplotted = True
                    if time.monotonic() - plotted > 30:   # seconds; replotting takes ~0.1 s, too long for tiny epochs
                        plots.history_curves(run_dir / "history.png", history, task.headline)
                        plotted, unplotted = time.monotonic(), False
    finally:
        if unplotted:  # the curves the throttle skipped, also when stopped by an error
            plots.history_curves(run_dir / "history.png", history, task.headline)
    if run["bad_epochs"] >= cfg.patience:
        log(f"Early stopping: best valid loss {run['best_valid_loss']:.6f} at epoch {run['best_epoch']}.")
    if jax.process_count() > 1:     # the stages read best.msgpack next, on every host
        multihost_utils.sync_global_devices("rightwhale.fit: checkpoints written")
    return run["state"], history
