"""OxfordNet (VGG) style networks: stacks of 3x3 ConvBN, stride-2 convs instead of pooling. One class,
one table per original model definition; feature-map sizes at the original's 256 px input."""
from .layers import BN_MOMENTUM, ConvBN, Net


class OxfordNet(Net):
    """Net whose body is `stages` ((filters, convs, stride of the first conv), ...) of 3x3 ConvBN,
    named l{stage}c{conv}."""

    def body(self, x, train: bool):
        for s, (filters, convs, stride) in enumerate(self.stages, start=2):
            for c in range(1, convs + 1):
                x = ConvBN(filters, 3, stride if c == 1 else 1, self.bn_momentum, name=f"l{s}c{c}")(x, train)
        return x


def oxfordnet19_gap(num_outputs: int, dropout: float = 0.8, bn_momentum: float = BN_MOMENTUM) -> OxfordNet:
    """19-layer OxfordNet with GAP, widths up to 128: model_definitions/cropped_dec19.py.

    One of the three OxfordNets of the final ensemble ("VGG max num filter 128")."""
    return OxfordNet(num_outputs, dropout=dropout, bn_momentum=bn_momentum,
                     stem=(32, 7, 2),            # 128
                     stages=((48, 3, 1),         # 128
                             (64, 3, 2),         # 64
                             (80, 4, 2),         # 32
                             (96, 4, 2),         # 16
                             (128, 4, 2)))       # 8 -> gp 128


def cropped_jan03(num_outputs: int, dropout: float = 0.8, bn_momentum: float = BN_MOMENTUM) -> OxfordNet:
    """19-layer OxfordNet with GAP, widths up to 192: model_definitions/cropped_jan03.py.

    Built with conv2dbn2, i.e. Lasagne's own batch norm (alpha 0.1, momentum 0.9)."""
    return OxfordNet(num_outputs, dropout=dropout, bn_momentum=bn_momentum,
                     stem=(32, 7, 2),            # 128
                     stages=((48, 3, 1),         # 128
                             (64, 3, 2),         # 64
                             (80, 4, 2),         # 32
                             (128, 4, 2),        # 16
                             (192, 4, 2)))       # 8 -> gp 192


def cropped_jan05_2(num_outputs: int, dropout: float = 0.8, bn_momentum: float = BN_MOMENTUM) -> OxfordNet:
    """19-layer OxfordNet with GAP, widths up to 192: model_definitions/cropped_jan05_2.py."""
    return OxfordNet(num_outputs, dropout=dropout, bn_momentum=bn_momentum,
                     stem=(32, 7, 2),            # 128
                     stages=((48, 3, 1),         # 128
                             (64, 3, 2),         # 64
                             (96, 4, 2),         # 32
                             (128, 4, 2),        # 16
                             (192, 4, 2)))       # 8 -> gp 192
