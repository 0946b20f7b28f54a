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

STAGES = ("naive", "localize", "align", "classify", "match")
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
    interpolation: int = 0            # the warp: 0 nearest, as nolearn_utils' warp (order=0) did; 1 bilinear

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
    final_learning_rate: float | None = None  # linear per-epoch decay to this (StepDecay), any optimizer
    momentum: float = 0.9
    l2: float = 1e-6                   # objective_l2: penalty on conv and dense weights (not biases)
    l2_gamma: bool = True              # ... and on batch-norm gamma, which the original tagged regularizable
    seed: int = 42
    augment: Augment = field(default_factory=Augment)


@dataclass(frozen=True)
class Split:
    valid_fraction: float = 0.15
    seed: int = 42


@dataclass(frozen=True)
class Tta:
    """Test-time augmentation grid of the aligner: the product of the choices."""
    scales: tuple[float, ...] = (1.0,)
    shears: tuple[float, ...] = (0.0,)         # degrees
    rotations: tuple[float, ...] = (0.0,)      # degrees
    translations: tuple[float, ...] = (0.0,)   # pixels at 256 px, used for x and y alike

    @property
    def size(self) -> int:
        return len(self.scales) * len(self.shears) * len(self.rotations) * len(self.translations)


@dataclass(frozen=True)
class Match:
    """The local-feature matcher (rightwhale/scorers/matching.py), beyond the original. Chosen by the leave-one-out
    top-1 of the training crops of ../shared/data/rightwhale-heads (never their validation crops):
    160 px, k 20, radius 0.09: 51.7%; 224 px, k 30, radius 0.07: 54.4%; 224 px, k 50, radius 0.07: 54.9%;
    the same with inlier_weight 3: 54.0%. Then on 1,000 of those crops (top-1 / top-5, bench/tune_match.py):
    upright 59.1 / 68.0 (kept), rotation-invariant 56.3 / 63.2; upright with 800 keypoints 59.1 / 67.7,
    RANSAC threshold 0.02 59.2 / 68.0 or 0.045 58.8 / 68.1, a 40-whale shortlist 59.1 / 67.9, radius 0.09
    58.7 / 67.4, k 30 58.5 / 67.6: none better by more than the noise of 1,000 crops. Then the features
    (same crops, 59.4 / 68.4 on this run): SIFT contrast threshold 0.03 60.2 / 68.7 (on 2,000 crops +0.4,
    42 right / 34 wrong, at 1.5-2x the query time), 0.02 60.1, 0.06 54.4; crops upscaled to 336 px 59.5; max of
    RGB 58.9, red channel 56.5; CLAHE 57.9 (clip 2) and 53.9 (clip 4), histogram equalisation 36.6; a dense
    keypoint grid 27.7; inlier_weight 2 59.4, RANSAC gain of the whale's two best crops 59.5: none kept.
    Then votes on 2,000 crops (59.9 / 68.0 unweighted), keypoint weights (keypoint_weights.py) learnt from
    the other crops' votes over the whole gallery: a table of 8 x 8 places, 4 sizes, 4 ranks 62.0; 12 x 12,
    5, 5 blurred by 1 cell 62.1, by 0.6 62.9 (kept; 61.9 / 69.3 learnt from their votes among themselves,
    what bench/tune_match.py now does; that table to the power 0.6 or 1.6: 61.8 / 62.0), by 0.3 63.0;
    16 x 16, 6, 6 62.4-62.9; gradient boosting on the same axes 63.4, with colour 63.6; times a table of
    visual words (the index cells) 62.1-62.4; the query's weights alone 63.0. And on the 1,000 crops (59.4
    unweighted): Hough voting over offsets in place of the radius 58.1-58.4, the best of the query and its
    copies rotated +-10 degrees 59.5 or scaled 0.85 / 1.15 59.8, SIFT edge threshold 20 58.7, 5 octave
    layers 60.1 / 67.1 (KAZE is not in OpenCV 5's main module). Then the descriptors whitened by a projection
    learnt from the other crops' matches (whitening.py): 2,000 crops 61.9 / 69.3 -> 65.2 / 73.4 (kept; 1,000
    crops 62.1 -> 65.3; k 30 / 80 65.3 / 64.9, radius 0.09 / 0.055 65.5 / 63.8, 800 / 1,000 keypoints
    66.2 / 66.0 (on the 2,000 crops 800 gives 65.2, as 500 does: not kept); by a script outside
    the repository on the same 1,000 crops, a second round of pairs mined with the whitened descriptors
    65.1, 200 crop pairs per whale instead of 30 64.9)."""
    crop_size: int = 224               # crops are resized to this before SIFT
    max_keypoints: int = 500           # strongest SIFT keypoints per crop
    upright: bool = True               # descriptors at angle 0 (aligned crops need no rotation invariance)
    neighbours: int = 50               # k of LNBNN; the (k+1)-th neighbour is the normaliser
    radius: float = 0.07               # a neighbour votes only this near (fraction of the crop) to the query
    shortlist: int = 20                # whales re-ranked by RANSAC
    ransac_threshold: float = 0.03     # inlier reprojection error, fraction of the crop
    ransac_iterations: int = 200
    max_scale: float = 2.0             # a similarity scaling more than this is no match of aligned crops
    inlier_weight: float = 1.0         # RANSAC inliers' LNBNN weight added to the whale's score
    keypoint_weights: bool = True      # votes weighted by a table learnt from the gallery (keypoint_weights.py)
    whitening: bool = True             # descriptors whitened by a projection learnt from the gallery (whitening.py)
    index: str = "ivf"                 # ivf (faiss, approximate), exact (faiss), jax (exact matmul, for a GPU)
    cells: int = 1024                  # IVF cells
    probes: int = 16                   # IVF cells searched per query descriptor


