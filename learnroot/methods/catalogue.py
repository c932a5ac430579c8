"""The declarations of the CNN methods: which rule each layer gets, or which gradient is taken.

==================  =====================================  ==========================
method              hidden Linear/Conv layers              pixel layer (default)
==================  =====================================  ==========================
lrp_0               LRP-0 (epsilon = stabiliser)           LRP-0 (``epsilon`` 0)
lrp_epsilon         LRP-epsilon (``epsilon``)              zB
lrp_gamma           LRP-gamma (``gamma``)                  zB
lrp_alpha_beta      LRP-alpha-beta (``alpha``, ``beta``)   zB
dtd_zplus           z+                                     zB
dtd_zb              zB, box = [min, max] of layer input    zB
dtd_ww              w^2                                    zB
dtd_montavon        gamma / epsilon / LRP-0 by depth       zB
ours                learned root (``root_opt.layers``),    zB, or the learned root in
                    z+ on the other layers                 the pixel box
==================  =====================================  ==========================

Every method gives the average/sum pooling layers the rule ``method.pool_rule`` (default: proportional to
the inputs), residual sums the proportional rule, and the other layers their generic rules
(:mod:`learnroot.rules.layers`).

Gradient methods differentiate the target logit: ``gradient``, ``gradient_x_input`` and
``integrated_gradients`` (right Riemann sum from the all-zero baseline, ``ig_steps`` points).
"""
from __future__ import annotations

from typing import List

from ..lazy import nn, torch
from ..params import Constraint, Param
from .registry import Method, register

#: Rules of the pixel layer (``method.pixel_rule``).
PIXEL_RULES = ("zb", "zplus", "wsquare", "flat", "epsilon", "gamma", "alpha_beta")


def _split(value) -> str | None:
    ok = len(value) == 2 and 0.0 <= value[0] <= value[1] <= 1.0
    return None if ok else "must be two fractions 0 <= a <= b <= 1"


def _alpha_minus_beta(options) -> str | None:
    if abs(options.alpha - options.beta - 1.0) > 1e-12:
        return f"method.alpha and method.beta must have alpha - beta = 1, got alpha={options.alpha}, beta={options.beta}"
    return None


PIXEL_RULE = Param("pixel_rule", str, "zb", "rule of the pixel (first affine) layer", choices=PIXEL_RULES)
STABILIZER = Param("stabilizer", float, 1e-6, "small constant keeping denominators away from zero", above=0)
BIAS = Param("bias", bool, False, "include biases in the redistribution (DTD leaves them out; docs/METHOD.md)")
EPSILON = Param("epsilon", float, 0.25, "LRP-epsilon stabiliser (paper: 0.25)", min=0)
GAMMA = Param("gamma", float, 0.5, "LRP-gamma weight of the positive contributions (paper: 0.5)", min=0)
ALPHA = Param("alpha", float, 2.0, "LRP-alpha-beta: weight of the positive contributions", min=0)
BETA = Param("beta", float, 1.0, "LRP-alpha-beta: weight of the negative contributions (alpha - beta = 1)", min=0)
#: The parameters of every rule method.
RULE_PARAMS = (
    PIXEL_RULE,
    Param("pool_rule", str, "norm", "rule of average and sum pooling: proportional to the inputs (norm), with "
          "epsilon added to the window sum, or equal shares (flat)", choices=("norm", "epsilon", "flat")),
    Param("zplus_fallback", str, "wsquare", "z+ and ours: relevance of neurons without a positive contribution "
          "goes by w^2, or is dropped (none, zennit's behaviour)", choices=("wsquare", "none")),
    STABILIZER,
    BIAS,
)
ALPHA_BETA = Constraint(("alpha", "beta"), _alpha_minus_beta)


def _same(rule):
    """``hidden`` factory giving every hidden layer ``rule(book)``."""
    return lambda book, hidden: {name: rule(book) for name, _ in hidden}


def montavon(book, hidden) -> dict:
    """Gamma on the lower, epsilon on the middle, LRP-0 on the upper layers and the dense head.

    Hidden layer ``i`` (0-based, forward order, ``n`` layers) is in the gamma block if
    ``i < round(split[0] * n)``, in the epsilon block if ``i < round(split[1] * n)``; dense layers
    always use LRP-0 (Montavon et al. 2019, "Layer-wise relevance propagation: an overview").
    """
    n = len(hidden)
    end_gamma, end_epsilon = (int(round(fraction * n)) for fraction in book.method.montavon_split)
    rules = {}
    for index, (name, module) in enumerate(hidden):
        if isinstance(module, nn.Linear) or index >= end_epsilon:
            rules[name] = book.epsilon(0.0)
        elif index < end_gamma:
            rules[name] = book.gamma()
        else:
            rules[name] = book.epsilon(book.method.epsilon)
    return rules


