"""The training loop on tiny conv nets (8 px images, batch 4).

The child processes of the kill -9 and two-device tests import this module
for the same net, task, data and configuration as the parent.
"""
import dataclasses
import json
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rightwhale.core.config import Train
from rightwhale.io import checkpoint
from rightwhale.train import feed, loop
from rightwhale.train import state as train_steps

TESTS_DIR = Path(__file__).parent


class TinyNet(nn.Module):
    """The model interface in miniature: conv + BN + GAP + dropout + dense."""
    outputs: int = 3
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(8, (3, 3), use_bias=False)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-4)(x)
        x = nn.leaky_relu(x, 1 / 3)
        gap = x.mean(axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train)(gap)
        return nn.Dense(self.outputs)(x), {"pre_logits": gap}


def random_flip(key, images, target):
    flip = jax.random.bernoulli(key, 0.5, images.shape[:1])[:, None, None, None]  # rank 1: fast to compile
    return jnp.where(flip, images[:, :, ::-1], images), target


def make_data(n, seed, targets=None):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return {"image": images, "target": rng.integers(0, 3, n) if targets is None else targets}


NET = TinyNet()
NET_NO_DROPOUT = TinyNet(dropout=0.0)
REGRESSOR = TinyNet(outputs=1)
TASK = train_steps.classification_task(augment=random_flip)
PLAIN_TASK = train_steps.classification_task()
CFG = Train(batch_size=4, max_epochs=4, patience=100, learning_rate=1e-2, l2=1e-4)
TRAIN, VALID = make_data(26, 0), make_data(6, 1)     # ragged train end dropped, valid padded


def _copy(tree):
    """train_step donates its state: tests that reuse one keep copies."""
    return jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), tree)


def _state(model=NET, cfg=CFG, seed=0):
    return train_steps.create_train_state(model, cfg, (8, 8, 3), 6, jax.random.PRNGKey(seed))


def _batch(data, rows):
    return {"image": data["image"][rows], "target": data["target"][rows].astype(np.int32)}


