"""nolearn-style layer tables and parameter counts, from shapes alone: under jax.eval_shape no
weights are allocated and nothing is compiled, so a 67-layer network at 256 px takes about a second."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from .registry import get_model


def _batch_shape(input_shape) -> tuple[int, ...]:
    shape = tuple(int(d) for d in input_shape)
    shape = (1,) + shape if len(shape) == 3 else shape
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"input_shape must be (height, width, channels) or (batch, height, width, "
                         f"channels) with positive sizes, got {tuple(input_shape)}")
    return shape


def _abstract_variables(model: nn.Module | str, input_shape, num_outputs, capture: bool = False):
    """Variables as shapes, plus the layer names in call order (eval_shape returns dicts sorted by
    key, so the order is read inside the trace). A registered name is built with `num_outputs`; a
    module must agree with it if given."""
    if isinstance(model, str):
        if num_outputs is None:
            raise ValueError(f"num_outputs is needed to build model {model!r}")
        model = get_model(model, num_outputs)
    elif num_outputs is not None and getattr(model, "num_outputs", num_outputs) != num_outputs:
        raise ValueError(f"model has {model.num_outputs} outputs, not the {num_outputs} asked for")
    order = []

    def init(x):
        variables = model.init(jax.random.key(0), x, capture_intermediates=capture)
        order.extend(variables.get("intermediates", {}))
        return variables

    return jax.eval_shape(init, jax.ShapeDtypeStruct(_batch_shape(input_shape), jnp.float32)), order


def _size(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


def count_params(model: nn.Module | str, input_shape, num_outputs: int | None = None) -> int:
    """Learnable parameters (weights, biases, BN gamma and beta; not BN mean and variance)."""
    return _size(_abstract_variables(model, input_shape, num_outputs)[0]["params"])


def layer_rows(model: nn.Module | str, input_shape, num_outputs: int | None = None):
    """[(name, output shape without batch, learnable parameters)], input first, in call order."""
    variables, order = _abstract_variables(model, input_shape, num_outputs, capture=True)
    params, outputs = variables["params"], variables["intermediates"]
    return [("in", _batch_shape(input_shape)[1:], 0)] + [
        (name, tuple(outputs[name]["__call__"][0].shape[1:]), _size(params.get(name, {})))
        for name in order if name != "__call__"]     # "__call__" is the model's own output


def layer_table(model: nn.Module | str, input_shape, num_outputs: int | None = None) -> str:
    """The rows of `layer_rows` as text, with the learnable total on the last line."""
    rows = layer_rows(model, input_shape, num_outputs)
    cells = [(str(i), name, "x".join(map(str, shape)), f"{n:,}" if n else "")
             for i, (name, shape, n) in enumerate(rows)]
    header = ("#", "name", "size", "params")
    widths = [max(len(r[k]) for r in cells + [header]) for k in range(4)]
    line = lambda r: "  ".join(c.rjust(w) if k in (0, 3) else c.ljust(w)
                               for k, (c, w) in enumerate(zip(r, widths))).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, cells),
                      f"total learnable parameters: {sum(n for *_, n in rows):,}"])
