"""Building blocks shared by every model, each matching its Lasagne original. Layout is NHWC
(Lasagne was NCHW); the rest follows DESIGN.md section 3: conv without bias -> batch norm (epsilon
1e-4) -> very leaky ReLU (slope 1/3), Lasagne's symmetric "same" padding, Glorot-uniform weights
(Flax defaults to LeCun), zero biases."""
import functools

import flax.linen as nn
import jax.numpy as jnp

# Flax momentum = 1 - Lasagne alpha. Every model of the original normalised with alpha 0.1: Lasagne's
# own BatchNormLayer (the aligner, conv2dbn2) and the repo's utils/layers.py one, whose docstring says
# 0.5 but whose constructor default, the value that ran, is 0.1.
BN_MOMENTUM = 0.9

glorot_uniform = nn.initializers.glorot_uniform()
very_leaky_relu = functools.partial(nn.leaky_relu, negative_slope=1.0 / 3.0)


def lasagne_conv(features: int, kernel: int, stride: int = 1, name: str | None = None) -> nn.Conv:
    """Bias-free conv padded like Lasagne's pad='same': kernel // 2 on every side. (Flax's "SAME"
    pads (0, 1) for a stride-2 3x3 conv on an even map: every output one pixel off Lasagne's.)"""
    pad = kernel // 2
    return nn.Conv(features, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)),
                   use_bias=False, kernel_init=glorot_uniform, name=name)


def dense(features: int, name: str | None = None) -> nn.Dense:
    return nn.Dense(features, kernel_init=glorot_uniform, name=name)


def batch_norm(train: bool, momentum: float, name: str | None = None) -> nn.BatchNorm:
    """Learned gamma and beta; the running statistics update only when training."""
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=1e-4, name=name)


class ConvBN(nn.Module):
    """conv -> BN -> very leaky ReLU (Lasagne's batch_norm(Conv2DDNNLayer)); `activate=False` drops the ReLU."""
    features: int
    kernel: int = 3
    stride: int = 1
    momentum: float = BN_MOMENTUM
    activate: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = lasagne_conv(self.features, self.kernel, self.stride, name="conv")(x)
        x = batch_norm(train, self.momentum, name="bn")(x)
        return very_leaky_relu(x) if self.activate else x


class Pool(nn.Module):
    """Lasagne's Pool2DDNNLayer without padding: floor((n - window) / stride) + 1 outputs. Window None
    averages the whole map: the original's 8x8 pool of an 8x8 map at 256 px, at any input size."""
    window: int | None
    stride: int | None
    kind: str = "max"      # "max" or "avg" (Lasagne's average_inc_pad, which is plain mean at pad 0)

    @nn.compact
    def __call__(self, x):
        if self.window is None:
            return jnp.mean(x, axis=(1, 2))
        if min(x.shape[1:3]) < self.window:
            raise ValueError(f"{self.name}: a {self.window}x{self.window} pool needs a feature map at least "
                             f"that large, got {x.shape[1]}x{x.shape[2]}; use a larger input or a smaller window")
        op = {"max": nn.max_pool, "avg": nn.avg_pool}[self.kind]
        return op(x, (self.window, self.window), (self.stride, self.stride), "VALID")


class Net(nn.Module):
    """The original's networks: stem 'l1c1' (ConvBN) and optional max pool 'l1p', the family's `body`
    of `stages`, then pool 'gp' -> dropout 'gpdrop' -> dense 'out'. Returns (output, {"pre_logits":
    the pooled features the ensemble stacks})."""
    num_outputs: int
    stem: tuple[int, int, int]                  # (filters, kernel, stride) of l1c1
    stages: tuple[tuple[int, ...], ...]         # the body's table (see each family)
    stem_pool: tuple[int, int] | None = None    # (window, stride) of a max pool after l1c1
    pool_window: int | None = None              # None: global average; int: the aligner's average pool, flattened
    dropout: float = 0.5
    bn_momentum: float = BN_MOMENTUM

    @nn.compact
    def __call__(self, x, train: bool = False):
        if x.ndim != 4 or not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"models take a float NHWC batch (batch, height, width, channels); "
                             f"got {x.dtype} of shape {tuple(x.shape)}")
        x = ConvBN(*self.stem, momentum=self.bn_momentum, name="l1c1")(x, train)
        if self.stem_pool:
            x = Pool(*self.stem_pool, kind="max", name="l1p")(x)
        x = self.body(x, train)
        x = Pool(self.pool_window, self.pool_window, "avg", name="gp")(x)
        pre_logits = x = x.reshape(x.shape[0], -1)      # a windowed pool's map flattened, as DenseLayer did
        x = nn.Dropout(self.dropout, name="gpdrop")(x, deterministic=not train)
        return dense(self.num_outputs, name="out")(x), {"pre_logits": pre_logits}


class ResidualBlock(nn.Module):
    """He et al.'s residual block as the original's layer_macros wrote it: `convs` ConvBN (stride on
    the first, no ReLU on the last), plus a 1x1 projection shortcut when width or stride changes,
    added, then the ReLU. `residual_block` projected with conv + BN; `residual_block3`
    (`bn_after_sum`) with a bare conv, and put BN after the sum."""
    features: int
    stride: int = 1
    convs: int = 2
    momentum: float = BN_MOMENTUM
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
