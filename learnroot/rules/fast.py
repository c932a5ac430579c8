"""FastRule: zennit's basic rules evaluated with cached modified parameters and without dead branches."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from zennit.core import BasicHook, ParamMod, zero_wrap
from zennit.rules import AlphaBeta, Epsilon, Gamma, ZBox, ZPlus

from .affine import (ParamCache, affine_response, affine_vjp, divide_exact, functional, grad_input_like, stabilize_fast,
                     zeroed)
from .empty import spread_empty

__all__ = ["PRODUCT_RULES", "FastRule"]

#: zennit rules whose result is a sum of ``input * gradient`` products over their branches.
PRODUCT_RULES = (ZPlus, AlphaBeta, Gamma, ZBox, Epsilon)


class FastRule(BasicHook):
    """A zennit ``BasicHook`` rule (z+, gamma, zB, epsilon, w^2, flat, ...), computed faster on Linear/Conv.

    zennit evaluates each branch ``(input modifier, parameter modifier, output modifier)`` of a rule by
    running the layer with temporarily modified parameters, then differentiates every branch. This
    hook evaluates exactly the same branches with the same functional ops, and

    - takes the modified parameters from a :class:`ParamCache` (made once per layer, not per call);
    - for rules whose result is a sum of ``input * gradient`` products (z+, alpha-beta, gamma, zB,
      epsilon), does not run the affine map of a branch whose input is all zero and whose modified
      bias is absent or zeroed (its response is exactly zero), nor pull its gradient back where
      that gradient is finite (its product is exactly zero): the negative-input branches of z+ and
      gamma behind a ReLU;
    - does not pull back a branch whose upper gradient is all zero (gamma's sign branch).

    With ``stabilizer`` given, z+ on a non-negative input (the negative branch is dead) and epsilon
    take a fused path: ``x * W'(R / stab(W'^T x))`` with one affine map, one pull-back
    (:func:`affine_vjp`) and few temporaries.

    Results equal zennit's (a zeroed bias is left out instead of added as zeros, which can only
    turn a ``-0.0`` into ``0.0``), except that with ``fallback`` z+ (biases left out) divides
    without a stabiliser (its denominator ``w+^T x+ + w-^T x-`` is a sum of non-negative terms: where
    it is positive the division is exact and the neuron's relevance is conserved, where zennit's
    stabiliser would absorb ``eps / (z + eps)`` of it; :func:`~learnroot.rules.affine.divide_exact`),
    and the relevance of z+'s empty neurons (denominator 0) is redistributed by w^2
    (:mod:`learnroot.rules.empty`) instead of dropped. Other modules use zennit's own backward.

    Parameters
    ----------
    rule : zennit.core.BasicHook
        The rule template, e.g. ``zennit.rules.ZPlus(stabilizer=1e-6, zero_params=['bias'])``.
    cache : ParamCache, optional
        Shared by all copies; a new one by default.
    stabilizer : float, optional
        The float the rule was made with (``stabilizer`` of z+, ``epsilon`` of epsilon): enables the
        fused path of those two rules. Leave it out for a callable stabiliser.
    fallback : bool
        z+ only: divide exactly where the denominator is positive and redistribute the relevance of
        neurons whose denominator is zero by w^2 (with biases in the rule, ``method.bias``, the
        denominator can be negative: then the stabiliser stays and only zero denominators fall back).
    """

    def __init__(self, rule: BasicHook, cache: Optional[ParamCache] = None, stabilizer: Optional[float] = None,
                 fallback: bool = False):
        super().__init__(input_modifiers=rule.input_modifiers, param_modifiers=rule.param_modifiers,
                         output_modifiers=rule.output_modifiers, gradient_mapper=rule.gradient_mapper,
                         reducer=rule.reducer)
        self.rule = rule
        self.cache = ParamCache() if cache is None else cache
        self.stabilizer = stabilizer
        self.products = isinstance(rule, PRODUCT_RULES)
        self.fused = stabilizer is not None and type(rule) in (ZPlus, Epsilon)
        self.fallback = bool(fallback) and isinstance(rule, ZPlus)

    def __repr__(self) -> str:
        return f"FastRule({type(self.rule).__name__})"

    def copy(self) -> "FastRule":
        """A copy for one more layer, sharing the rule and the cache."""
        return type(self)(self.rule, self.cache, self.stabilizer, self.fallback)

    def _keys(self, module: nn.Module, branch: int) -> tuple[ParamMod, list]:
        mod = ParamMod.ensure(self.param_modifiers[branch])
        keys = mod.param_keys
        if keys is None:
            keys = [name for name, _ in module.named_parameters(recurse=False)]
        return mod, keys

    def has_bias(self, module: nn.Module, branch: int) -> bool:
        """Whether branch ``branch`` adds a bias (the module has one and the rule does not zero it)."""
        if getattr(module, "bias", None) is None:
            return False
        mod, keys = self._keys(module, branch)
        return not ("bias" in keys and zeroed(mod.zero_params, "bias"))

    def parameters_of(self, module: nn.Module, branch: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Modified ``(weight, bias)`` of ``module`` for branch ``branch``; ``bias`` is None when zeroed or absent."""
        mod, keys = self._keys(module, branch)
        modifier = zero_wrap(mod.zero_params)(mod.modifier)
        values = {}
        for name in ("weight", "bias"):
            param = getattr(module, name, None)
            if param is None or (name == "bias" and not self.has_bias(module, branch)):
                values[name] = None
            elif name in keys:
                values[name] = self.cache.get(module, (branch, name), param,
                                              lambda param=param, name=name: modifier(param.data, name))
            else:
                values[name] = param
        return values["weight"], values["bias"]

    def backward(self, module, grad_input, grad_output):
        """zennit's ``BasicHook.backward``, with cached parameters and without the work that yields zeros."""
        if not functional(module):
            return BasicHook.backward(self, module, grad_input, grad_output)
        upper = grad_output[0]
        if self.fused and not upper.requires_grad:
            fused = self._fused(module, upper)
            if fused is not None:
                return grad_input_like(self._complete(module, upper, *fused), grad_input)
        stored = self.stored_tensors["input"][0]
        # zennit clones the input (its modifiers could work in place; zennit's own rules do not)
        original = stored.clone() if upper.requires_grad else stored.detach()
        branches = list(zip(self.input_modifiers, self.output_modifiers))
        inputs = [in_mod(original).requires_grad_() for in_mod, _ in branches]
        several = len(branches) > 1  # a single branch is computed as it is
        dead = [several and self.products and not self.has_bias(module, index) and not bool(input.any())
                for index, input in enumerate(inputs)]
        params = [None if skip else self.parameters_of(module, index) for index, skip in enumerate(dead)]
        with torch.enable_grad():
            outputs = [out_mod(torch.zeros_like(upper) if skip else affine_response(module, input, *param))
                       for (_, out_mod), param, input, skip in zip(branches, params, inputs, dead)]
            denominator = None
            if self._exact(module):
                denominator = sum(outputs)
                ratio, empty = divide_exact(upper, denominator)
                grad_outputs = [ratio] * len(outputs)
                denominator = denominator.detach() if empty is None else \
                    torch.where(empty, torch.zeros_like(ratio), denominator.detach())
            else:
                grad_outputs = self.gradient_mapper(upper, outputs)
                grad_outputs = [grad_outputs] if isinstance(grad_outputs, torch.Tensor) else list(grad_outputs)
            memo: dict = {}
            wanted = [index for index, grad in enumerate(grad_outputs)
                      if not several or self._needed(grad, dead[index], memo)]
            for index in wanted:
                if dead[index]:  # a non-finite gradient through a zero input: computed as zennit does
                    weight, bias = self.parameters_of(module, index)
                    outputs[index] = branches[index][1](affine_response(module, inputs[index], weight, bias))
            pulled = torch.autograd.grad([outputs[i] for i in wanted], [inputs[i] for i in wanted],
                                         grad_outputs=[grad_outputs[i] for i in wanted],
                                         create_graph=upper.requires_grad) if wanted else ()
        gradients = dict(zip(wanted, pulled))
        gradients = [gradients[i] if i in gradients else torch.zeros_like(inputs[i]) for i in range(len(inputs))]
        relevance = self.reducer(inputs, gradients)
        if self.fallback:
            if denominator is None:
                denominator = sum(output.detach() for output in outputs)
            relevance = self._complete(module, upper, relevance, denominator)
        return grad_input_like(relevance, grad_input)

    def _exact(self, module: nn.Module) -> bool:
        """z+ with the fallback and without biases: the denominator is non-negative, divide exactly."""
        return self.fallback and not self.has_bias(module, 0) and not self.has_bias(module, 1)

    def _complete(self, module: nn.Module, upper: torch.Tensor, relevance: torch.Tensor,
                  denominator: torch.Tensor) -> torch.Tensor:
        """``relevance`` plus the w^2 share of z+'s empty neurons (with ``fallback``)."""
        if not self.fallback:
            return relevance
        extra = spread_empty(module, relevance, upper, denominator, self.cache, self.stabilizer or 1e-6)
        return relevance if extra is None else relevance + extra

    def _fused(self, module: nn.Module, upper: torch.Tensor) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """Epsilon, or z+ on a non-negative input without biases: ``x * W'(R / stab(W'^T x + b))`` and the
        denominator ``W'^T x + b``; None where this does not apply (z+ with a negative input or a bias)."""
        x = self.stored_tensors["input"][0].detach()
        if isinstance(self.rule, ZPlus) and (self.has_bias(module, 0) or self.has_bias(module, 1)
                                             or bool(x.amin() < 0)):
            return None
        weight, bias = self.parameters_of(module, 0)
        denominator = affine_response(module, x, weight, bias)
        if self._exact(module):
            ratio, empty = divide_exact(upper, denominator)
            if empty is not None:
                denominator = denominator.masked_fill_(empty, 0.0)
        else:
            ratio = upper / stabilize_fast(denominator, self.stabilizer)
        return affine_vjp(module, x, weight, ratio).mul_(x), denominator

    @staticmethod
    def _needed(grad: torch.Tensor, dead: bool, memo: dict) -> bool:
        """Whether a branch's pull-back can differ from zero (or, through a zero input, carry a NaN);
        ``memo`` keeps the checks of gradients shared by several branches."""
        key = id(grad)
        if (key, "any") not in memo:
            memo[key, "any"] = bool(grad.any())
        if not memo[key, "any"] or not dead:
            return memo[key, "any"]
        if (key, "finite") not in memo:
            memo[key, "finite"] = bool(torch.isfinite(grad.amax()) & torch.isfinite(grad.amin()))
        return not memo[key, "finite"]
