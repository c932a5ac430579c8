"""The method registry: one :class:`Method` declaration per attribution method.

A declaration says what the method is (kind, summary), how it explains (rules per layer, a
gradient function, or an attributor builder) and which parameters it reads, each declared once as a
:class:`~learnroot.params.Param`. Everything that needs the list of methods or their parameters
(the ``method`` group's options class, config checks, ``--help``, the check of
``conf/method/*.yaml``, the benchmark, the tests' parametrisation) reads it from here, so adding a
method is one module with its :func:`register` call, its yaml file and its reference test.

Declarations import no torch: an implementation that needs it either imports it lazily
(:mod:`learnroot.lazy`) or is named by a ``"module:function"`` string, resolved on first use.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from ..params import Constraint, Param
from ..registry import Registry, resolve

__all__ = ["KINDS", "ARCHITECTURES", "OUTPUTS", "COMMON_PARAMS", "Method", "register", "get", "names", "REGISTRY"]

#: Method kinds: ``gradient`` (differentiates the model), ``rule`` (zennit rules on CNN layers),
#: ``transformer`` (its own attributor, for vision transformers).
KINDS = ("gradient", "rule", "transformer")

#: Model architectures a method can explain, with their names in messages: ``cnn`` (any model the
#: zennit rules apply to) and ``vit`` (:class:`learnroot.transformers.vit.VisionTransformer`).
ARCHITECTURES = {"cnn": "CNNs", "vit": "vision transformers"}
_DEFAULT_ARCHITECTURES = {"gradient": ("cnn", "vit"), "rule": ("cnn",), "transformer": ("vit",)}

#: What relevance is put on the target output.
OUTPUTS = ("logit", "abs_logit", "one")

#: The parameters every method reads.
COMMON_PARAMS = (
    Param("name", str, "ours", "a registered method (learnroot.methods.REGISTRY)"),
    Param("output", str, "logit", "relevance put on the target output: the logit f_c, |f_c| or 1", choices=OUTPUTS),
    Param("target", str, "label", "which class to explain: the label or the prediction",
          choices=("label", "prediction")),
)

Implementation = Optional[Union[Callable, str]]


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
    gradient : callable or str, optional
        ``gradient`` methods: ``(model, x, index, options) -> (relevance, logits)``: the
        relevance of the logits ``index`` ``(B, 1)`` at ``x`` and the logits at ``x``.
    build : callable or str, optional
        ``transformer`` methods: ``(model, method_options, root_options, box) -> attributor``.
    vit_build : callable or str, optional
        A ``rule`` method that also explains vision transformers (``ours``): their attributor's
        builder, with ``build``'s signature.
    architectures : tuple of str
        The :data:`ARCHITECTURES` the method explains; by default ``gradient``: both, ``rule``: ``cnn``,
        ``transformer``: ``vit``; ``vit`` is added for a method with ``vit_build``.
    params : tuple of Param
        The parameters the method reads besides :data:`COMMON_PARAMS` (fields of
        :class:`~learnroot.options.MethodOptions`; a parameter several methods read is one ``Param``
        object that each of them lists).
    constraints : tuple of Constraint
        Conditions on several of its parameters.
    uses_root_opt : bool
        Whether the ``root_opt`` group changes the method's result.
    """

    name: str
    kind: str
    summary: str
    hidden: Optional[Callable] = None
    pixel_rule: Optional[str] = None
    gradient: Implementation = None
    build: Implementation = None
    params: tuple = field(default_factory=tuple)
    constraints: tuple = field(default_factory=tuple)
    uses_root_opt: bool = False
    vit_build: Implementation = None
    architectures: tuple = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name!r}: unknown kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        needed = {"rule": "hidden", "gradient": "gradient", "transformer": "build"}[self.kind]
        if getattr(self, needed) is None:
            raise ValueError(f"method {self.name!r} of kind {self.kind} needs {needed}=...")
        if not all(isinstance(param, Param) for param in self.params):
            raise ValueError(f"method {self.name!r}: params must be Param declarations")
        if not all(isinstance(item, Constraint) for item in self.constraints):
            raise ValueError(f"method {self.name!r}: constraints must be Constraint declarations")
        if not self.architectures:
            default = _DEFAULT_ARCHITECTURES[self.kind] + (("vit",) if self.vit_build is not None else ())
            object.__setattr__(self, "architectures", default)
        unknown = set(self.architectures) - set(ARCHITECTURES)
        if unknown:
            raise ValueError(f"method {self.name!r}: unknown architecture(s) {', '.join(sorted(unknown))}")

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of the parameters the method reads besides the common ones."""
        return tuple(param.name for param in self.params)

    def gradient_function(self) -> Callable:
        """The gradient function (a ``"module:function"`` string resolved)."""
        return resolve(self.gradient)

    def builder(self, architecture: str) -> Optional[Callable]:
        """The attributor builder for models of ``architecture``, or None for the rule/gradient
        attributor of :mod:`learnroot.attribution`."""
        if architecture == "vit" and self.kind != "gradient":
            return resolve(self.build if self.kind == "transformer" else self.vit_build)
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


def names(kind: Optional[str] = None, architecture: Optional[str] = None) -> tuple[str, ...]:
    """Registered method names (of one kind, for one architecture), in registration order."""
    return tuple(name for name, method in REGISTRY.items()
                 if (kind is None or method.kind == kind)
                 and (architecture is None or architecture in method.architectures))


def get(name: str) -> Method:
    """The declaration of ``name``; ``ValueError`` (one line, with the choices) if unknown."""
    return REGISTRY.find(name)
