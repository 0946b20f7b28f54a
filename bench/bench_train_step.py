"""Speed of one training step of resnet19, JAX against PyTorch on the same CPU.

    python bench/bench_train_step.py [--sizes 128 256] [--batch 16] [--repeats 5]

One step = forward + backward + SGD/Nesterov (momentum 0.9) update with batch
norm in training mode and an L2 penalty, on a batch of 3-channel images and
447 classes. JAX: our `resnet19`, jitted, state donated, timed in steady
state with block_until_ready. Peer: the same architecture written in
PyTorch with the same thread count, in both its layouts (NCHW and
channels_last); the ratio is taken against the faster. All run interleaved
(JAX, torch, torch-CL, matmul, JAX, ...) so load from other processes hits
each alike; medians are reported. Also prints the JAX step's achieved
GFLOP/s (XLA's cost analysis) against a 2048^3 float32 matmul timed in the
same rounds. Target (issue 4): JAX >= 1.0x PyTorch.

XLA's CPU flags must be set before JAX starts: importing rightwhale adds its
CPU_XLA_FLAG (what the package trains with); to try alternatives run
`RIGHTWHALE_KEEP_XLA_FLAGS=1 XLA_FLAGS=... python bench/bench_train_step.py`.
PyTorch is a benchmark peer only (`pip install torch==2.13.0`); the package
never imports it.
"""
from __future__ import annotations

import argparse  # noqa: E402
import functools  # noqa: E402
import os
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

# rightwhale.CPU_XLA_FLAG: XLA:CPU hands convolutions to YNNPACK by default;
# its weight-gradient convs run on one thread and were 2-4x slower than
# Eigen's in a per-layer micro-benchmark, so the flag sends convolutions back
# to Eigen (YNNPACK keeps the reductions, where it helps). JAX step alone, alternating processes:
# 128 px 1.40 s -> 0.88 s (quiet), 256 px 9.6-10.6 s -> 7.2-7.7 s (load 3.5 on
# 2 cores). Tried and not kept (no gain
# beyond noise, or slower): xla_cpu_use_onednn, onednn_custom_call,
# xnn/onednn_fusion_type=individual_convolution, ynn without its reduce
# fusions (slower), use_xnnpack=false, prefer_vector_width=512,
# enable_fast_math, the concurrency-optimized scheduler, two CPU devices with
# the batch sharded (faster without this flag, slower with it), NCHW convs
# and bfloat16 (both 10-15% slower on a conv fwd+bwd; this CPU has no bf16 units).
#
# Why no flag reaches 1.0x: bench/bench_conv_ops.py times every convolution of
# the network in parts. At 128 px XLA's convolutions alone add up to about
# 1.0 s per step (fwd 0.57x, data gradient 0.50x, weight gradient 0.30x of
# PyTorch's oneDNN kernels), more than PyTorch's whole step (0.54-0.63 s). The
# weight gradients barely speed up from one core to two (Eigen gets a 3x3
# output to split; `taskset -c 0`), and XLA copies both operands into the
# batch-minor layout Eigen wants. This jaxlib's oneDNN fusions cover dot,
# eltwise and reduce, not convolution. Also tried in the model and not kept:
# convolutions as im2col matmuls (2x slower for 16->16), the weight gradient
# as nine shifted matmuls (4x slower), as a grouped conv over batch slices
# (8x slower), the batch split into independent convs (XLA runs them one after
# another), two devices with single-threaded Eigen (slower), and a
# custom_vjp batch norm + ReLU with two passes each way (the batch-norm part
# of a 128-px layer 26 -> 13 ms, but the step only 3-4% faster).
import rightwhale  # noqa: E402,F401  (sets XLA_FLAGS before JAX starts)
from rightwhale.models import get_model  # noqa: E402

LEARNING_RATE, MOMENTUM, L2 = 0.1, 0.9, 1e-6


def jax_step_fn(model):
    """The classifier's training step: softmax cross-entropy + L2, Nesterov SGD."""
    optimizer = optax.sgd(LEARNING_RATE, momentum=MOMENTUM, nesterov=True)

    def loss_fn(params, batch_stats, images, labels, key):
        (logits, _), state = model.apply({"params": params, "batch_stats": batch_stats}, images,
                                         train=True, mutable=["batch_stats"], rngs={"dropout": key})
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        l2 = sum(jnp.sum(w ** 2) for w in jax.tree_util.tree_leaves(params))
        return loss + L2 * l2, state["batch_stats"]

    def step(state, images, labels, key):
        params, batch_stats, opt_state = state
        grads, batch_stats = jax.grad(loss_fn, has_aux=True)(params, batch_stats, images, labels, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state

    def init(images):
        variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), images)
        return variables["params"], variables["batch_stats"], optimizer.init(variables["params"])

    return jax.jit(step, donate_argnums=0), init