@dataclass(frozen=True)
class StageConfig:
    stage: str
    preset: str
    model: str
    image_size: int                    # network input size (square): cache size or crop size
    train: Train
    split: Split = field(default_factory=Split)
    model_kwargs: dict = field(default_factory=dict)
    tta: Tta = field(default_factory=Tta)
    crop_size: int = 256               # head crops written by localize / align
    # align: predicted pairs shorter than this fraction of the training photos' median head length are
    # stretched to it before cropping (crop.lengthen); None crops them as predicted, as the original did
    min_head_length: float | None = None
    aux_targets: bool = False          # classify: also predict pattern type and crop points
    match: Match | None = None         # match: the local-feature matcher (no network; `model` names it)

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
CLASSIFY_AUGMENT = Augment(            # cropped_dec21_3: flips, scale, shift, gamma; no rotation
    probability=1.0,
    scales=_grid(0.5, 1.5, 11),
    translations=_range(-64, 64),
    flip_horizontal=0.5,
    flip_vertical=0.5,
    gamma_probability=0.5,
    gammas=_grid(0.5, 1.5, 11),
)

# The original's TTA for the aligner (scripts/create_test_head_crop_image.py):
# 3 scales x 3 shears (0.25 rad) x 9 rotations x 3 translations = 243 copies.
ORIGINAL_TTA = Tta(
    scales=(0.75, 1.0, 1.25),
    shears=(-14.324, 0.0, 14.324),
    rotations=tuple(float(r) for r in range(0, 361, 45)),
    translations=(-25.0, 0.0, 25.0),
)
CPU_TTA = Tta(scales=(0.9, 1.0, 1.1), rotations=(0.0, 90.0, 180.0, 270.0))

_ORIGINAL_CLASSIFIER = Train(optimizer="nesterov", learning_rate=0.1, final_learning_rate=1e-3,
                             max_epochs=2500, patience=100, l2=1e-6, augment=CLASSIFY_AUGMENT)
_ORIGINAL_LOCALIZER = Train(optimizer="adam", learning_rate=1e-4, max_epochs=1000, patience=150,
                            l2=1e-7, augment=ALIGN_AUGMENT)