def _assert_same_run(dir_a, dir_b):
    """Identical weights, optimizer state, key, counters and history losses."""
    a, b = (checkpoint.load(Path(d) / "last.msgpack") for d in (dir_a, dir_b))
    for (where, x), (_, y) in zip(*(jax.tree_util.tree_leaves_with_path(t["state"]) for t in (a, b))):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(where))
    assert jax.tree_util.tree_structure(a["state"]) == jax.tree_util.tree_structure(b["state"])
    ha, hb = json.loads(a["history_json"]), json.loads(b["history_json"])
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(ha) == strip(hb)
    assert (Path(dir_a) / "best.msgpack").read_bytes() == (Path(dir_b) / "best.msgpack").read_bytes()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted 4-epoch run, compared against by several tests."""
    run_dir, lines = tmp_path_factory.mktemp("reference"), []
    _, history = loop.fit(NET, CFG, TASK, TRAIN, VALID, run_dir, progress=False, log=lines.append)
    return run_dir, history, lines


# --- steps ------------------------------------------------------------------------------------

def test_small_net_overfits_a_tiny_batch():
    state = _state(NET_NO_DROPOUT)
    batch = {"image": TRAIN["image"][:4], "target": np.array([0, 1, 2, 0], np.int32)}
    losses = []
    for _ in range(150):
        state, metrics = train_steps.train_step(state, batch, PLAIN_TASK)
        losses.append(float(metrics["loss"]))
    assert losses[0] > 0.5 and losses[-1] < 0.05, losses[::25]
    assert float(metrics["accuracy"]) == 1.0


def test_batch_norm_statistics_update_only_in_training():
    state = _state()
    before = jax.device_get(state.batch_stats)
    state, _ = train_steps.train_step(_copy(state), _batch(TRAIN, slice(0, 4)), TASK)
    after = jax.device_get(state.batch_stats)
    assert not np.allclose(before["BatchNorm_0"]["mean"], after["BatchNorm_0"]["mean"])
    # Eval mode normalises with the running statistics: an image's output does not
    # depend on the other images of its batch (it would with batch statistics).
    out_a = train_steps.eval_step(state, _batch(TRAIN, [0, 1, 2, 3]), TASK)[1]
    out_b = train_steps.eval_step(state, _batch(TRAIN, [0, 7, 8, 9]), TASK)[1]
    np.testing.assert_allclose(out_a[0], out_b[0], rtol=1e-6)
    np.testing.assert_array_equal(jax.device_get(state.batch_stats)["BatchNorm_0"]["mean"],
                                  after["BatchNorm_0"]["mean"])


def test_dropout_only_in_training():
    batch = _batch(TRAIN, slice(0, 4))
    for model, differs in ((NET, True), (NET_NO_DROPOUT, False)):
        state = _state(model)
        keys = jax.random.split(jax.random.PRNGKey(5), 2)
        losses = [float(train_steps.train_step(_copy(state).replace(key=k), batch, PLAIN_TASK)[1]["loss"])
                  for k in keys]
        assert (losses[0] != losses[1]) == differs, (model, losses)
        outputs = [train_steps.eval_step(state.replace(key=k), batch, PLAIN_TASK)[1] for k in keys]
        np.testing.assert_array_equal(outputs[0], outputs[1])


def test_l2_penalty_counts_kernels_only():
    params = jax.device_get(_state().params)
    expected = np.sum(params["Conv_0"]["kernel"] ** 2) + np.sum(params["Dense_0"]["kernel"] ** 2)
    assert float(train_steps.l2_penalty(params)) == pytest.approx(expected, rel=1e-6)


def test_step_decay_matches_nolearn_utils():
    cfg = Train(optimizer="nesterov", learning_rate=0.1, final_learning_rate=0.001, max_epochs=5,
                momentum=0.9)
    # nolearn_utils.StepDecay: after epoch e (1-based) the rate becomes linspace(...)[e - 1]
    steps, rate, used = np.linspace(0.1, 0.001, 5), 0.1, []
    for epoch in range(1, 6):
        used.append(rate)
        rate = steps[epoch - 1]
    np.testing.assert_allclose([float(train_steps.epoch_learning_rate(cfg, e)) for e in range(5)], used,
                               rtol=1e-6)
    # Lasagne's nesterov_momentum on f(w) = |w|^2 / 2 (gradient w), 2 steps per epoch
    w, velocity = np.array([1.0, -2.0]), np.zeros(2)
    tx = train_steps.make_optimizer(cfg, 2)
    params = jnp.array(w, jnp.float32)
    opt_state = tx.init(params)
    for step in range(10):
        lr = used[step // 2]
        velocity = cfg.momentum * velocity - lr * w
        w = w + cfg.momentum * velocity - lr * w
        updates, opt_state = tx.update(params, opt_state, params)
        params = optax.apply_updates(params, updates)
        np.testing.assert_allclose(params, w, rtol=1e-5, err_msg=f"step {step}")


def test_unknown_optimizer_is_rejected():
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        train_steps.make_optimizer(Train(optimizer="sgd"), 1)


# --- predict ------------------------------------------------------------------------------------

def test_predict_any_number_of_images_and_memmaps(tmp_path):
    state = _state()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    images = TRAIN["image"][:9]
    direct, extras = NET.apply(variables, images.astype(np.float32) / 255 - 0.5)
    outputs, features = feed.predict(NET, variables, images[:3], batch_size=4)
    assert outputs.shape == (3, 3) and features.shape == (3, 8)
    np.testing.assert_allclose(outputs, direct[:3], rtol=1e-5, atol=1e-6)
    np.save(tmp_path / "images.npy", images)
    memmap = np.load(tmp_path / "images.npy", mmap_mode="r")
    outputs, features = feed.predict(NET, variables, memmap, batch_size=4)
    np.testing.assert_allclose(outputs, direct, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(features, extras["pre_logits"], rtol=1e-5, atol=1e-6)
    empty = feed.predict(NET, variables, images[:0], batch_size=4)
    assert [e.shape for e in empty] == [(0, 3), (0, 8)]
    with pytest.raises(ValueError, match="must be uint8"):
        feed.predict(NET, variables, images.astype(np.float32), batch_size=4)


# --- fit ----------------------------------------------------------------------------------------------

def test_fit_writes_table_history_and_plot(reference):
    run_dir, history, lines = reference
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert json.loads((run_dir / "history.json").read_text()) == history
    assert (run_dir / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "train no-drop" in lines[0] and "valid accuracy" in lines[0]
    rows = [line for line in lines if re.match(r"^[* ]\s+\d+\s", line)]
    assert len(rows) == 4
    best_so_far = np.minimum.accumulate([r["valid_loss"] for r in history])
    for row, record, best in zip(rows, history, best_so_far):
        assert record["best"] == (record["valid_loss"] == best) == row.startswith("*")
        assert f"{record['valid_loss']:.5f}" in row
        assert record["train_valid_ratio"] == pytest.approx(record["train_loss"] / record["valid_loss"])
        assert 0 <= record["valid_accuracy"] <= 1 and np.isfinite(record["train_eval_loss"])
    best = history[int(np.argmin([r["valid_loss"] for r in history]))]
    last = checkpoint.load(run_dir / "last.msgpack")
    assert last["best_epoch"] == best["epoch"]
    # 6 validation images in batches of 4: the padded copies must not count.
    logits, _ = feed.predict(NET, last["state"], VALID["image"], batch_size=4)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, VALID["target"])
    assert history[-1]["valid_loss"] == pytest.approx(float(np.mean(losses)), rel=1e-5)
    assert history[-1]["valid_accuracy"] == pytest.approx(np.mean(logits.argmax(1) == VALID["target"]))
    # each half's loss is its own rows' mean (even rows, odd rows), so the epoch can be chosen on one, read on the other
    assert history[-1]["valid_loss_half0"] == pytest.approx(float(np.mean(losses[0::2])), rel=1e-5)
    assert history[-1]["valid_loss_half1"] == pytest.approx(float(np.mean(losses[1::2])), rel=1e-5)


def test_epoch_choice_reads_the_loss_of_the_half_that_did_not_choose():
    from rightwhale.io.history import epoch_choice
    # half 0 likes epoch 2 (0.5), where half 1 reads 2.0; half 1 likes epoch 1 (1.0), where half 0 reads 3.0
    history = [{"valid_loss": 2.0, "valid_loss_half0": 3.0, "valid_loss_half1": 1.0},
               {"valid_loss": 1.25, "valid_loss_half0": 0.5, "valid_loss_half1": 2.0}]
    assert epoch_choice(history) == {"validation loss at the best epoch": 1.25,
                                     "validation loss, epoch chosen on the other half": (2.0 + 3.0) / 2}
    assert epoch_choice([{"valid_loss": 1.0}]) == {}          # a run made before the halves were recorded


def test_resume_equals_uninterrupted(reference, tmp_path):
    loop.fit(NET, dataclasses.replace(CFG, max_epochs=2), TASK, TRAIN, VALID, tmp_path, progress=False,
                 log=lambda line: None)
    lines = []
    loop.fit(NET, CFG, TASK, TRAIN, VALID, tmp_path, resume=True, progress=False, log=lines.append)
    assert lines[0] == f"resuming {tmp_path} after epoch 2"
    _assert_same_run(reference[0], tmp_path)


def _read_lines(stream, lines):
    for line in stream:
        lines.put(line)


def test_kill_9_mid_run_then_resume(reference, tmp_path):
    child = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(TESTS_DIR)!r})
        import test_training as t
        from rightwhale.train import feed, loop, sharding, state as train_steps
        def log(line):
            print(line, flush=True)
            time.sleep(0.3)
        loop.fit(t.NET, t.CFG, t.TASK, t.TRAIN, t.VALID, sys.argv[1], progress=False, log=log)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
    deadline, seen = time.monotonic() + 120, []
    try:
        while not any(re.match(r"^[* ]\s+2\s", line) for line in seen):
            assert proc.poll() is None, "".join(seen)
            seen.append(lines.get(timeout=max(deadline - time.monotonic(), 0.01)))
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    interrupted_at = checkpoint.load(tmp_path / "last.msgpack")["epoch"]
    assert 1 <= interrupted_at < CFG.max_epochs
    loop.fit(NET, CFG, TASK, TRAIN, VALID, tmp_path, resume=True, progress=False, log=lambda line: None)
    _assert_same_run(reference[0], tmp_path)


def test_early_stopping_keeps_best_weights(tmp_path):
    # Training pulls every output towards 1; validation wants 0.3: its loss falls, then rises.
    regress = train_steps.regression_task()
    train = make_data(16, 2, np.ones((16, 1), np.float32))
    valid = make_data(8, 3, np.full((8, 1), 0.3, np.float32))
    cfg = Train(batch_size=4, max_epochs=30, patience=2, learning_rate=0.005, l2=0.0)
    lines = []
    _, history = loop.fit(REGRESSOR, cfg, regress, train, valid, tmp_path / "a",
                              progress=False, log=lines.append)
    best_epoch = int(np.argmin([r["valid_loss"] for r in history])) + 1
    assert best_epoch >= 2 and len(history) == best_epoch + cfg.patience < cfg.max_epochs
    assert lines[-1].startswith("Early stopping: best valid loss")
    assert lines[-1].endswith(f"epoch {best_epoch}.")
    # The best weights are those of a run that simply ended at the best epoch.
    loop.fit(REGRESSOR, dataclasses.replace(cfg, max_epochs=best_epoch), regress, train, valid,
                 tmp_path / "b", progress=False, log=lambda line: None)
    best = checkpoint.load_variables(tmp_path / "a" / "best.msgpack")
    at_best_epoch = checkpoint.load(tmp_path / "b" / "last.msgpack")["state"]
    for key in ("params", "batch_stats"):
        for x, y in zip(jax.tree_util.tree_leaves(best[key]), jax.tree_util.tree_leaves(at_best_epoch[key])):
            np.testing.assert_array_equal(x, y)
    # Resuming a run that already stopped trains no further.
    _, again = loop.fit(REGRESSOR, cfg, regress, train, valid, tmp_path / "a", resume=True,
                            progress=False, log=lambda line: None)
    assert again == history


def _nan_cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels) * jnp.nan


def test_nan_loss_stops_and_keeps_last_good_checkpoints(tmp_path):
    cfg = dataclasses.replace(CFG, max_epochs=1)
    loop.fit(NET, cfg, TASK, TRAIN, VALID, tmp_path, progress=False, log=lambda line: None)
    names = ("last.msgpack", "best.msgpack", "history.json")
    before = {name: (tmp_path / name).read_bytes() for name in names}
    poisoned = dataclasses.replace(TASK, loss=_nan_cross_entropy)
    with pytest.raises(FloatingPointError, match=r"epoch 2: training loss is nan.*epoch 1"):
        loop.fit(NET, CFG, poisoned, TRAIN, VALID, tmp_path, resume=True, progress=False,
                     log=lambda line: None)
    assert {name: (tmp_path / name).read_bytes() for name in names} == before
    variables = checkpoint.load_variables(tmp_path / "best.msgpack")
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(variables))


def test_fit_rejects_bad_input(tmp_path, reference):
    as_float = {"image": TRAIN["image"].astype(np.float32), "target": TRAIN["target"]}
    with pytest.raises(ValueError, match="train: images must be uint8"):
        loop.fit(NET, CFG, TASK, as_float, VALID, tmp_path)
    with pytest.raises(ValueError, match="valid: 6 images but 5 targets"):
        loop.fit(NET, CFG, TASK, TRAIN, {"image": VALID["image"], "target": VALID["target"][:5]},
                     tmp_path)
    with pytest.raises(ValueError, match="no full batch of 64"):
        loop.fit(NET, dataclasses.replace(CFG, batch_size=64), TASK, TRAIN, VALID, tmp_path)
    with pytest.raises(FileExistsError, match="resume=True"):
        loop.fit(NET, CFG, TASK, TRAIN, VALID, reference[0])


# --- data parallel --------------------------------------------------------------------------------

def test_two_devices_match_one(reference, tmp_path):
    child = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS_DIR)!r})
        import jax, numpy as np
        import test_training as t
        from rightwhale.train import feed, loop, sharding, state as train_steps
        assert len(jax.devices()) == 2, jax.devices()
        batch = t._batch(t.TRAIN, slice(0, 4))
        results = []
        for mesh in (sharding.data_mesh(jax.devices()[:1]), sharding.data_mesh()):
            state = train_steps.create_train_state(t.NET, t.CFG, (8, 8, 3), 6, jax.random.PRNGKey(0), mesh)
            for step in range(2):
                sharded = sharding.shard_batch(batch, mesh)
                state, metrics = train_steps.train_step(state, sharded, t.TASK)
            assert len(sharded["image"].sharding.device_set) == mesh.size
            assert len(state.params["Dense_0"]["kernel"].sharding.device_set) == mesh.size
            results.append(jax.device_get((metrics["loss"], state.params, state.batch_stats)))
        for a, b in zip(*(jax.tree_util.tree_leaves(r) for r in results)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        try:
            feed.predict(t.NET, {{"params": state.params}}, t.TRAIN["image"], batch_size=3)
            raise AssertionError("batch size 3 on 2 devices was accepted")
        except ValueError as e:
            assert "multiple of the 2 devices" in str(e), e
        _, history = loop.fit(t.NET, t.CFG, t.TASK, t.TRAIN, t.VALID, sys.argv[1], progress=False,
                                  log=lambda line: None)
        print("VALID_LOSSES", [r["valid_loss"] for r in history])
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", child, str(tmp_path / "run")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    losses = json.loads(result.stdout.split("VALID_LOSSES")[1])
    np.testing.assert_allclose(losses, [r["valid_loss"] for r in reference[1]], rtol=1e-4)


def test_the_cpu_xla_flag_is_set_only_for_the_jaxlib_it_was_measured_with():
    from rightwhale import CPU_XLA_FLAG, cpu_xla_flags
    assert cpu_xla_flags("--a=1", "0.10.2") == f"--a=1 {CPU_XLA_FLAG}"
    assert cpu_xla_flags("", "0.11.0") == ""                 # unknown to us: XLA would abort on an unknown flag
    assert cpu_xla_flags("", "0.10.2", keep=True) == ""      # RIGHTWHALE_KEEP_XLA_FLAGS
    mine = "--xla_cpu_experimental_ynn_fusion_type=individual_convolution"
    assert cpu_xla_flags(mine, "0.10.2") == mine             # the user's own choice stands
