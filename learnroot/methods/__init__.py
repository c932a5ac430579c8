"""Attribution methods: the registry (:mod:`.registry`), the declarations of the CNN methods
(:mod:`.catalogue`) and of the vision-transformer methods (:mod:`.transformer_methods`), and the
rule factory (:mod:`.rulebook`, imported by the attributor; it needs torch).

``learnroot.methods.REGISTRY`` maps every method name to its :class:`Method` declaration; use
:func:`learnroot.attribution.make_attributor` to run one. Importing this package imports no torch:
a new method's module registers itself here (one import line below, in registration order).
"""
from __future__ import annotations

from ..params import check_options
from . import catalogue  # noqa: F401 - registers the CNN methods
from . import transformer_methods  # noqa: F401 - registers the ViT methods
from .registry import ARCHITECTURES, COMMON_PARAMS, KINDS, OUTPUTS, REGISTRY, Method, get, names, register

__all__ = ["KINDS", "ARCHITECTURES", "COMMON_PARAMS", "OUTPUTS", "REGISTRY", "Method", "get", "names", "register",
           "validate"]


def validate(method, root_opt) -> None:
    """Raise ``ValueError`` (one line) on an unknown method or a value its declarations do not allow.

    Science code called without the CLI runs the same checks as the configuration does: every
    declared parameter of the ``method`` and ``root_opt`` groups (:func:`learnroot.params.check_options`).

    Parameters
    ----------
    method : MethodOptions
    root_opt : RootOptOptions
    """
    get(method.name)
    check_options(method, "method.")
    check_options(root_opt, "root_opt.")