# --- the original's model definitions, one recipe each ------------------------------
# felixlaumon/kaggle-right-whale, model_definitions/<name>.py: what each fixed. `--preset original --model
# NAME` trains exactly that recipe. Every classifier definition: flips p 0.5 each way, affine p 1 with scale
# in linspace(0.5, 1.5, 11), gamma p 0.5, patience 100; the shift, shear, rotation and gamma grids differ.


@dataclass(frozen=True)
class Recipe:
    network: str                       # registry name (python -m rightwhale.models --list)
    image_size: int
    train: Train
    dropout: float                     # before the output layer ('gpdrop')


def _classifier_augment(shift: int, shear_rad: float = 0.0, rotation: int = 0, gamma=(0.5, 1.5),
                        input_size: int = 256) -> Augment:
    """A definition's iterator: shifts np.arange(-shift, shift) pixels of its input (stored at 256 px, as
    every Augment), shears np.linspace(-shear, shear, 11) in radians (degrees here, as our affine takes
    them), rotations np.arange(-rotation, rotation) degrees."""
    return Augment(probability=1.0, scales=_grid(0.5, 1.5, 11),
                   translations=tuple(t * 256 / input_size for t in _range(-shift, shift)),
                   shears=tuple(float(np.degrees(v)) for v in np.linspace(-shear_rad, shear_rad, 11))
                   if shear_rad else (0.0,),
                   rotations=_range(-rotation, rotation) if rotation else (0.0,),
                   flip_horizontal=0.5, flip_vertical=0.5, gamma_probability=0.5, gammas=_grid(*gamma, 11))


def _classifier(batch, optimizer, lr, final_lr, l2, epochs, augment) -> Train:
    return Train(batch_size=batch, optimizer=optimizer, learning_rate=lr, final_learning_rate=final_lr, l2=l2,
                 max_epochs=epochs, patience=100, augment=augment)


def cropped_dec19() -> Recipe:
    return Recipe("oxfordnet19_gap", 256, _classifier(32, "adam", 1e-3, 1e-5, 1e-5, 1500, _classifier_augment(64)), 0.8)


def cropped_dec21_3() -> Recipe:
    return Recipe("cropped_dec21_3", 256,
                  _classifier(16, "nesterov", 0.1, 1e-3, 1e-6, 2500, _classifier_augment(64)), 0.5)


def cropped_jan02() -> Recipe:
    return Recipe("cropped_jan02", 256, _classifier(16, "nesterov", 0.1, 1e-5, 1e-6, 2000,
                                                    _classifier_augment(32, 0.25, 45, gamma=(0.8, 1.2))), 0.5)


def cropped_jan03() -> Recipe:
    return Recipe("cropped_jan03", 256, _classifier(8, "nesterov", 1e-2, 1e-5, 1e-6, 2500,
                                                    _classifier_augment(64, 0.1, 30, gamma=(0.8, 1.2))), 0.8)


def cropped_jan05_2() -> Recipe:
    return Recipe("cropped_jan05_2", 256, _classifier(32, "nesterov", 1e-2, 1e-5, 1e-6, 2500,
                                                      _classifier_augment(64, 0.1, 30, gamma=(0.8, 1.2))), 0.8)


def cropped_jan05_3() -> Recipe:
    shifts_at_299 = _classifier_augment(64, 0.1, 30, gamma=(0.8, 1.2), input_size=299)
    return Recipe("cropped_jan05_3", 299, _classifier(16, "nesterov", 0.1, 1e-3, 1e-6, 2500, shifts_at_299), 0.8)


def cropped_jan05_4() -> Recipe:
    return Recipe("resnet67", 256, _classifier(16, "adam", 1e-3, None, 1e-6, 2000,
                                               _classifier_augment(32, 0.25, 45, gamma=(0.8, 1.2))), 0.8)


def localize_pts_dec31() -> Recipe:
    """The aligner's definition (stage 2): the align stage's original preset, and what its CPU preset shrinks."""
    return Recipe("localize_pts_dec31", 256, _ORIGINAL_LOCALIZER, 0.5)


