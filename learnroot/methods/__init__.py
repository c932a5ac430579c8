"""Attribution methods: the registry (:mod:`.registry`), the declarations of the CNN methods
(:mod:`.catalogue`) and of the vision-transformer methods (:mod:`.transformer_methods`), and the
rule factory (:mod:`.rulebook`, imported by the attributor; it needs torch).

``learnroot.methods.REGISTRY`` maps every method name to its :class:`Method` declaration; use
:func:`learnroot.attribution.make_attributor` to run one. Importing this package imports no torch and
registers every method: the CNN methods (:mod:`.catalogue`) first, then every other module of the package
in alphabetical order, so that a new method's module registers itself without an import line here.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..params import check_options
from . import catalogue  # noqa: F401 - registers the CNN methods first
from .registry import ARCHITECTURES, COMMON_PARAMS, KINDS, OUTPUTS, REGISTRY, Method, get, names, register

#: Modules of this package that declare no method.
_INFRASTRUCTURE = {"catalogue", "registry", "rulebook"}
for _module in sorted(info.name for info in pkgutil.iter_modules(__path__)):
    if _module not in _INFRASTRUCTURE:
        importlib.import_module(f"{__name__}.{_module}")

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
