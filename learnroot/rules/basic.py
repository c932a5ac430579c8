"""Small rules: zB with each layer's own input box, and gradient pass-through."""
from __future__ import annotations

from typing import Optional

from zennit.core import BasicHook, Hook
from zennit.rules import ZBox

from .affine import ParamCache
from .fast import FastRule

__all__ = ["LayerBox", "GradientPass"]


class LayerBox(BasicHook):
    """zB rule whose box is ``[min, max]`` of the layer's own input, per sample (``dtd_zb``).

    ``R_i = sum_j (x_i w_ij - l w+_ij - h w-_ij) / sum_i' (...) R_j`` with ``l``/``h`` the
    smallest/largest value of the sample's input to this layer (computed for the whole batch at
    once). Delegates to :class:`zennit.rules.ZBox`, evaluated by :class:`FastRule`.

    Parameters
    ----------
    stabilizer : float
        Denominator stabiliser.
    zero_params : list of str, optional
        Parameters set to zero (``['bias']`` leaves biases out).
    cache : ParamCache, optional
        Holds the modified weights per layer across calls; shared by all copies (a new one by default).
    fast : bool
        Evaluate zB with :class:`FastRule` (default) or with zennit's own ``ZBox``.
    """

    def __init__(self, stabilizer: float = 1e-6, zero_params=None, cache: Optional[ParamCache] = None,
                 fast: bool = True):
        super().__init__()
        self.stabilizer = stabilizer
        self.zero_params = zero_params
        self.cache = ParamCache() if cache is None else cache
        self.fast = fast

    def copy(self) -> "LayerBox":
        """A copy with the same configuration, sharing the cache."""
        return type(self)(stabilizer=self.stabilizer, zero_params=self.zero_params, cache=self.cache, fast=self.fast)

    def backward(self, module, grad_input, grad_output):
        """zB with the per-sample box of the stored input."""
        x = self.stored_tensors["input"][0].detach()
        dims = tuple(range(1, x.dim()))
        rule = ZBox(x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True), stabilizer=self.stabilizer,
                    zero_params=self.zero_params)
        if self.fast:
            rule = FastRule(rule, cache=self.cache)
        rule.stored_tensors = self.stored_tensors
        return rule.backward(module, grad_input, grad_output)


class GradientPass(Hook):
    """Keep the module's own gradient (e.g. MaxPool: winner-take-all); hooked only to be recorded."""

    def backward(self, module, grad_input, grad_output):
        """Return ``grad_input`` unchanged."""
        return tuple(grad_input)

    def copy(self) -> "GradientPass":
        """A new instance."""
        return type(self)()