def torch_resnet19(num_classes: int, bn_momentum: float = 0.5):
    """resnet19 in PyTorch, layer for layer as rightwhale.models.resnet19."""
    import torch
    from torch import nn

    def conv_bn(cin, cout, kernel, stride, activate=True):
        layers = [nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False),
                  nn.BatchNorm2d(cout, eps=1e-4, momentum=1 - bn_momentum)]
        return nn.Sequential(*layers, *([nn.LeakyReLU(1 / 3)] if activate else []))

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, 1, False))
            self.shortcut = (conv_bn(cin, cout, 1, stride, False) if cin != cout or stride != 1
                             else nn.Identity())

        def forward(self, x):
            return torch.nn.functional.leaky_relu(self.body(x) + self.shortcut(x), 1 / 3)

    layers, cin = [conv_bn(3, 16, 3, 1)], 16
    for width, stride in ((16, 1), (32, 2), (64, 2)):
        for b in range(3):
            layers.append(Block(cin, width, stride if b == 0 else 1))
            cin = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5),
                         nn.Linear(64, num_classes))


def torch_step_fn(num_classes: int, channels_last: bool):
    import torch
    model = torch_resnet19(num_classes).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM,
                                nesterov=True, weight_decay=2 * L2)   # d/dw of L2 * w^2
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(images, labels):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        optimizer.step()

    return step, fmt


def timed(fn, steps):
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


MATMUL_N = 2048


def matmul_fn():
    """A large jitted float32 matmul: what this machine can reach, to compare the step with."""
    a = jax.random.normal(jax.random.key(0), (MATMUL_N, MATMUL_N))
    f = jax.jit(lambda a: a @ a)
    return lambda: f(a).block_until_ready()


def xla_flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def bench_size(size, args):
    import torch
    rng = np.random.default_rng(0)
    images = rng.random((args.batch, size, size, 3), dtype=np.float32)
    labels = rng.integers(0, args.classes, args.batch)

    model = get_model("resnet19", args.classes)
    step, init = jax_step_fn(model)
    x, y = jnp.asarray(images), jnp.asarray(labels)
    keys = iter(jax.random.split(jax.random.key(1), 10_000))
    state = init(x)
    flops = xla_flops(step.lower(state, x, y, next(keys)).compile())

    def run_jax():
        nonlocal state
        state = step(state, x, y, next(keys))
        jax.block_until_ready(state)

    peers = {"jax": run_jax, "matmul": matmul_fn()}
    if not args.no_torch:
        for name, channels_last in (("torch", False), ("torch-CL", True)):
            t_step, fmt = torch_step_fn(args.classes, channels_last)
            tx = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
            peers[name] = functools.partial(t_step, tx, torch.from_numpy(labels))
    for fn in peers.values():          # compile / warm up
        for _ in range(args.warmup):
            fn()
    times = {name: [] for name in peers}
    for _ in range(args.repeats):      # interleaved
        for name, fn in peers.items():
            times[name].append(timed(fn, args.steps))
    return {name: statistics.median(t) for name, t in times.items()}, flops


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="square input sizes")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--classes", type=int, default=447)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds (median)")
    parser.add_argument("--steps", type=int, default=1, help="steps per timing round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compile, caches)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="PyTorch threads (default: the cores this process may use, as XLA's pool)")
    parser.add_argument("--no-torch", action="store_true", help="JAX only")
    args = parser.parse_args(argv)

    if not args.no_torch:
        import torch
        torch.set_num_threads(args.threads)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, XLA_FLAGS={os.environ['XLA_FLAGS']!r}, "
          f"{len(os.sched_getaffinity(0))} cores")
    for size in args.sizes:
        load_before = os.getloadavg()[0]
        t, flops = bench_size(size, args)
        print(f"resnet19 train step, batch {args.batch}, {size}x{size} (median ms/step, img/s; "
              f"1-min load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} cores):")
        for name in ("jax", "torch", "torch-CL"):
            if name in t:
                print(f"  {name:9s} {t[name] * 1e3:8.0f} ms  {args.batch / t[name]:6.2f} img/s")
        if "torch" in t:
            peer = min(("torch", "torch-CL"), key=t.get)
            print(f"  ratio jax / {peer} (the faster PyTorch) = {t[peer] / t['jax']:.2f}x  (target >= 1.0)")
        achieved, peak = flops / t["jax"] / 1e9, 2 * MATMUL_N ** 3 / t["matmul"] / 1e9
        print(f"  jax step {flops / 1e9:.1f} GFLOP (XLA cost analysis): {achieved:.1f} GFLOP/s against "
              f"{peak:.1f} GFLOP/s of a {MATMUL_N}^3 float32 matmul = {achieved / peak:.2f}x")


if __name__ == "__main__":
    main()
