"""The method registry: one :class:`Method` declaration per attribution method.

Everything that needs the list of methods (the config's choices, validation, the check of
``conf/method/*.yaml``, the benchmark's raw-zennit reference, the tests' parametrisation) reads it
from here, so adding a method is one :func:`register` call (in :mod:`learnroot.methods.catalogue`
or a module of its own), its yaml file and its reference test.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from ..registry import Registry

__all__ = ["KINDS", "Method", "register", "get", "names", "REGISTRY"]

#: Method kinds: ``gradient`` (differentiates the model), ``rule`` (zennit rules on CNN layers),
#: ``transformer`` (its own attributor, for vision transformers).
KINDS = ("gradient", "rule", "transformer")


@dataclass(frozen=True)
class Method:
    """Declaration of one attribution method.

    Attributes
    ----------
    name : str
        The ``method=`` choice (and ``conf/method/<name>.yaml``).
    kind : str
        One of :data:`KINDS`.
    summary : str
        One line for ``--help``, README and tables.
    hidden : callable, optional
        ``rule`` methods: ``(book, hidden) -> {layer name: rule}`` for the affine layers above the
        pixel layer, with ``book`` a :class:`~learnroot.methods.rulebook.RuleBook` (which makes fast
        or raw zennit rules) and ``hidden`` the ``(name, module)`` pairs in forward order.
    pixel_rule : str, optional
        ``rule`` methods: default rule of the pixel layer (``conf/method/<name>.yaml`` must agree).
    gradient : callable, optional
        ``gradient`` methods: ``(model, x, index, options) -> (relevance, logits)``: the
        relevance of the logits ``index`` ``(B, 1)`` at ``x`` and the logits at ``x``.
    build : callable, optional
        ``transformer`` methods: ``(model, method_options, root_options, box) -> attributor``.
    params : tuple of str
        The :class:`~learnroot.options.MethodOptions` fields the method reads (besides ``name``,
        ``output`` and ``target``, which every method reads).
    uses_root_opt : bool
        Whether the ``root_opt`` group changes the method's result.
    """

    name: str
    kind: str
    summary: str
    hidden: Optional[Callable] = None
    pixel_rule: Optional[str] = None
    gradient: Optional[Callable] = None
    build: Optional[Callable] = None
    params: tuple = field(default_factory=tuple)
    uses_root_opt: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name!r}: unknown kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        needed = {"rule": "hidden", "gradient": "gradient", "transformer": "build"}[self.kind]
        if getattr(self, needed) is None:
            raise ValueError(f"method {self.name!r} of kind {self.kind} needs {needed}=...")


#: name -> Method, in registration order.
REGISTRY: Registry[Method] = Registry("method")
register = REGISTRY.register


def names(kind: Optional[str] = None) -> tuple[str, ...]:
    """Registered method names (of one kind), in registration order."""
    return tuple(name for name, method in REGISTRY.items() if kind is None or method.kind == kind)


def get(name: str) -> Method:
    """The declaration of ``name``; ``ValueError`` (one line, with the choices) if unknown."""
    return REGISTRY.find(name)
