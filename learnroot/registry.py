"""A name -> declaration table, the one mechanism behind the method, metric, model and dataset registries."""
from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["Registry"]

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
