"""The registry: every network by name, and how to build one."""
import inspect

import flax.linen as nn

from .aligner import box_localizer, localize_pts_dec31, naive_oxfordnet
from .inception import cropped_jan05_3
from .oxfordnet import cropped_jan03, cropped_jan05_2, oxfordnet19_gap
from .resnet import cropped_dec21_3, cropped_jan02, resnet19, resnet37, resnet67

# stage 1a: naive_oxfordnet; 1b: box_localizer; 2: localize_pts_dec31; 3: the classifiers
MODELS = {f.__name__: f for f in (naive_oxfordnet, box_localizer, localize_pts_dec31, resnet19, cropped_dec21_3,
                                  cropped_jan02, resnet37, resnet67, oxfordnet19_gap, cropped_jan03, cropped_jan05_2,
                                  cropped_jan05_3)}
MODELS["resnet31"] = cropped_dec21_3    # the writeup's 31-layer ResNet
MODELS["cropped_dec19"] = oxfordnet19_gap    # the original's definition names, for --preset original --model
MODELS["cropped_jan05_4"] = resnet67
REGRESSION_OUTPUTS = {"localize_pts_dec31": 4, "box_localizer": 4}   # the rest output one logit per class


def model_names() -> list[str]:
    return sorted(MODELS)


def get_model(name: str, num_outputs: int, **kwargs) -> nn.Module:
    """Model `name` with `num_outputs` outputs; kwargs override its defaults (dropout, bn_momentum,
    pool_window of the localizers)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(model_names())}")
    accepted = set(inspect.signature(MODELS[name]).parameters) - {"num_outputs"}
    unknown = set(kwargs) - accepted
    if unknown:
        raise ValueError(f"model {name!r} takes no option {', '.join(sorted(unknown))}; "
                         f"it accepts: {', '.join(sorted(accepted))}")
    if not (isinstance(num_outputs, int) and num_outputs >= 1):
        raise ValueError(f"model {name!r}: num_outputs must be a positive integer, got {num_outputs!r}")
    return MODELS[name](num_outputs, **kwargs)
