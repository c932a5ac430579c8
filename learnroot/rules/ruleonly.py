"""Run hooked affine layers so that autograd computes nothing their rule replaces.

zennit attaches a rule to a layer by a hook on the backward node of the layer's *input*: autograd
first differentiates the layer itself (for a convolution, a ``convolution_backward`` of the size of
the forward pass; for a Linear layer, a matrix product), then the hook throws that gradient away and
returns the rule's relevance instead. With a rule on every Linear/Conv layer this wasted pull-back is
about one pass of the network per attribution (VGG16: 13 of the 28 ``convolution_backward`` calls of
``dtd_zplus``, about a fifth of its time).

:func:`rule_only` replaces, for as long as a rule is registered, the ``forward`` of such layers with
one that computes the same output without a graph and attaches it to the input by a node whose
backward returns a zero that costs nothing (an expanded scalar, no memory). zennit's hooks are
untouched: the node of the input still carries the rule's hook, which replaces that zero with the
rule's result, and the output's node (0.5.1) or the identity after it (1.0) still stores the relevance
arriving from above. Only the module's ``forward`` attribute changes (zennit's and torch's hooks run
around it as before), so this works with zennit 0.5.1 and 1.0 alike. The output is bit for bit the
module's own.

It applies only where the zero can never reach anything: layers whose rule is a
:class:`zennit.core.BasicHook` (every rule of the affine layers: :class:`~learnroot.rules.FastRule`,
:class:`~learnroot.rules.LearnedRoot`, :class:`~learnroot.rules.LayerBox`, zennit's own rules: they
return a relevance for the input instead of passing the gradient on) and whose parameters do not
require grad (the gradient of a parameter would be lost). Second-order use is not affected: a rule
that is differentiated (upper relevance requiring grad) builds its own graph from the stored input.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator

import torch
from torch import nn
from zennit.core import BasicHook

from .affine import AFFINE

__all__ = ["rule_only", "replaces_gradient"]


class _RuleOnlyForward(torch.autograd.Function):
    """``forward(input)`` computed without a graph; the backward returns a free zero for ``input``."""

    @staticmethod
    def forward(ctx, input: torch.Tensor, forward: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        ctx.like = (input.shape, input.dtype, input.device)
        return forward(input)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        shape, dtype, device = ctx.like
        return torch.zeros((), dtype=dtype, device=device).expand(shape), None


def replaces_gradient(module: nn.Module, rule) -> bool:
    """Whether ``rule`` on ``module`` replaces the layer's own input gradient whatever it is: a Linear/Conv
    layer without trainable parameters under a :class:`zennit.core.BasicHook` rule."""
    return (isinstance(module, AFFINE) and isinstance(rule, BasicHook)
            and not any(parameter.requires_grad for parameter in module.parameters(recurse=False)))


def _attached(original: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
    def forward(input: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if args or kwargs or not torch.is_grad_enabled() or not input.requires_grad:
            return original(input, *args, **kwargs)
        return _RuleOnlyForward.apply(input, original)
    return forward


@contextlib.contextmanager
def rule_only(modules: Iterable[nn.Module]) -> Iterator[list]:
    """Within the block, ``modules`` run without a backward of their own (see the module docstring).

    Parameters
    ----------
    modules : iterable of torch.nn.Module
        Layers whose rule replaces their input gradient (:func:`replaces_gradient`); the caller
        registers the rules.

    Yields
    ------
    list of torch.nn.Module
        The modules changed (each once); their ``forward`` is restored on leaving the block.
    """
    changed, saved = [], []
    try:
        for module in dict.fromkeys(modules):
            own = module.__dict__.get("forward")  # an instance attribute of its own, kept and restored
            saved.append(own)
            changed.append(module)
            module.forward = _attached(module.forward)
        yield changed
    finally:
        for module, own in zip(changed, saved):
            if own is None:
                del module.forward
            else:
                module.forward = own