def cpu_aligner(recipe: Recipe) -> Recipe:
    """The aligner at 128 px (half the input: it regresses points, and the classifiers' quarter would leave a
    64 px photo) for 200 epochs: at 100 its point error was 0.61 of the head length, at 200 0.36 (README).
    Adam 1e-3 decaying to 1e-4 instead of a constant 1e-4: 200 epochs are a fifth of the definition's 1,000."""
    return dataclasses.replace(recipe, image_size=128, train=dataclasses.replace(
        recipe.train, learning_rate=1e-3, final_learning_rate=1e-4, max_epochs=200, patience=30))


ORIGINAL_DEFINITIONS = {f.__name__: f for f in (cropped_dec19, cropped_dec21_3, cropped_jan02, cropped_jan03,
                                                 cropped_jan05_2, cropped_jan05_3, cropped_jan05_4)}
# our readable names of the same networks: --model resnet31 --preset original is cropped_dec21_3's recipe
# (resnet37 is cropped_jan02's layout with the writeup's 2-conv blocks: it trains with cropped_jan02's recipe)
DEFINITION_OF = {"oxfordnet19_gap": "cropped_dec19", "resnet31": "cropped_dec21_3", "resnet67": "cropped_jan05_4",
                 "resnet37": "cropped_jan02",
                 **{name: name for name in ORIGINAL_DEFINITIONS}}


def original_recipe(model: str) -> Recipe | None:
    """The recipe of the original definition that trained network `model`, if one did."""
    name = DEFINITION_OF.get(model)
    return ORIGINAL_DEFINITIONS[name]() if name else None


# What the CPU preset shrinks of a definition: the input (a quarter: 64 px for 256, 75 for cropped_jan05_3's
# 299) and the run's length. Batch, optimizer, learning rates (the StepDecay spans the shorter run), l2, the
# grids (shifts scaled with the input) and dropout stay the definition's own.
CPU_INPUT_SHRINK, CPU_CLASSIFIER_EPOCHS, CPU_CLASSIFIER_PATIENCE = 4, 60, 20
CPU_CLASSIFIER_SIZE = 256 // CPU_INPUT_SHRINK


def cpu_recipe(recipe: Recipe) -> Recipe:
    """A definition's recipe at the CPU preset's size and length."""
    return dataclasses.replace(recipe, image_size=round(recipe.image_size / CPU_INPUT_SHRINK),
                               train=dataclasses.replace(recipe.train, max_epochs=CPU_CLASSIFIER_EPOCHS,
                                                         patience=CPU_CLASSIFIER_PATIENCE))


# The localizers' average pool leaves a 2x2 map at any input size, as the
# original's window of 8 did at 256 px (the map before it is 1/16 of the input).
WINDOWED_POOL_MODELS = ("localize_pts_dec31", "box_localizer")

MATCHER = "rootsift-lnbnn"       # the match stage's "model": RootSIFT features, LNBNN votes, RANSAC

_ALIGNER = localize_pts_dec31()
_CPU_ALIGNER = cpu_aligner(_ALIGNER)

