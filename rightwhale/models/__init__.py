"""The networks of every stage, by name.

Each is a flax.linen Module: `model.apply(variables, x, train=...)` on a float32 NHWC batch returns
`(output, extras)`: logits (classifiers) or raw regression values (localizers), and in
`extras["pre_logits"]` the pooled features (B, C) the ensemble stacks. Dropout draws from the
'dropout' rng; batch-norm running statistics live in 'batch_stats', updated only with train=True.
The writeup's final ensemble: resnet31, resnet37, resnet67, oxfordnet19_gap, cropped_jan03, cropped_jan05_2.
"""
from .registry import MODELS, REGRESSION_OUTPUTS, get_model, model_names
from .summary import count_params, layer_rows, layer_table

__all__ = ["MODELS", "REGRESSION_OUTPUTS", "count_params", "get_model", "layer_rows", "layer_table", "model_names"]
