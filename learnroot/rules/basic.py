"""Small rules: zB with each layer's own input box, gradient pass-through, the constant gate, the exact
proportional rule of sums and poolings."""
from __future__ import annotations

from typing import Optional

import torch
from zennit.core import BasicHook, Hook
from zennit.rules import ZBox

from .affine import ParamCache
from .fast import FastRule

__all__ = ["LayerBox", "GradientPass", "GatePass", "Proportional"]


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


class GatePass(Hook):
    """All relevance to the first input of a two-input product ``input * gate``, none to the gate.

    The gate held constant (as CP-LRP holds attention constant): ``input * gate`` is then a linear map
    with one weight per element, and the z rule gives each input ``input g R / (input g) = R``; the
    relevance is summed over the dimensions along which the gate broadcasts ``input`` (``R.sum_to_size``),
    so the rule conserves. Used by :class:`learnroot.layers.Gate`.
    """

    def backward(self, module, grad_input, grad_output):
        """``(R_out summed to the input's shape, None, ...)``."""
        relevance = grad_output[0]
        first = grad_input[0]
        if first is not None and tuple(first.shape) != tuple(relevance.shape):
            relevance = relevance.sum_to_size(first.shape)
        return (relevance,) + (None,) * (len(grad_input) - 1)

    def copy(self) -> "GatePass":
        """A new instance."""
        return type(self)()


class Proportional(BasicHook):
    """Split each output's relevance in proportion to its inputs' contributions (sums, average pooling, means).

    For a layer ``z = J x`` with non-negative weights (a sum of stacked operands, an average or sum
    pooling, a mean): ``R_i = x_i sum_j J_ji R_j / d_j``. This is zennit's ``Norm`` with a stabiliser
    that scales with the *cancelled* part of the inputs instead of an absolute one:

        ``d_j = z_j + eps sign(z_j) ((J|x|)_j - |z_j|)``   (``sign(0) = 1``)

    - inputs of one sign (a pooling after a ReLU; a sum of operands of one sign) cancel nothing,
      ``d_j = z_j``: the division is exact, and the layer conserves relevance to rounding whatever the
      scale of the activations (zennit's absolute ``eps`` absorbs ``eps / (|z| + eps)``: all of it in a
      randomly initialised network whose pooled activations are 1e-9);
    - operands that (nearly) cancel, ``a + b`` with ``|z| << |a| + |b|``, get relevances of opposite
      signs bounded by about ``1 / (2 eps)`` times the output's (as zennit's ``Norm`` bounds them for
      activations of order 1), and lose at most the share ``eps (|a| + |b| - |z|) / |d|``.

    An output whose inputs are all 0 (``d_j = 0``) has no proportions; its relevance is left out, as
    zennit's ``Norm`` leaves it out (z-type rules give no relevance to a zero output; zB and w^2 do,
    which is why they do not conserve through proportional layers, docs/METHOD.md).

    Parameters
    ----------
    stabilizer : float, optional
        ``eps`` (``method.stabilizer``); None: exact division everywhere.
    """

    def __init__(self, stabilizer: Optional[float] = None):
        super().__init__()
        self.stabilizer = stabilizer

    def copy(self) -> "Proportional":
        """A new instance with the same stabiliser."""
        return type(self)(self.stabilizer)

    def backward(self, module, grad_input, grad_output):
        """``x * J^T(R / d)``, zero where ``d = 0``."""
        upper = grad_output[0]
        second = upper.requires_grad
        stored = self.stored_tensors["input"][0]
        with torch.enable_grad():
            input = (stored.clone() if second else stored.detach()).requires_grad_()
            output = module.forward(input)
            denominator = output
            if self.stabilizer is not None:
                with torch.no_grad():
                    cancelled = (module.forward(input.detach().abs()) - output.detach().abs()).clamp_(min=0)
                    cancelled.mul_(self.stabilizer)
                denominator = output + torch.where(output < 0, -cancelled, cancelled)
            ratio = upper / denominator
            ratio = torch.where((denominator != 0) & torch.isfinite(ratio), ratio, torch.zeros_like(ratio))
            gradient, = torch.autograd.grad(output, input, ratio, create_graph=second)
            relevance = input * gradient
        if not second:
            relevance = relevance.detach()
        return tuple(relevance if original is not None and original.shape == relevance.shape else None
                     for original in grad_input)
