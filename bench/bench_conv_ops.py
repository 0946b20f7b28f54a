"""Where the training step's gap to PyTorch comes from: every convolution of resnet19, in parts.

    python bench/bench_conv_ops.py [--size 128] [--batch 16] [--repeats 7]

For each distinct convolution of resnet19 at this input size: the forward
pass, the data gradient (dx) and the weight gradient (dw), in JAX (jitted
vjp pieces, what autodiff emits in the training step, XLA's layout copies
included) and in PyTorch channels-last (aten.convolution_backward, oneDNN).
Timed interleaved, best of the rounds. The last column weights each row by
how often the network uses that convolution, so the rows add up to the
step's convolution time; the step's other half (batch norm, ReLU, layout
copies) is not here.

Run on one core (`taskset -c 0 python bench/bench_conv_ops.py --no-torch`)
to see which parts XLA runs on one thread: those barely slow down. PyTorch
is a benchmark peer only (`pip install torch==2.13.0`).
"""
from __future__ import annotations

import argparse  # noqa: E402
import functools  # noqa: E402
import os  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from bench_augment import interleaved_times  # noqa: E402  (bench/ is on sys.path when run as a script)
from jax import lax  # noqa: E402

import rightwhale  # noqa: F401  (sets the package's XLA CPU flag before JAX starts)


def resnet19_convs(size: int):
    """(name, input side, in channels, out channels, kernel, stride, uses in the network)."""
    return [("stem", size, 3, 16, 3, 1, 1),
            ("16->16", size, 16, 16, 3, 1, 6),
            ("16->32 /2", size, 16, 32, 3, 2, 1), ("shortcut 16->32 /2", size, 16, 32, 1, 2, 1),
            ("32->32", size // 2, 32, 32, 3, 1, 5),
            ("32->64 /2", size // 2, 32, 64, 3, 2, 1), ("shortcut 32->64 /2", size // 2, 32, 64, 1, 2, 1),
            ("64->64", size // 4, 64, 64, 3, 1, 5)]


def jax_parts(x, w, stride):
    pad = w.shape[0] // 2

    def conv(x, w):
        return lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

    g = np.ones(jax.eval_shape(conv, x, w).shape, np.float32)
    fwd = jax.jit(conv)
    dx = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0])
    dw = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])
    return {"fwd": lambda: fwd(x, w).block_until_ready(), "dx": lambda: dx(x, w, g).block_until_ready(),
            "dw": lambda: dw(x, w, g).block_until_ready()}


def torch_parts(x, w, stride):
    import torch
    cl = torch.channels_last
    x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=cl)
    w = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous(memory_format=cl)
    pad = w.shape[-1] // 2
    g = torch.ones_like(torch.nn.functional.conv2d(x, w, None, stride, pad))
    backward = functools.partial(torch.ops.aten.convolution_backward, g, x, w, None, [stride] * 2, [pad] * 2,
                                 [1, 1], False, [0, 0], 1)
    return {"fwd": lambda: torch.nn.functional.conv2d(x, w, None, stride, pad),
            "dx": lambda: backward([True, False, False]), "dw": lambda: backward([False, True, False])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128, help="the network's square input size")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timing rounds (best)")
    parser.add_argument("--no-torch", action="store_true", help="JAX only")
    args = parser.parse_args(argv)
    if not args.no_torch:
        import torch
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    print(f"jax {jax.__version__}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, "
          f"{len(os.sched_getaffinity(0))} cores; ms per call (best of {args.repeats}), batch {args.batch}")
    print(f"{'conv':20s} {'side':>4s} {'uses':>4s} | " + " | ".join(
        f"{p:>3s} jax{'' if args.no_torch else '  torch  ratio'}" for p in ("fwd", "dx", "dw")))
    rng = np.random.default_rng(0)
    totals = {}
    for name, side, cin, cout, kernel, stride, uses in resnet19_convs(args.size):
        x = rng.standard_normal((args.batch, side, side, cin), dtype=np.float32)
        w = rng.standard_normal((kernel, kernel, cin, cout), dtype=np.float32) * 0.1
        sides = {"jax": jax_parts(x, w, stride)}
        if not args.no_torch:
            sides["torch"] = torch_parts(x, w, stride)
        cells = []
        for part in ("fwd", "dx", "dw"):
            if part == "dx" and name == "stem":     # the images need no gradient
                cells.append(f"{'-':>7s}" + ("" if args.no_torch else f" {'-':>6s} {'':6s}"))
                continue
            fns = [sides[s][part] for s in sides]
            for fn in fns:                      # compile and warm up
                fn(), fn()
            best, _ = interleaved_times(fns, args.repeats)
            for s, t in zip(sides, best):
                totals[s, part] = totals.get((s, part), 0.0) + uses * t
            cells.append(f"{best[0] * 1e3:7.1f}" + ("" if args.no_torch else
                                                    f" {best[1] * 1e3:6.1f} {best[1] / best[0]:5.2f}x"))
        print(f"{name:20s} {side:4d} {uses:4d} | " + " | ".join(cells))
    print(f"{'network (x uses)':30s} | " + " | ".join(
        f"{totals['jax', p] * 1e3:7.0f}" + ("" if args.no_torch else
                                            f" {totals['torch', p] * 1e3:6.0f} "
                                            f"{totals['torch', p] / totals['jax', p]:5.2f}x")
        for p in ("fwd", "dx", "dw")))
    jax_all = sum(t for (s, _), t in totals.items() if s == "jax")
    print(f"all convolutions of a training step: jax {jax_all * 1e3:.0f} ms" + ("" if args.no_torch else
          f", torch {sum(t for (s, _), t in totals.items() if s == 'torch') * 1e3:.0f} ms"))
    print("ratio = torch time / jax time (above 1: JAX faster)")


if __name__ == "__main__":
    main()
