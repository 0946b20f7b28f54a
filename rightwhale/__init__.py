"""rightwhale: identify North Atlantic right whales from aerial photos.

A JAX/Flax reimplementation of the 2nd-place pipeline of the 2015 NOAA Right
Whale Recognition challenge: cache -> localize -> align -> crop -> classify ->
stack. See README.md for the quick start.
"""
import os

__version__ = "0.1.0"

# XLA:CPU hands convolutions to YNNPACK, whose weight-gradient convolutions run
# on one thread here; Eigen's are 1.35-1.6x faster per training step on two
# cores (bench/bench_train_step.py). The flag only touches the CPU backend.
# Must be set before JAX starts its backend; RIGHTWHALE_KEEP_XLA_FLAGS=1 opts out.
# The flag is experimental: XLA aborts on a flag it does not know, and a YNNPACK fusion
# miscompile was reported for jaxlib >= 0.11. So it is set only for the jaxlib it was
# measured with (0.10.x), rather than bounding the package's jax version.
CPU_XLA_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
FLAG_TESTED_JAXLIB = "0.10."


def _jaxlib_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("jaxlib")
    except PackageNotFoundError:
        return ""


def cpu_xla_flags(flags: str, jaxlib: str, keep: bool = False) -> str:
    """XLA_FLAGS with the package's CPU flag added, unless opted out, already chosen, or another jaxlib."""
    if keep or "ynn_fusion_type" in flags or not jaxlib.startswith(FLAG_TESTED_JAXLIB):
        return flags
    return f"{flags} {CPU_XLA_FLAG}".strip()


os.environ["XLA_FLAGS"] = cpu_xla_flags(os.environ.get("XLA_FLAGS", ""), _jaxlib_version(),
                                        bool(os.environ.get("RIGHTWHALE_KEEP_XLA_FLAGS")))