# stage -> preset -> (model, image size, Train, extra StageConfig fields)
_PRESETS = {
    "naive": {
        # The naive run's exact settings are not in the original repository;
        # it used the classifier's training with heavy augmentation.
        "original": ("naive_oxfordnet", 256, dataclasses.replace(_ORIGINAL_CLASSIFIER, augment=NAIVE_AUGMENT), {}),
        "cpu": ("naive_oxfordnet", 64, Train(optimizer="adam", learning_rate=1e-3, max_epochs=30,
                                             patience=10, l2=1e-6, augment=NAIVE_AUGMENT), {}),
    },
    "localize": {
        "original": ("box_localizer", 256, dataclasses.replace(_ORIGINAL_LOCALIZER, augment=BOX_AUGMENT), {}),
        "cpu": ("box_localizer", 96, Train(optimizer="adam", learning_rate=1e-3, max_epochs=40,
                                           patience=15, l2=1e-7, augment=BOX_AUGMENT),
                {"crop_size": 64}),
    },
    "align": {
        "original": (_ALIGNER.network, _ALIGNER.image_size, _ALIGNER.train, {"tta": ORIGINAL_TTA}),
        "cpu": (_CPU_ALIGNER.network, _CPU_ALIGNER.image_size, _CPU_ALIGNER.train,
                {"tta": CPU_TTA, "crop_size": 64, "min_head_length": 1.0}),
    },
    "classify": {
        "original": ("resnet19", 256, _ORIGINAL_CLASSIFIER, {}),
        # resnet19 has no definition file (the writeup's first ResNet): Adam, which trains it in 60 epochs
        "cpu": ("resnet19", CPU_CLASSIFIER_SIZE, Train(optimizer="adam", learning_rate=1e-3,
                                                       max_epochs=CPU_CLASSIFIER_EPOCHS,
                                                       patience=CPU_CLASSIFIER_PATIENCE, l2=1e-6,
                                                       augment=CLASSIFY_AUGMENT), {}),
    },
    # beyond the original, no GPU needed: one matcher for both presets
    "match": {preset: (MATCHER, Match.crop_size, Train(), {}) for preset in PRESETS},
}


def stage_config(stage: str, preset: str = "cpu", **overrides) -> StageConfig:
    """The configuration of one stage; `overrides` replace fields of StageConfig or Train.

    Augmentation translations are given at 256 px (the original's input) and
    rescaled to the preset's input size here.
    """
    if stage not in _PRESETS:
        raise ValueError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    model, size, train, extra = _PRESETS[stage][preset]
    recipe = original_recipe(overrides.get("model", model)) if stage == "classify" else None
    if recipe is not None and preset == "cpu":
        recipe = cpu_recipe(recipe)
    if recipe is not None:          # that definition's own input, batch, optimizer, schedule, l2, grids, dropout
        size, train = recipe.image_size, recipe.train       # the model keeps the name given (the run folder's)
        overrides = {**overrides, "model_kwargs": {"dropout": recipe.dropout, **overrides.get("model_kwargs", {})}}
    if stage == "match":
        # the matcher is no network: the seed is its only training field, the crop size its input size
        unknown = set(overrides) - set(Match.__dataclass_fields__) - {"seed", "crop_size", "image_size"}
        if unknown:
            raise ValueError(f"match: no setting {', '.join(sorted(unknown))} (Match has "
                             f"{', '.join(Match.__dataclass_fields__)}, and seed)")
        match = dataclasses.replace(Match(), **{k: v for k, v in overrides.items() if k in Match.__dataclass_fields__})
        return StageConfig(stage=stage, preset=preset, model=MATCHER, image_size=match.crop_size,
                           train=Train(seed=overrides.get("seed", train.seed)), match=match)
    if "learning_rate" in overrides and train.final_learning_rate is not None:
        # keep the preset's decay ratio: a new start must not decay "upwards"
        overrides.setdefault("final_learning_rate",
                             overrides["learning_rate"] * train.final_learning_rate / train.learning_rate)
    train_fields = {f.name for f in dataclasses.fields(Train)}
    train = dataclasses.replace(train, **{k: v for k, v in overrides.items() if k in train_fields})
    stage_fields = {k: v for k, v in overrides.items() if k not in train_fields}
    cfg = StageConfig(stage=stage, preset=preset, model=model, image_size=size, train=train, **extra)
    cfg = dataclasses.replace(cfg, **stage_fields)
    if cfg.model in WINDOWED_POOL_MODELS and "pool_window" not in cfg.model_kwargs:
        cfg = dataclasses.replace(cfg, model_kwargs={**cfg.model_kwargs, "pool_window": max(cfg.image_size // 32, 1)})
    return dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, augment=cfg.train.augment.rescaled(cfg.image_size)))
