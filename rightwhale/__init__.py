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
CPU_XLA_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
if not os.environ.get("RIGHTWHALE_KEEP_XLA_FLAGS") and "ynn_fusion_type" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {CPU_XLA_FLAG}".strip()
