"""Attribution methods: the registry (:mod:`.registry`), the rule factory (:mod:`.rulebook`) and the
declarations of the CNN methods (:mod:`.catalogue`).

``learnroot.methods.REGISTRY`` maps every method name to its :class:`Method` declaration; use
:func:`learnroot.attribution.make_attributor` to run one.
"""
from __future__ import annotations

from ..options import OUTPUTS, MethodOptions, RootOptOptions, check_choice
from . import catalogue  # noqa: F401 - registers the CNN methods
from .registry import ARCHITECTURES, KINDS, REGISTRY, Method, attach, get, names, register
from .rulebook import RuleBook
from ..transformers import methods as _transformer_methods  # noqa: F401,E402 - registers the ViT methods

__all__ = ["KINDS", "ARCHITECTURES", "REGISTRY", "Method", "attach", "get", "names", "register", "RuleBook",
           "validate", "OUTPUTS"]


def validate(method: MethodOptions, root_opt: RootOptOptions) -> None:
    """Raise ``ValueError`` (one line) on an unknown method or a value outside its range.

    The same checks as :func:`learnroot.config.check_choices` for these two groups (both read
    :data:`learnroot.options.CHOICES`), for science code called without the CLI.
    """
    get(method.name)
    for key in ("pixel_rule", "pool_rule", "zplus_fallback", "output", "target", "attention"):
        check_choice(f"method.{key}", getattr(method, key))
    for key in ("weights", "layers", "pixel_layer"):
        check_choice(f"root_opt.{key}", getattr(root_opt, key))
    for kind in ("conv", "dense", "pixel"):
        check_choice(f"root_opt.{kind}.loss", getattr(root_opt, kind).loss)
    split = list(method.montavon_split)
    if len(split) != 2 or not 0.0 <= split[0] <= split[1] <= 1.0:
        raise ValueError(f"method.montavon_split must be two fractions 0 <= a <= b <= 1, got {split}")
    if method.alpha < 0 or method.beta < 0 or abs(method.alpha - method.beta - 1.0) > 1e-12:
        raise ValueError(f"method.alpha and method.beta must be >= 0 with alpha - beta = 1, "
                         f"got alpha={method.alpha}, beta={method.beta}")
    if method.ig_steps < 1:
        raise ValueError(f"method.ig_steps must be >= 1, got {method.ig_steps}")
    if root_opt.k < 0:
        raise ValueError(f"root_opt.k must be >= 0, got {root_opt.k}")
    for kind in ("conv", "dense", "pixel"):
        layer = getattr(root_opt, kind)
        if layer.steps < 0 or layer.clip < 0:
            raise ValueError(f"root_opt.{kind}: steps and clip must be >= 0")
