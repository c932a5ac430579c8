"""Modules imported on first use, so that declarations (methods, metrics) can be read without torch.

``from learnroot.lazy import torch, nn, F`` gives stand-ins for ``torch``, ``torch.nn`` and
``torch.nn.functional`` that import the real module the first time an attribute is read. Modules
that hold declarations (:mod:`learnroot.methods`, :mod:`learnroot.metrics`) use them, so that the
configuration is checked in a fraction of a second, before torch is imported
(``tests/test_layers.py`` checks that composing and checking a configuration imports no torch).
At module level such a module must not touch them (no ``@torch.no_grad()`` decorator, no
``torch.float32`` constant); inside functions they behave as the real modules.
"""
from __future__ import annotations

import importlib
import types

__all__ = ["LazyModule", "torch", "nn", "F"]


class LazyModule(types.ModuleType):
    """A stand-in for the module ``name``, imported when one of its attributes is first read.

    Parameters
    ----------
    name : str
        Dotted module name.
    """

    def __init__(self, name: str):
        super().__init__(name)
        self.__dict__["_lazy_target"] = name

    def __getattr__(self, attribute: str):
        module = importlib.import_module(self.__dict__["_lazy_target"])
        self.__dict__.update(module.__dict__)  # later reads are plain attribute reads
        return getattr(module, attribute)

    def __repr__(self) -> str:
        return f"<lazy module {self.__dict__['_lazy_target']!r}>"


torch = LazyModule("torch")
nn = LazyModule("torch.nn")
F = LazyModule("torch.nn.functional")
