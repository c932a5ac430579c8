"""RuleBook: the rules a method's declaration asks for, made as fast or as raw zennit rules.

A method declaration says *which* rule each layer gets (``book.zplus()``, ``book.epsilon(0.25)``,
...); the book decides *how* it is computed: by :class:`~learnroot.rules.FastRule` (cached modified
weights, dead branches skipped; the attributor's default) or by plain zennit (``fast=False``: the
benchmark's reference, "what a zennit user would run"). Both give the same relevance (tested),
except where z+ has empty neurons (:mod:`learnroot.rules.empty`): plain zennit drops their relevance.
"""
from __future__ import annotations

from typing import Optional

import torch
from zennit.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, ZPlus

from ..groups import RootOptOptions
from ..rules import FastRule, LayerBox, LearnedRoot, RootLog

__all__ = ["RuleBook"]


class RuleBook:
    """Rule factory bound to one method's options.

    Parameters
    ----------
    method : MethodOptions
        ``epsilon``, ``gamma``, ``stabilizer``, ``bias``, ``pixel_rule``, ``montavon_split``.
    root_opt : RootOptOptions, optional
        Learned-root options (for :meth:`learned`).
    log : RootLog, optional
        Shared by the learned-root rules of one attributor.
    fast : bool
        Wrap zennit's rules in :class:`~learnroot.rules.FastRule` (default) or return them as they are.
    """

    def __init__(self, method, root_opt: Optional[RootOptOptions] = None,
                 log: Optional[RootLog] = None, fast: bool = True):
        self.method = method
        self.root_opt = RootOptOptions() if root_opt is None else root_opt
        self.log = log
        self.fast = fast

    @property
    def zero_params(self) -> Optional[list]:
        """``['bias']`` unless ``method.bias``: biases are left out of the redistribution."""
        return None if self.method.bias else ["bias"]

    def _wrap(self, rule, stabilizer: Optional[float] = None):
        return FastRule(rule, stabilizer=stabilizer) if self.fast else rule

    def epsilon(self, value: float):
        """LRP-epsilon; ``value = 0`` is LRP-0, kept off zero denominators by the stabiliser."""
        epsilon = max(float(value), self.method.stabilizer)
        return self._wrap(Epsilon(epsilon=epsilon, zero_params=self.zero_params), epsilon)

    def zplus(self):
        """z+ (w+ on positive inputs, w- on negative ones); with ``method.zplus_fallback=wsquare`` (fast rules
        only) the relevance of neurons without any positive contribution goes by w^2 (:mod:`learnroot.rules.empty`)."""
        stabilizer = self.method.stabilizer
        rule = ZPlus(stabilizer=stabilizer, zero_params=self.zero_params)
        return FastRule(rule, stabilizer=stabilizer, fallback=self.fallback) if self.fast else rule

    @property
    def fallback(self) -> bool:
        """Whether z+'s empty neurons are redistributed by w^2 (``method.zplus_fallback``)."""
        return self.method.zplus_fallback == "wsquare"

    def gamma(self, gamma: Optional[float] = None):
        """LRP-gamma with ``method.gamma`` (or ``gamma``)."""
        value = self.method.gamma if gamma is None else gamma
        return self._wrap(Gamma(gamma=value, stabilizer=self.method.stabilizer, zero_params=self.zero_params))

    def alpha_beta(self):
        """LRP-alpha-beta with ``method.alpha`` and ``method.beta`` (``alpha - beta = 1``): positive and negative
        contributions (``x+ w+ + x- w-`` and ``x+ w- + x- w+``, each with its part of the bias) normalised
        separately, weighted ``alpha`` and ``-beta``."""
        return self._wrap(AlphaBeta(alpha=self.method.alpha, beta=self.method.beta, stabilizer=self.method.stabilizer,
                                    zero_params=self.zero_params))

    def wsquare(self):
        """w^2 (input independent)."""
        return self._wrap(WSquare(stabilizer=self.method.stabilizer, zero_params=self.zero_params))

    def flat(self):
        """Flat (uniform over the receptive field)."""
        return self._wrap(Flat(stabilizer=self.method.stabilizer, zero_params=self.zero_params))

    def zbox(self, box: tuple[torch.Tensor, torch.Tensor]):
        """zB with the box ``(low, high)`` of the layer input."""
        return self._wrap(ZBox(low=box[0], high=box[1], stabilizer=self.method.stabilizer,
                               zero_params=self.zero_params))

    def layer_box(self):
        """zB whose box is ``[min, max]`` of each sample's own layer input."""
        return LayerBox(stabilizer=self.method.stabilizer, zero_params=self.zero_params, fast=self.fast)

    def learned(self, layer, box=None, log: Optional[RootLog] = None) -> LearnedRoot:
        """The learned root with one layer type's settings (``box``: the pixel layer's; ``log``: instead of
        the book's)."""
        return LearnedRoot(layer, self.root_opt, box=box, log=self.log if log is None else log,
                           fallback=self.fallback)

    def pixel(self, box: tuple[torch.Tensor, torch.Tensor]):
        """The classic pixel-layer rule chosen by ``method.pixel_rule``."""
        name = self.method.pixel_rule
        rules = {"zb": lambda: self.zbox(box), "zplus": self.zplus, "wsquare": self.wsquare, "flat": self.flat,
                 "epsilon": lambda: self.epsilon(self.method.epsilon), "gamma": self.gamma,
                 "alpha_beta": self.alpha_beta}
        if name not in rules:
            raise ValueError(f"unknown method.pixel_rule {name!r}; choose one of {', '.join(rules)}")
        return rules[name]()
