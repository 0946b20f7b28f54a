"""Networks on the whole resized photo: the aligner (stage 2) and the stage 1 models designed on its
trunk. Feature-map sizes in the comments are at 256 px input."""
from .layers import BN_MOMENTUM
from .oxfordnet import OxfordNet

# model_definitions/localize_pts_dec31.py, up to its last conv
ALIGNER_TRUNK = dict(
    stem=(16, 7, 1),             # 256
    stem_pool=(2, 2),            # 128
    stages=((32, 3, 1),          # 128
            (64, 3, 2),          # 64
            (128, 3, 2),         # 32
            (256, 3, 2)),        # 16
)


def localize_pts_dec31(num_outputs: int = 4, pool_window: int = 8, dropout: float = 0.5,
                       bn_momentum: float = BN_MOMENTUM) -> OxfordNet:
    """The aligner: model_definitions/localize_pts_dec31.py.

    Regresses (bonnet x, y, blowhead x, y) / image size with an identity output. The original's
    8x8 average pool (stride 8) of the 16x16 map leaves 2x2x256 = 1024 features, so some position
    information reaches the dense layer; `pool_window` scales that choice to other input sizes."""
    return OxfordNet(num_outputs, pool_window=pool_window, dropout=dropout,
                     bn_momentum=bn_momentum, **ALIGNER_TRUNK)   # gp 2x2x256 -> out


def box_localizer(num_outputs: int = 4, pool_window: int = 8, dropout: float = 0.5,
                  bn_momentum: float = BN_MOMENTUM) -> OxfordNet:
    """Stage 1b: head-box regressor of (x, y, w, h) / image size.

    Not in the original's repository; our design in its style: the aligner, whose windowed pool
    keeps the coarse position a box regressor needs."""
    return localize_pts_dec31(num_outputs, pool_window, dropout, bn_momentum)


def naive_oxfordnet(num_outputs: int, dropout: float = 0.5,
                    bn_momentum: float = BN_MOMENTUM) -> OxfordNet:
    """Stage 1a: OxfordNet classifier on the whole photo.

    Not in the original's repository; our design in its style: the aligner's trunk with the
    classifiers' head (global average pool -> dropout -> dense over whales)."""
    return OxfordNet(num_outputs, dropout=dropout, bn_momentum=bn_momentum,
                     **ALIGNER_TRUNK)                             # gp 256 -> out
