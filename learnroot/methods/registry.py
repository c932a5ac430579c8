"""The method registry: one :class:`Method` declaration per attribution method.

Everything that needs the list of methods (the config's choices, validation, the check of
``conf/method/*.yaml``, the benchmark's raw-zennit reference, the tests' parametrisation) reads it
from here, so adding a method is one :func:`register` call (in :mod:`learnroot.methods.catalogue`
or a module of its own), its yaml file and its reference test.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Optional

from ..registry import Registry

__all__ = ["KINDS", "ARCHITECTURES", "Method", "register", "attach", "get", "names", "REGISTRY"]

#: Method kinds: ``gradient`` (differentiates the model), ``rule`` (zennit rules on CNN layers),
#: ``transformer`` (its own attributor, for vision transformers).
KINDS = ("gradient", "rule", "transformer")

#: Model architectures a method can explain, with their names in messages: ``cnn`` (any model the
#: zennit rules apply to) and ``vit`` (:class:`learnroot.transformers.vit.VisionTransformer`).
ARCHITECTURES = {"cnn": "CNNs", "vit": "vision transformers"}
_DEFAULT_ARCHITECTURES = {"gradient": ("cnn", "vit"), "rule": ("cnn",), "transformer": ("vit",)}


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
    vit_build : callable, optional
        A ``rule`` method that also explains vision transformers (``ours``): their attributor's
        builder, with ``build``'s signature (see :func:`attach`).
    architectures : tuple of str
        The :data:`ARCHITECTURES` the method explains; by default ``gradient``: both, ``rule``: ``cnn``,
        ``transformer``: ``vit``.
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
    vit_build: Optional[Callable] = None
    architectures: tuple = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name!r}: unknown kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        needed = {"rule": "hidden", "gradient": "gradient", "transformer": "build"}[self.kind]
        if getattr(self, needed) is None:
            raise ValueError(f"method {self.name!r} of kind {self.kind} needs {needed}=...")
        if not self.architectures:
            object.__setattr__(self, "architectures", _DEFAULT_ARCHITECTURES[self.kind])
        unknown = set(self.architectures) - set(ARCHITECTURES)
        if unknown:
            raise ValueError(f"method {self.name!r}: unknown architecture(s) {', '.join(sorted(unknown))}")

    def builder(self, architecture: str) -> Optional[Callable]:
        """The attributor builder for models of ``architecture``, or None for the rule/gradient
        attributor of :mod:`learnroot.attribution`."""
        if architecture == "vit" and self.kind != "gradient":
            return self.build if self.kind == "transformer" else self.vit_build
        return None

    def check(self, architecture: str, model: str = "") -> None:
        """``ValueError`` (one line, naming the methods that fit) unless the method explains ``architecture``."""
        if architecture in self.architectures:
            return
        fitting = ", ".join(names(architecture=architecture))
        subject = f"model {model} ({ARCHITECTURES[architecture][:-1]})" if model else ARCHITECTURES[architecture]
        raise ValueError(f"method {self.name} explains {' and '.join(ARCHITECTURES[a] for a in self.architectures)} "
                         f"only, not {subject}; methods for {ARCHITECTURES[architecture]}: {fitting}")


#: name -> Method, in registration order.
REGISTRY: Registry[Method] = Registry("method")
register = REGISTRY.register


def attach(name: str, architecture: str, build: Callable) -> Method:
    """Let the registered method ``name`` also explain ``architecture`` (``vit``) with ``build``
    (e.g. ``ours`` on vision transformers, declared in :mod:`learnroot.transformers.methods`)."""
    if architecture != "vit":
        raise ValueError(f"only vision-transformer attributors can be attached, not {architecture!r}")
    method = get(name)
    REGISTRY[name] = replace(method, vit_build=build,
                             architectures=tuple(dict.fromkeys(method.architectures + (architecture,))))
    return REGISTRY[name]


def names(kind: Optional[str] = None, architecture: Optional[str] = None) -> tuple[str, ...]:
    """Registered method names (of one kind, for one architecture), in registration order."""
    return tuple(name for name, method in REGISTRY.items()
                 if (kind is None or method.kind == kind)
                 and (architecture is None or architecture in method.architectures))


def get(name: str) -> Method:
    """The declaration of ``name``; ``ValueError`` (one line, with the choices) if unknown."""
    return REGISTRY.find(name)
