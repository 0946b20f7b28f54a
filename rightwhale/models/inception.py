"""cropped_jan05_3: the original's Inception-v3 style classifier at 299 px (model_definitions/cropped_jan05_3.py,
built from its utils/inception.py). Not in the final ensemble. Unlike the other classifiers its convolutions
(conv -> BN -> nonlinearity, utils/layer_macros.conv2dbn) keep Lasagne's defaults: no padding unless given,
plain ReLU. Feature-map sizes in the comments are at its 299 px input."""
import flax.linen as nn
import jax.numpy as jnp

from .layers import BN_MOMENTUM, batch_norm, dense, glorot_uniform


class ConvBNReLU(nn.Module):
    """Bias-free conv with explicit (height, width) kernel and padding -> BN -> ReLU."""
    features: int
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    pad: tuple[int, int] = (0, 0)
    momentum: float = BN_MOMENTUM

    @nn.compact
    def __call__(self, x, train: bool = False):
        (ph, pw) = self.pad
        x = nn.Conv(self.features, self.kernel, strides=self.stride, padding=((ph, ph), (pw, pw)), use_bias=False,
                    kernel_init=glorot_uniform, name="conv")(x)
        return nn.relu(batch_norm(train, self.momentum, name="bn")(x))


def _avg_pool(x, stride: int, pad: int):
    """3x3 average over the window's pixels inside the map (the original divided by a pooled map of ones)."""
    return nn.avg_pool(x, (3, 3), (stride, stride), ((pad, pad), (pad, pad)), count_include_pad=False)


def _max_pool(x, stride: int, pad: int = 0):
    return nn.max_pool(x, (3, 3), (stride, stride), ((pad, pad), (pad, pad)))


