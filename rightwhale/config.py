"""All configuration in one place: frozen dataclasses, built by plain functions.

Every stage gets one `StageConfig` from `stage_config(stage, preset)`; code
below it receives the pieces it needs as arguments and never reads globals.
The "original" preset holds the 2015 solution's hyper-parameters (DESIGN.md
section 3); the "cpu" preset keeps the same shape of training but small
enough to finish each stage in minutes on two CPU cores.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

STAGES = ("naive", "localize", "align", "classify")
PRESETS = ("cpu", "original")


def _grid(start, stop, num):
    return tuple(float(v) for v in np.linspace(start, stop, num))


def _range(start, stop):
    return tuple(float(v) for v in range(start, stop))


@dataclass(frozen=True)
class Augment:
    """Random augmentation, sampled as the original's nolearn_utils iterators did.

    With `probability` a sample is warped by an affine transform whose scale,
    rotation (degrees), shear (degrees) and x/y translation (pixels at the
    model's input size) are each drawn from their tuple of choices.
    """
    probability: float = 0.0
    scales: tuple[float, ...] = (1.0,)
    rotations: tuple[float, ...] = (0.0,)
    shears: tuple[float, ...] = (0.0,)
    translations: tuple[float, ...] = (0.0,)
    flip_horizontal: float = 0.0      # probability of a left-right flip
    flip_vertical: float = 0.0        # probability of an up-down flip
    gamma_probability: float = 0.0
    gammas: tuple[float, ...] = (1.0,)
    brightness: tuple[float, ...] = (1.0,)   # multiplicative choices

    def rescaled(self, image_size: int, reference_size: int = 256) -> "Augment":
        """Translations are given at 256 px; scale them to another input size."""
        f = image_size / reference_size
        return dataclasses.replace(self, translations=tuple(t * f for t in self.translations))


@dataclass(frozen=True)
class Train:
    """The nolearn NeuralNet arguments of the original, as one record."""
    batch_size: int = 16
    max_epochs: int = 30
    patience: int = 10                 # early stopping on validation loss
    optimizer: str = "adam"            # "adam" or "nesterov"
    learning_rate: float = 1e-4        # Adam's rate, or Nesterov's start
    final_learning_rate: float | None = None  # Nesterov: linear per-epoch decay to this (StepDecay)
    momentum: float = 0.9
    l2: float = 1e-6                   # objective_l2: penalty on all weights (not biases, BN)
    seed: int = 42
    augment: Augment = field(default_factory=Augment)


@dataclass(frozen=True)
class Split:
    valid_fraction: float = 0.15
    seed: int = 42


@dataclass(frozen=True)
class StageConfig:
    stage: str
    preset: str
    model: str
    image_size: int                    # cache / network input size (square)
    train: Train
    split: Split = field(default_factory=Split)
    model_kwargs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --- augmentation of the original, per stage ------------------------------------

ALIGN_AUGMENT = Augment(               # localize_pts_dec31
    probability=0.5,
    scales=_grid(0.75, 1.25, 21),
    translations=_range(-48, 48),
    rotations=_range(-180, 180),
)
BOX_AUGMENT = ALIGN_AUGMENT             # stage 1b: same warp, box moved by its mask
NAIVE_AUGMENT = Augment(               # heavy: rotation, translation, shear, scale, brightness
    probability=1.0,
    scales=_grid(0.75, 1.25, 21),
    translations=_range(-48, 48),
    rotations=_range(-180, 180),
    shears=_grid(-20, 20, 9),
    brightness=_grid(0.7, 1.3, 7),
)
CLASSIFY_AUGMENT = Augment(            # cropped_dec21_3: light only
    probability=1.0,
    scales=_grid(0.9, 1.1, 11),
    translations=_range(-16, 16),
    flip_horizontal=0.5,
    flip_vertical=0.5,
    gamma_probability=0.5,
    gammas=_grid(0.5, 1.5, 11),
)
