"""The networks of every stage, by name.

Each model is a flax.linen Module called as `model.apply(variables, x, train=...)`
on a float32 NHWC batch, returning `(output, extras)`: output is logits for the
classifiers (the loss applies softmax) or raw regression values for the
localizers, and `extras["pre_logits"]` is the pooled feature vector (B, C)
the ensemble stacks. Dropout draws from the 'dropout' rng; batch-norm running
statistics live in 'batch_stats' and update only with train=True.

The writeup's final ensemble is resnet31, resnet37, resnet67 and the three
19-layer OxfordNets oxfordnet19_gap, cropped_jan03, cropped_jan05_2.
"""
from __future__ import annotations

import inspect

import flax.linen as nn

from .aligner import box_localizer, localize_pts_dec31, naive_oxfordnet
from .oxfordnet import cropped_jan03, cropped_jan05_2, oxfordnet19_gap
from .resnet import cropped_dec21_3, cropped_jan02, resnet19, resnet37, resnet67
from .summary import count_params, layer_rows, layer_table

MODELS = {
    "localize_pts_dec31": localize_pts_dec31,   # stage 2 aligner: 4 point coordinates
    "box_localizer": box_localizer,             # stage 1b: 4 box coordinates
    "naive_oxfordnet": naive_oxfordnet,         # stage 1a: whole-photo classifier
    "resnet19": resnet19,
    "cropped_dec21_3": cropped_dec21_3,
    "resnet31": cropped_dec21_3,                # the writeup's 31-layer ResNet is cropped_dec21_3
    "cropped_jan02": cropped_jan02,
    "resnet37": resnet37,
    "resnet67": resnet67,
    "oxfordnet19_gap": oxfordnet19_gap,
    "cropped_jan03": cropped_jan03,
    "cropped_jan05_2": cropped_jan05_2,
}

# models whose output is a fixed number of regression targets rather than classes
REGRESSION_OUTPUTS = {"localize_pts_dec31": 4, "box_localizer": 4}


def model_names() -> list[str]:
    return sorted(MODELS)


def get_model(name: str, num_outputs: int, **kwargs) -> nn.Module:
    """Build model `name` with `num_outputs` outputs; kwargs override its defaults
    (e.g. dropout, bn_momentum, pool_window for the localizers)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(model_names())}")
    build = MODELS[name]
    accepted = set(inspect.signature(build).parameters) - {"num_outputs"}
    unknown = set(kwargs) - accepted
    if unknown:
        raise ValueError(f"model {name!r} takes no option {', '.join(sorted(unknown))}; "
                         f"it accepts: {', '.join(sorted(accepted))}")
    if not (isinstance(num_outputs, int) and num_outputs >= 1):
        raise ValueError(f"model {name!r}: num_outputs must be a positive integer, got {num_outputs!r}")
    return build(num_outputs, **kwargs)


__all__ = ["MODELS", "REGRESSION_OUTPUTS", "count_params", "get_model", "layer_rows",
           "layer_table", "model_names"]
