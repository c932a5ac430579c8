"""Parameter declarations: every option of learnroot is declared once, as a :class:`Param`.

A ``Param`` holds an option's name, type, default, range or choices and a one-line help. Everything
else is derived from the declarations: the option dataclasses (:func:`options_class`, which Hydra
uses as the config schema), the checks of a composed configuration (:func:`check_options`, the only
place where a range or a choice is checked), the did-you-mean messages and ``learnroot-run --help``.
Conditions that tie several options together are declared next to them as a :class:`Constraint`.

This module imports neither torch nor Hydra.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

__all__ = ["Param", "Constraint", "options_class", "params_of", "constraints_of", "check_options", "describe",
           "merge_params", "describe_one"]


def _base(annotation) -> tuple[type, bool]:
    """``(type, nullable)`` of an annotation: ``Optional[int]`` -> ``(int, True)``, ``List[float]`` -> ``(list, False)``,
    ``Any`` -> ``(object, True)``."""
    if annotation is Any:
        return object, True
    origin = typing.get_origin(annotation)
    if origin is typing.Union:
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _base(args[0])[0], True
    if origin in (list, typing.List):
        return list, False
    if origin in (dict, typing.Dict):
        return dict, False
    return annotation, False


def _item_type(annotation):
    """The item type of ``List[X]`` (``None`` for other annotations)."""
    annotation = next((arg for arg in typing.get_args(annotation) if arg is not type(None)), annotation) \
        if typing.get_origin(annotation) is typing.Union else annotation
    if typing.get_origin(annotation) in (list, typing.List):
        args = typing.get_args(annotation)
        return args[0] if args else None
    return None


@dataclass(frozen=True, eq=False)
class Param:
    """Declaration of one option.

    Parameters
    ----------
    name : str
        The key within its group (``epsilon`` is ``method.epsilon``).
    type : type or typing annotation
        ``bool``, ``int``, ``float``, ``str``, ``Optional[...]``, ``List[float]``, ``Dict[str, Any]`` or an
        options dataclass (a nested group such as ``root_opt.conv``).
    default
        The default (copied for lists and dicts; an options dataclass is instantiated).
    help : str
        One line for ``--help`` and the generated docstrings.
    min, max : float, optional
        Inclusive bounds of a number (of every item of a list of numbers).
    above, below : float, optional
        Exclusive bounds (``above=0``: positive).
    choices : tuple, optional
        The allowed values.
    check : callable, optional
        ``value -> message or None``: a further condition on the value alone (e.g. two increasing
        fractions); the message completes ``"<key> must ..."`` style sentences on its own.
    """

    name: str
    type: Any
    default: Any
    help: str = ""
    min: Optional[float] = None
    max: Optional[float] = None
    above: Optional[float] = None
    below: Optional[float] = None
    choices: Optional[tuple] = None
    check: Optional[Callable[[Any], Optional[str]]] = None

    @property
    def nullable(self) -> bool:
        """Whether ``None`` (``null``) is allowed."""
        return _base(self.type)[1]

    @property
    def nested(self) -> bool:
        """Whether the parameter is a nested options dataclass (a sub-group)."""
        return dataclasses.is_dataclass(self.type)

    def field(self) -> dataclasses.Field:
        """The dataclass field of this parameter (the ``Param`` in its metadata)."""
        metadata = {"param": self}
        if self.nested:
            return field(default_factory=self.type, metadata=metadata)
        if isinstance(self.default, (list, dict)):
            default = self.default
            return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
        return field(default=self.default, metadata=metadata)

    def range_text(self) -> str:
        """The allowed values in words: ``one of: a, b``, ``>= 1``, ``in (0, 1]``, ``any``."""
        if self.choices is not None:
            return "one of: " + ", ".join(map(str, self.choices))
        low = f"[{self.min}" if self.min is not None else f"({self.above}" if self.above is not None else None
        high = f"{self.max}]" if self.max is not None else f"{self.below})" if self.below is not None else None
        if low and high:
            return f"in {low}, {high}"
        if low:
            return (">= " if low[0] == "[" else "> ") + low[1:]
        if high:
            return ("<= " if high[-1] == "]" else "< ") + high[:-1]
        return ""

    def validate(self, value, key: str) -> None:
        """Raise ``ValueError`` (one line naming ``key``) unless ``value`` is allowed."""
        if value is None:
            if self.nullable:
                return
            raise ValueError(f"{key} must not be null")
        base, _ = _base(self.type)
        if self.nested:
            check_options(value, key + ".")
            return
        if base is bool and not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{key}={value!r} is not one of: {', '.join(map(str, self.choices))}"
                             f"{_did_you_mean(value, self.choices)}")
        numbers = value if base is list else [value]
        if base in (int, float) or (base is list and _item_type(self.type) in (int, float)):
            for number in numbers:
                if isinstance(number, float) and not math.isfinite(number):
                    raise ValueError(f"{key} must be finite, got {value!r}")
                if not self._in_range(number):
                    what = "every item of " + key if base is list else key
                    raise ValueError(f"{what} must be {self.range_text()}, got {value!r}"
                                     + (" (or null)" if self.nullable else ""))
        if self.check is not None:
            message = self.check(value)
            if message:
                raise ValueError(f"{key} {message}, got {value!r}")

    def _in_range(self, number) -> bool:
        return not ((self.min is not None and number < self.min) or (self.max is not None and number > self.max)
                    or (self.above is not None and number <= self.above)
                    or (self.below is not None and number >= self.below))


@dataclass(frozen=True, eq=False)
class Constraint:
    """A condition on several options of one group.

    Parameters
    ----------
    keys : tuple of str
        The options it reads (for messages and ``--help``).
    check : callable
        ``options -> message or None``; the message is one line that names the keys.
    applies : callable, optional
        ``options -> bool``: checked only where this holds (e.g. only for one method).
    """

    keys: tuple
    check: Callable[[Any], Optional[str]]
    applies: Optional[Callable[[Any], bool]] = None


def _did_you_mean(value, candidates) -> str:
    import difflib
    match = difflib.get_close_matches(str(value), [str(item) for item in candidates], n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def merge_params(groups: Sequence[Sequence[Param]], owner: str) -> list[Param]:
    """The parameters of several declarations, each once, in first-declared order.

    Raises
    ------
    ValueError
        Two declarations declare parameters of one name that are not the same object (declare a shared
        parameter once and refer to it).
    """
    merged: dict[str, Param] = {}
    for params in groups:
        for param in params:
            known = merged.setdefault(param.name, param)
            if known is not param:
                raise ValueError(f"{owner}: parameter {param.name!r} is declared twice; declare it once and "
                                 "refer to the same Param")
    return list(merged.values())


def options_class(name: str, params: Sequence[Param], doc: str = "",
                  constraints: Sequence[Constraint] = (), module: str = "learnroot.options") -> type:
    """A dataclass with one field per parameter (its ``Param`` in the field's metadata).

    Parameters
    ----------
    name : str
        Class name (``MethodOptions``).
    params : sequence of Param
        The fields, in order.
    doc : str
        First lines of the docstring; an ``Attributes`` section is generated from the params' help.
    constraints : sequence of Constraint
        Kept on the class (``__constraints__``) for :func:`check_options`.
    module : str
        ``__module__`` of the class (for pickling and messages).
    """
    fields = [(param.name, param.type, param.field()) for param in params]
    cls = dataclasses.make_dataclass(name, fields)
    cls.__module__ = module
    cls.__constraints__ = tuple(constraints)
    lines = [doc.strip(), "", "Attributes", "----------"] if doc else ["Attributes", "----------"]
    for param in params:
        kind = getattr(param.type, "__name__", None) or str(param.type).replace("typing.", "")
        lines.append(f"{param.name} : {kind}")
        allowed = param.range_text()
        lines.append(f"    {param.help}" + (f" ({allowed})" if allowed else ""))
    cls.__doc__ = "\n".join(lines)
    return cls


def params_of(options) -> list[Param]:
    """The declared parameters of an options dataclass (class or instance), in field order."""
    return [item.metadata["param"] for item in dataclasses.fields(options) if "param" in item.metadata]


def constraints_of(options) -> tuple:
    """The :class:`Constraint` objects of an options dataclass."""
    return getattr(options, "__constraints__", ())


def check_options(options, prefix: str = "") -> None:
    """Check every declared parameter and constraint of ``options`` (nested groups too).

    Parameters
    ----------
    options : dataclass instance
        Made by :func:`options_class`.
    prefix : str
        Prepended to the keys in messages (``method.``).

    Raises
    ------
    ValueError
        One line naming the first key whose value is not allowed.
    """
    for param in params_of(options):
        param.validate(getattr(options, param.name), prefix + param.name)
    for constraint in constraints_of(options):
        if constraint.applies is None or constraint.applies(options):
            message = constraint.check(options)
            if message:
                raise ValueError(message)


def describe_one(param: Param) -> tuple[str, str]:
    """``(default as written in yaml, help with the allowed values)`` of one parameter."""
    allowed = param.range_text()
    default = "null" if param.default is None else str(param.default).replace("True", "true").replace(
        "False", "false")
    return default, param.help + (f" ({allowed})" if allowed else "")


def describe(options, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(key, default, help with the allowed values)`` for every parameter (nested ones flattened)."""
    rows = []
    for param in params_of(options):
        key = prefix + param.name
        if param.nested:
            rows += describe(param.type, key + ".")
        else:
            rows.append((key, *describe_one(param)))
    return rows
