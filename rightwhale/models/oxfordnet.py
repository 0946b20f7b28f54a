"""OxfordNet (VGG) style networks: stacks of 3x3 ConvBN, stride-2 convs instead of pooling.

One class, one table per original model definition. Feature-map sizes in the
comments are at the original's 256 px input.
"""
from __future__ import annotations

import flax.linen as nn

from .layers import CLASSIFIER_BN_MOMENTUM, LASAGNE_BN_MOMENTUM, ConvBN, pooled_head, stem_layers


class OxfordNet(nn.Module):
    """stem -> stages of 3x3 ConvBN (stride on each stage's first conv) -> pool -> dropout -> dense.

    Layer names follow the original: l1c1, l1p, then l{stage}c{conv}, gp, gpdrop, out.
    """
    num_outputs: int
    stem: tuple[int, int, int]                  # (filters, kernel, stride) of l1c1
    stages: tuple[tuple[int, int, int], ...]    # (filters, convs, stride of the first conv)
    stem_pool: tuple[int, int] | None = None    # (window, stride) of a max pool after l1c1
    pool_window: int | None = None              # None: global average; int: fixed average pool, flattened
    dropout: float = 0.5
    bn_momentum: float = CLASSIFIER_BN_MOMENTUM

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = stem_layers(x, self.stem, self.stem_pool, self.bn_momentum, train)
        for s, (filters, convs, stride) in enumerate(self.stages, start=2):
            for c in range(1, convs + 1):
                x = ConvBN(filters, 3, stride if c == 1 else 1, self.bn_momentum, name=f"l{s}c{c}")(x, train)
        out, pre_logits = pooled_head(x, self.num_outputs, self.dropout, train, self.pool_window)
        return out, {"pre_logits": pre_logits}


def oxfordnet19_gap(num_outputs: int, dropout: float = 0.8,
                    bn_momentum: float = CLASSIFIER_BN_MOMENTUM) -> OxfordNet:
    """19-layer OxfordNet with GAP, widths up to 128: model_definitions/cropped_dec19.py.

    One of the three OxfordNets of the final ensemble ("VGG max num filter 128").
    """
    return OxfordNet(num_outputs, dropout=dropout, bn_momentum=bn_momentum,
                     stem=(32, 7, 2),            # 128
                     stages=((48, 3, 1),         # 128
                             (64, 3, 2),         # 64
                             (80, 4, 2),         # 32
                             (96, 4, 2),         # 16
                             (128, 4, 2)))       # 8 -> gp 128


def cropped_jan03(num_outputs: int, dropout: float = 0.8,
                  bn_momentum: float = LASAGNE_BN_MOMENTUM) -> OxfordNet:
    """19-layer OxfordNet with GAP, widths up to 192: model_definitions/cropped_jan03.py.

    Built with conv2dbn2, i.e. Lasagne's own batch norm (alpha 0.1, momentum 0.9).
    """
    return OxfordNet(num_outputs, dropout=dropout, bn_momentum=bn_momentum,
                     stem=(32, 7, 2),            # 128
                     stages=((48, 3, 1),         # 128
                             (64, 3, 2),         # 64
                             (80, 4, 2),         # 32
                             (128, 4, 2),        # 16
                             (192, 4, 2)))       # 8 -> gp 192


def cropped_jan05_2(num_outputs: int, dropout: float = 0.8,
                    bn_momentum: float = CLASSIFIER_BN_MOMENTUM) -> OxfordNet:
    """19-layer OxfordNet with GAP, widths up to 192: model_definitions/cropped_jan05_2.py."""
    return OxfordNet(num_outputs, dropout=dropout, bn_momentum=bn_momentum,
                     stem=(32, 7, 2),            # 128
                     stages=((48, 3, 1),         # 128
                             (64, 3, 2),         # 64
                             (96, 4, 2),         # 32
                             (128, 4, 2),        # 16
                             (192, 4, 2)))       # 8 -> gp 192

