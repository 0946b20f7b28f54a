"""Residual networks of the classifier stage: one class, one stage table per original model. The
writeup names them by depth, counting the convs on the main path (stem + convs per block x blocks).
Feature-map sizes in the comments are at the original's 256 px input."""
from .layers import BN_MOMENTUM, Net, ResidualBlock


class ResNet(Net):
    """Net whose body is `stages` ((blocks, filters, stride of the first block, convs per block), ...)
    of residual blocks, named {stage}c{block}."""
    bn_after_sum: bool = False                      # residual_block3 variant (see ResidualBlock)

    def body(self, x, train: bool):
        for s, (blocks, filters, stride, convs) in enumerate(self.stages, start=2):
            for b in range(blocks):
                x = ResidualBlock(filters, stride if b == 0 else 1, convs, self.bn_momentum,
                                  self.bn_after_sum, name=f"{s}c{b}")(x, train)
        return x


def resnet19(num_outputs: int, dropout: float = 0.5, bn_momentum: float = BN_MOMENTUM) -> ResNet:
    """The first ResNet tried: He et al.'s CIFAR-10 ResNet with n=3 (6n + 1 = 19 convs).

    Described in the writeup, not in the repository; built with its residual_block (projection
    shortcut conv + BN). Dropout before the output is not given; 0.5 as in cropped_dec21_3."""
    return ResNet(num_outputs, dropout=dropout, bn_momentum=bn_momentum,
                  stem=(16, 3, 1),                # 256
                  stages=((3, 16, 1, 2),          # 256
                          (3, 32, 2, 2),          # 128
                          (3, 64, 2, 2)))         # 64 -> gp 64


def cropped_dec21_3(num_outputs: int, dropout: float = 0.5, bn_momentum: float = BN_MOMENTUM) -> ResNet:
    """ResNet 3-3-3-3-3: model_definitions/cropped_dec21_3.py.

    1 + 15 x 2 = 31 convs: the writeup's "31-layer ResNet"."""
    return ResNet(num_outputs, dropout=dropout, bn_momentum=bn_momentum,
                  stem=(32, 7, 2),                # 128
                  stages=((3, 48, 1, 2),          # 128
                          (3, 64, 2, 2),          # 64
                          (3, 80, 2, 2),          # 32
                          (3, 96, 2, 2),          # 16
                          (3, 128, 2, 2)))        # 8 -> gp 128


def cropped_jan02(num_outputs: int, dropout: float = 0.5, bn_momentum: float = BN_MOMENTUM,
                  deep_block_convs: int = 3) -> ResNet:
    """ResNet 3-3-3-4-5: model_definitions/cropped_jan02.py, as committed.

    residual_block3 (bare shortcut conv, BN after the sum) with Lasagne's own batch norm (conv2dbn2:
    momentum 0.9). The committed file gives the last three stages 3-conv blocks: 1 + 6x2 + 12x3 = 49."""
    d = deep_block_convs
    return ResNet(num_outputs, dropout=dropout, bn_momentum=bn_momentum, bn_after_sum=True,
                  stem=(32, 7, 2),                # 128
                  stages=((3, 48, 1, 2),          # 128
                          (3, 64, 2, 2),          # 64
                          (3, 80, 2, d),          # 32
                          (4, 96, 2, d),          # 16
                          (5, 128, 2, d)))        # 8 -> gp 128


def resnet37(num_outputs: int, dropout: float = 0.5, bn_momentum: float = BN_MOMENTUM) -> ResNet:
    """The writeup's 37-layer ResNet: cropped_jan02's 3-3-3-4-5 layout with 2-conv blocks.

    No committed file has 37 convs; cropped_jan02 (the README's "ResNet 3-3-3-4-5") has 18 blocks,
    which make 1 + 18 x 2 = 37 with two convs per block as in every other ResNet of the ensemble."""
    return cropped_jan02(num_outputs, dropout, bn_momentum, deep_block_convs=2)


def resnet67(num_outputs: int, dropout: float = 0.8, bn_momentum: float = BN_MOMENTUM) -> ResNet:
    """ResNet 3-4-23-3: model_definitions/cropped_jan05_4.py (1 + 33 x 2 = 67 convs).

    residual_block3_localbn: bare shortcut conv, BN after the sum."""
    return ResNet(num_outputs, dropout=dropout, bn_momentum=bn_momentum, bn_after_sum=True,
                  stem=(32, 7, 2),                # 128
                  stem_pool=(3, 2),               # 63 (the original's comment says 64: an unpadded 3x3/2 pool gives 63)
                  stages=((3, 48, 1, 2),          # 63
                          (4, 64, 2, 2),          # 32
                          (23, 80, 2, 2),         # 16
                          (3, 128, 2, 2)))        # 8 -> gp 128
