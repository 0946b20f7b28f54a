"""Building blocks shared by every model, each matching its Lasagne original.

Layout is NHWC (Lasagne was NCHW); everything else follows DESIGN.md section 3:
conv without bias -> batch norm (epsilon 1e-4) -> very leaky ReLU (slope 1/3),
Lasagne's symmetric "same" padding, Glorot-uniform weights, zero biases.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

BN_EPSILON = 1e-4
# Flax momentum = 1 - Lasagne alpha. Lasagne's own BatchNormLayer (alpha 0.1)
# fed the aligner and the models built with conv2dbn2; DESIGN.md gives the
# custom utils/layers.py BatchNormLayer of the other classifiers alpha 0.5
# (its docstring says 0.5; the committed code's default reads 0.1).
LASAGNE_BN_MOMENTUM = 0.9
CLASSIFIER_BN_MOMENTUM = 0.5

glorot_uniform = nn.initializers.glorot_uniform()


def very_leaky_relu(x):
    """Lasagne's very_leaky_rectify: leaky ReLU with slope 1/3."""
    return nn.leaky_relu(x, negative_slope=1.0 / 3.0)


def lasagne_conv(features: int, kernel: int, stride: int = 1, name: str | None = None) -> nn.Conv:
    """Bias-free conv padded like Lasagne's pad='same': kernel // 2 on every side.

    Flax's padding="SAME" pads (0, 1) for a stride-2 3x3 conv on an even map,
    which samples every output one pixel away from where Lasagne (and cuDNN)
    did; explicit symmetric padding keeps the original's receptive fields.
    """
    pad = kernel // 2
    return nn.Conv(features, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)),
                   use_bias=False, kernel_init=glorot_uniform, name=name)


def dense(features: int, name: str | None = None) -> nn.Dense:
    """Lasagne's DenseLayer init: Glorot-uniform weights (Flax defaults to LeCun), zero bias."""
    return nn.Dense(features, kernel_init=glorot_uniform, name=name)


def batch_norm(train: bool, momentum: float, name: str | None = None) -> nn.BatchNorm:
    """Batch norm with learned gamma and beta; running stats update only when training."""
    return nn.BatchNorm(use_running_average=not train, momentum=momentum,
                        epsilon=BN_EPSILON, name=name)


class ConvBN(nn.Module):
    """conv -> BN -> very leaky ReLU (Lasagne's batch_norm(Conv2DDNNLayer)); `activate=False` drops the ReLU."""
    features: int
    kernel: int = 3
    stride: int = 1
    momentum: float = CLASSIFIER_BN_MOMENTUM
    activate: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = lasagne_conv(self.features, self.kernel, self.stride, name="conv")(x)
        x = batch_norm(train, self.momentum, name="bn")(x)
        return very_leaky_relu(x) if self.activate else x


class Pool(nn.Module):
    """Lasagne's Pool2DDNNLayer without padding: floor((n - window) / stride) + 1 outputs."""
    window: int
    stride: int
    kind: str = "max"      # "max" or "avg" (Lasagne's average_inc_pad, which is plain mean at pad 0)

    @nn.compact
    def __call__(self, x):
        if min(x.shape[1:3]) < self.window:
            raise ValueError(f"{self.name}: a {self.window}x{self.window} pool needs a feature map at least "
                             f"that large, got {x.shape[1]}x{x.shape[2]}; use a larger input or a smaller window")
        op = {"max": nn.max_pool, "avg": nn.avg_pool}[self.kind]
        return op(x, (self.window, self.window), (self.stride, self.stride), "VALID")


class GlobalAvgPool(nn.Module):
    """Mean over height and width. The original's 8x8 pool on an 8x8 map is exactly this at
    256 px input; taking the global mean keeps the classifiers valid at any input size."""

    @nn.compact
    def __call__(self, x):
        return jnp.mean(x, axis=(1, 2))


def stem_layers(x, conv: tuple[int, int, int], pool: tuple[int, int] | None, momentum: float, train: bool):
    """Every model's first layers: 'l1c1' = ConvBN(filters, kernel, stride), then the
    optional 'l1p' max pool (window, stride). Called inside a parent's compact __call__."""
    if x.ndim != 4 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"models take a float NHWC batch (batch, height, width, channels); "
                         f"got {x.dtype} of shape {tuple(x.shape)}")
    x = ConvBN(*conv, momentum=momentum, name="l1c1")(x, train)
    return Pool(*pool, kind="max", name="l1p")(x) if pool else x


class ResidualBlock(nn.Module):
    """He et al.'s residual block as the original's layer_macros wrote it.

    `convs` conv+BN layers (stride on the first, nonlinearity on all but the
    last), plus a 1x1 projection shortcut when width or stride changes, added,
    then the nonlinearity. Two variants existed: `residual_block` (shortcut
    conv + BN) and `residual_block3` (bare shortcut conv, BN after the sum);
    `bn_after_sum` selects the second.
    """
    features: int
    stride: int = 1
    convs: int = 2
    momentum: float = CLASSIFIER_BN_MOMENTUM
    bn_after_sum: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        shortcut = x
        if x.shape[-1] != self.features or self.stride != 1:
            if self.bn_after_sum:
                shortcut = lasagne_conv(self.features, 1, self.stride, name="shortcut")(x)
            else:
                shortcut = ConvBN(self.features, 1, self.stride, self.momentum, activate=False,
                                  name="shortcut")(x, train)
        for i in range(self.convs):
            x = ConvBN(self.features, 3, self.stride if i == 0 else 1, self.momentum,
                       activate=i < self.convs - 1, name=f"c{i}")(x, train)
        x = x + shortcut
        if self.bn_after_sum:
            x = batch_norm(train, self.momentum, name="bn")(x)
        return very_leaky_relu(x)


def pooled_head(x, num_outputs: int, dropout: float, train: bool, pool_window: int | None = None):
    """The original's head: pool ('gp') -> dropout ('gpdrop') -> dense ('out').

    Called inside a parent's compact __call__, so the three layers belong to
    the calling model. `pool_window=None` is a global average; an int is the
    aligner's fixed average pool whose map is flattened (DenseLayer flattened
    its input). Returns (output, pre_logits), pre_logits being the pooled
    feature vector the ensemble stacks.
    """
    if pool_window is None:
        x = GlobalAvgPool(name="gp")(x)
    else:
        x = Pool(pool_window, pool_window, "avg", name="gp")(x)
        x = x.reshape(x.shape[0], -1)
    features = x
    x = nn.Dropout(dropout, name="gpdrop")(x, deterministic=not train)
    return dense(num_outputs, name="out")(x), features

