"""A name -> declaration table, the one mechanism behind the method, metric, model and dataset registries."""
from __future__ import annotations

import importlib
from typing import Generic, TypeVar

__all__ = ["Registry", "resolve"]

Spec = TypeVar("Spec")


class Registry(dict, Generic[Spec]):
    """Declarations by name, in registration order (a ``dict`` with a checked :meth:`register`).

    Parameters
    ----------
    kind : str
        What is registered (``method``, ``model``, ...), for messages.
    """

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, spec: Spec) -> Spec:
        """Add ``spec`` under ``spec.name``; a name can be registered once (``ValueError``)."""
        if spec.name in self:
            raise ValueError(f"{self.kind} {spec.name!r} is registered twice")
        self[spec.name] = spec
        return spec

    def find(self, name: str) -> Spec:
        """The declaration of ``name``; ``ValueError`` (one line, with the choices) if unknown."""
        try:
            return self[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self)}") from None


def resolve(target):
    """The object a ``"package.module:attribute"`` string names (imported on first use); other values as they are.

    Declarations name heavy implementations this way, so that reading the declarations imports no torch.

    Raises
    ------
    ValueError
        A string that is not ``module:attribute``, or names nothing importable (one line).
    """
    if not isinstance(target, str):
        return target
    module_name, colon, attribute = target.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"{target!r} is not a 'package.module:attribute' target")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"{target!r}: module {module_name} has no {attribute!r}") from None
