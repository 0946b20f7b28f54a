"""Auxiliary heads: extra targets predicted from a classifier's GAP features. The 1st place team
also taught its network where the bonnet and blowhead are and which callosity pattern type a whale
has: extra targets shape the shared features. Their outputs follow the class logits in one array,
[logits | extras], so the training loop and `predict` need nothing new."""
import flax.linen as nn
import jax.numpy as jnp

from .layers import dense


class WithAuxiliaryHeads(nn.Module):
    base: nn.Module
    extra_outputs: int          # e.g. pattern types + 4 point coordinates

    @nn.compact
    def __call__(self, x, train: bool = False):
        logits, extras = self.base(x, train=train)
        aux = dense(self.extra_outputs, name="aux")(extras["pre_logits"])
        return jnp.concatenate([logits, aux], axis=-1), extras