class InceptionNet(nn.Module):
    num_outputs: int
    dropout: float = 0.8           # 'gpdrop', before the output layer
    conv_dropout: float = 0.1      # after the stem's two stages and after every inception block but the last
    bn_momentum: float = BN_MOMENTUM

    @nn.compact
    def __call__(self, x, train: bool = False):
        if x.ndim != 4 or min(x.shape[1:3]) < 75:
            raise ValueError(f"cropped_jan05_3 needs an NHWC batch of at least 75x75 (its stride-2 stages leave "
                             f"no map below that), got {tuple(x.shape)}")
        m = self.bn_momentum

        def conv(y, name, features, kernel=1, stride=1, pad=0):
            kernel = kernel if isinstance(kernel, tuple) else (kernel, kernel)
            pad = pad if isinstance(pad, tuple) else (pad, pad)
            return ConvBNReLU(features, kernel, stride, pad, m, name=name)(y, train)

        def drop(y, name):
            return nn.Dropout(self.conv_dropout, name=name)(y, deterministic=not train)

        def inception_a(y, name, f):           # 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg-1x1
            return jnp.concatenate([
                conv(y, f"{name}_1_1x1", f[0][0]),
                conv(conv(y, f"{name}_2_1x1", f[1][0]), f"{name}_2_5x5", f[1][1], 5, pad=2),
                conv(conv(conv(y, f"{name}_3_1x1", f[2][0]), f"{name}_3_3x3_1", f[2][1], 3, pad=1),
                     f"{name}_3_3x3_2", f[2][2], 3, pad=1),
                conv(_avg_pool(y, 1, 1), f"{name}_4_1x1", f[3][0])], axis=-1)

        def inception_b(y, name, f):           # 3x3/2 | 1x1-3x3-3x3/2 | avg/2
            return jnp.concatenate([
                conv(y, f"{name}_1_3x3", f[0][0], 3, 2),
                conv(conv(conv(y, f"{name}_2_1x1", f[1][0]), f"{name}_2_3x3_1", f[1][1], 3, pad=1),
                     f"{name}_2_3x3_2", f[1][2], 3, 2),
                _avg_pool(y, 2, 0)], axis=-1)

        def inception_c(y, name, f):           # 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avg-1x1
            b2 = conv(y, f"{name}_2_1x1", f[1][0])
            b2 = conv(conv(b2, f"{name}_2_1x7", f[1][1], (1, 7), pad=(0, 3)), f"{name}_2_7x1", f[1][2], (7, 1),
                      pad=(3, 0))
            b3 = conv(y, f"{name}_3_1x1", f[2][0])
            for i, (k, p) in enumerate([((7, 1), (3, 0)), ((1, 7), (0, 3))] * 2):
                b3 = conv(b3, f"{name}_3_{k[0]}x{k[1]}_{i // 2 + 1}", f[2][i + 1], k, pad=p)
            return jnp.concatenate([conv(y, f"{name}_1_1x1", f[0][0]), b2, b3,
                                    conv(_avg_pool(y, 1, 1), f"{name}_4_1x1", f[3][0])], axis=-1)

        def inception_d(y, name, f):           # 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max/2
            b1 = conv(conv(y, f"{name}_1_1x1", f[0][0]), f"{name}_1_3x3", f[0][1], 3, 2)
            b2 = conv(conv(y, f"{name}_2_1x1", f[1][0]), f"{name}_2_1x7", f[1][1], (1, 7), pad=(0, 3))
            b2 = conv(conv(b2, f"{name}_2_7x1", f[1][2], (7, 1), pad=(3, 0)), f"{name}_2_3x3", f[1][3], 3, 2)
            return jnp.concatenate([b1, b2, _max_pool(y, 2)], axis=-1)

        def inception_e(y, name, f, pool):     # 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool-1x1
            b2 = conv(y, f"{name}_2_1x1", f[1][0])
            b3 = conv(conv(y, f"{name}_3_1x1_1", f[2][0]), f"{name}_3_1x1_2", f[2][1], 3, pad=1)
            pooled = _avg_pool(y, 1, 1) if pool == "avg" else _max_pool(y, 1, 1)
            return jnp.concatenate([
                conv(y, f"{name}_1_1x1", f[0][0]),
                conv(b2, f"{name}_2a_1x3", f[1][1], (1, 3), pad=(0, 1)),
                conv(b2, f"{name}_2b_3x1", f[1][2], (3, 1), pad=(1, 0)),
                conv(b3, f"{name}_3a_1x3", f[2][2], (1, 3), pad=(0, 1)),
                conv(b3, f"{name}_3b_3x1", f[2][3], (3, 1), pad=(1, 0)),
                conv(pooled, f"{name}_4_1x1", f[3][0])], axis=-1)

        x = conv(x, "1c1", 32, 3, 2)                                           # 149
        x = conv(x, "1c2", 32, 3)                                              # 147
        x = conv(x, "1c3", 64, 3, pad=1)                                       # 147
        x = drop(_max_pool(x, 2), "1cdrop")                                    # 73
        x = conv(x, "2c1", 80, 1)                                              # 73
        x = conv(x, "2c2", 192, 3)                                             # 71
        x = drop(_max_pool(x, 2), "2cdrop")                                    # 35 x 192
        x = drop(inception_a(x, "3", ((64,), (48, 64), (64, 96, 96), (32,))), "3cdrop")        # 35 x 256
        x = drop(inception_a(x, "4", ((64,), (48, 64), (64, 96, 96), (64,))), "4cdrop")        # 35 x 288
        x = drop(inception_b(x, "5", ((384,), (64, 96, 96))), "5cdrop")                        # 17 x 768
        x = drop(inception_c(x, "6", ((192,), (128, 128, 192), (128, 128, 128, 128, 192), (192,))), "6cdrop")
        x = drop(inception_c(x, "7", ((192,), (192, 192, 192), (192, 192, 192, 192, 192), (192,))),
                 "7cdrop")                                                                     # 17 x 768
        x = drop(inception_d(x, "8", ((192, 320), (192, 192, 192, 192))), "8cdrop")           # 8 x 1280
        x = drop(inception_e(x, "9", ((320,), (384, 384, 384), (448, 384, 384, 384), (192,)), "avg"), "9cdrop")
        x = inception_e(x, "11", ((320,), (384, 384, 384), (448, 384, 384, 384), (192,)), "max")  # 8 x 2048
        pre_logits = x = jnp.mean(x, axis=(1, 2))                                            # gp 2048
        x = nn.Dropout(self.dropout, name="gpdrop")(x, deterministic=not train)
        return dense(self.num_outputs, name="out")(x), {"pre_logits": pre_logits}


def cropped_jan05_3(num_outputs: int, dropout: float = 0.8, bn_momentum: float = BN_MOMENTUM) -> InceptionNet:
    """Inception-v3 style net at 299 px: model_definitions/cropped_jan05_3.py (dropout 0.1 after its blocks)."""
    return InceptionNet(num_outputs, dropout=dropout, bn_momentum=bn_momentum)