def learned_layers(root_opt, hidden) -> set:
    """Names of the hidden layers that get the learned root (``root_opt.layers`` and ``k``)."""
    if root_opt.layers == "all":
        return {name for name, _ in hidden}
    if root_opt.layers == "conv":
        return {name for name, module in hidden if not isinstance(module, nn.Linear)}
    if root_opt.layers == "dense":
        return {name for name, module in hidden if isinstance(module, nn.Linear)}
    if root_opt.layers == "first_k":  # the k layers nearest the output
        return {name for name, _ in hidden[len(hidden) - root_opt.k:]} if root_opt.k > 0 else set()
    raise ValueError(f"unknown root_opt.layers {root_opt.layers!r}")


def ours(book, hidden) -> dict:
    """The learned root on the selected layers (dense or conv settings by layer type), z+ elsewhere."""
    learned = learned_layers(book.root_opt, hidden)
    root = book.root_opt
    return {name: (book.learned(root.dense if isinstance(module, nn.Linear) else root.conv)
                   if name in learned else book.zplus())
            for name, module in hidden}


def _input_gradient(model, x, index):
    """``(d f_c / d x, logits)`` at ``x``."""
    inputs = x.detach().requires_grad_(True)
    logits = model(inputs)
    gradient, = torch.autograd.grad(logits.gather(1, index).sum(), inputs)
    return gradient, logits.detach()


def plain_gradient(model, x, index, options):
    """``d f_c / d x`` (and the logits at ``x``)."""
    return _input_gradient(model, x, index)


def gradient_times_input(model, x, index, options):
    """``x * d f_c / d x`` (and the logits at ``x``)."""
    gradient, logits = _input_gradient(model, x, index)
    return x.detach() * gradient, logits


def integrated_gradients(model, x, index, options):
    """``x * mean_k d f_c / d x (k x / m)``, ``k = 1..m``: right Riemann sum from the zero baseline (the
    last point is ``x`` itself, whose logits are returned)."""
    total = torch.zeros_like(x)
    for step in range(1, options.ig_steps + 1):
        gradient, logits = _input_gradient(model, x.detach() * (step / options.ig_steps), index)
        total = total + gradient
    return x.detach() * total / options.ig_steps, logits


IG_STEPS = Param("ig_steps", int, 32, "integrated gradients: interpolation steps", min=1)
MONTAVON_SPLIT = Param("montavon_split", List[float], [0.33, 0.67], "dtd_montavon: fractions of depth where the "
                       "gamma block and the epsilon block end", check=_split)

register(Method("gradient", "gradient", "input gradient of the target logit", gradient=plain_gradient))
register(Method("gradient_x_input", "gradient", "gradient times input", gradient=gradient_times_input))
register(Method("integrated_gradients", "gradient", "integrated gradients from the zero baseline",
                gradient=integrated_gradients, params=(IG_STEPS,)))
register(Method("lrp_0", "rule", "LRP-0 on every affine layer", hidden=_same(lambda book: book.epsilon(0.0)),
                pixel_rule="epsilon", params=RULE_PARAMS + (EPSILON,)))
register(Method("lrp_epsilon", "rule", "LRP-epsilon on the hidden layers, zB on the pixels",
                hidden=_same(lambda book: book.epsilon(book.method.epsilon)), pixel_rule="zb",
                params=RULE_PARAMS + (EPSILON,)))
register(Method("lrp_gamma", "rule", "LRP-gamma on the hidden layers, zB on the pixels",
                hidden=_same(lambda book: book.gamma()), pixel_rule="zb", params=RULE_PARAMS + (GAMMA,)))
register(Method("lrp_alpha_beta", "rule", "LRP-alpha-beta on the hidden layers, zB on the pixels",
                hidden=_same(lambda book: book.alpha_beta()), pixel_rule="zb", params=RULE_PARAMS + (ALPHA, BETA),
                constraints=(ALPHA_BETA,)))
register(Method("dtd_zplus", "rule", "DTD z+ on the hidden layers, zB on the pixels",
                hidden=_same(lambda book: book.zplus()), pixel_rule="zb", params=RULE_PARAMS))
register(Method("dtd_zb", "rule", "zB with each layer's own input range as box",
                hidden=_same(lambda book: book.layer_box()), pixel_rule="zb", params=RULE_PARAMS))
register(Method("dtd_ww", "rule", "w^2 on the hidden layers, zB on the pixels",
                hidden=_same(lambda book: book.wsquare()), pixel_rule="zb", params=RULE_PARAMS))
register(Method("dtd_montavon", "rule", "gamma / epsilon / LRP-0 by depth (Montavon et al. 2019)",
                hidden=montavon, pixel_rule="zb", params=RULE_PARAMS + (EPSILON, GAMMA, MONTAVON_SPLIT)))
register(Method("ours", "rule", "learned roots (root_opt) on the hidden layers, starting from z+",
                hidden=ours, pixel_rule="zb", params=RULE_PARAMS, uses_root_opt=True,
                vit_build="learnroot.transformers.methods:build"))
