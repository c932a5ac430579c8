"""Canonize a model for the rule-based methods: trace, rewrite, and say what has no rule.

:func:`canonize` turns a (private) model into an equivalent one whose every operation on the path
to the logits is a named layer with a relevance rule, or a call whose gradient is its rule:

1. trace it with ``torch.fx`` (:mod:`~learnroot.graph.trace`);
2. give every further call site of a shared module its own module (:func:`~learnroot.graph.rewrite.split_shared`);
3. drop identities and eval-mode dropouts (:func:`~learnroot.graph.rewrite.drop_identities`);
4. fold BatchNorms into the affine layer next to them (:func:`~learnroot.graph.fold.fold_batchnorms`);
5. make sums, concatenations, gates, functional activations, poolings and reductions explicit
   layers (:func:`~learnroot.graph.rewrite.explicit_ops`);
6. list the operations left on the path without a rule (:mod:`~learnroot.graph.coverage`).

A model ``torch.fx`` cannot trace is explained with module hooks (:mod:`~learnroot.graph.fallback`),
checked during each forward pass. The canonized model computes the original function (to the bit,
except where a BatchNorm is folded into the layer *after* it: float rounding).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from .coverage import graph_gaps, method_gaps, refuse
from .fallback import Watch, merge_in_module_order
from .fold import fold_batchnorms
from .rewrite import display_name, drop_identities, explicit_ops, split_shared
from .trace import TraceFailed, on_path, trace

__all__ = ["Canonized", "canonize"]


@dataclass
class Canonized:
    """A model rewritten for the rule-based methods.

    Attributes
    ----------
    model : torch.nn.Module
        The canonized model: a ``torch.fx.GraphModule`` (sharing the original's parameters except those
        of layers a BatchNorm was folded into), or the model itself with its BatchNorms merged (hooks).
    names : dict
        Module name in :attr:`model` -> name shown to users (the model's own module name; a new layer's
        name from its place in the graph). Names not listed show as they are.
    path : frozenset of str, optional
        Names (in :attr:`model`) of the leaf modules relevance flows through; ``None`` for the hook fallback.
    gaps : list of Uncovered
        Operations on the path without a rule, whatever the method.
    traced : bool
        Whether ``torch.fx`` traced the model (else: the hook fallback).
    reason : str
        Why the model could not be traced ('' when it was).
    folded : list of str
        BatchNorms folded (graph) or merged (hooks) into an affine layer.
    merged : list of (str, str)
        Hook fallback: ``(layer, batchnorm)`` pairs merged by module order.
    """

    model: nn.Module
    names: dict = field(default_factory=dict)
    path: Optional[frozenset] = None
    gaps: list = field(default_factory=list)
    traced: bool = True
    reason: str = ""
    folded: list = field(default_factory=list)
    merged: list = field(default_factory=list)

    def display(self, name: str) -> str:
        """The name users see for the module ``name`` of :attr:`model`."""
        return self.names.get(name, name)

    def on_path(self, name: str) -> bool:
        """Whether relevance flows through the module ``name`` (always True for the hook fallback)."""
        return self.path is None or name in self.path

    def leaves(self) -> list[tuple[str, nn.Module]]:
        """``(name, module)`` of the leaf modules on the path (every leaf for the hook fallback)."""
        return [(name, module) for name, module in self.model.named_modules()
                if name and not list(module.children()) and self.on_path(name)]

    def check(self, method: str, options=None, learned: bool = False) -> None:
        """Raise :class:`~learnroot.graph.coverage.UnsupportedOperations` (one line) if any operation on the path
        has no rule for the method (``options``: its :class:`~learnroot.options.MethodOptions`; ``learned``:
        it uses the learned root)."""
        gaps = list(self.gaps) + method_gaps(((self.display(name), module) for name, module in self.leaves()),
                                             options, learned)
        note = "" if self.traced else f"torch.fx cannot trace the model ({self.reason}); explained with module hooks"
        refuse(method, gaps, note)

    def watch(self, method: str):
        """A context for one forward pass that checks the hook fallback's exactness (see :class:`Watch`);
        does nothing for a traced model. ``with canonized.watch(m) as w: logits = ...; w.check(logits)``."""
        if self.traced:
            return _NoWatch()
        return Watch(self.model, self.merged, self.reason, method)


class _NoWatch(contextlib.nullcontext):
    def __enter__(self):
        return self

    def check(self, logits: torch.Tensor) -> None:
        """Nothing to check: the graph was checked when it was canonized."""


def _graph(model: nn.Module) -> Canonized:
    gm = trace(model)
    shared = split_shared(gm)
    drop_identities(gm)
    folded = fold_batchnorms(gm)
    explicit_ops(gm)
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    nodes = on_path(gm.graph)
    names = {node.target: display_name(node.target) for node in gm.graph.nodes if node.op == "call_module"}
    names.update({name: display_name(source) for name, source in shared.items()})
    path = frozenset(node.target for node in nodes if node.op == "call_module")
    return Canonized(model=gm, names=names, path=path, gaps=graph_gaps(gm, nodes, names), folded=folded)


def canonize(model: nn.Module) -> Canonized:
    """Canonize ``model`` in place (it must be a private copy in eval mode; see module docstring).

    Returns
    -------
    Canonized
        Its gaps are not raised here: :meth:`Canonized.check` does that for a method.
    """
    model.eval()
    try:
        return _graph(model)
    except TraceFailed as error:
        merged = merge_in_module_order(model)
        return Canonized(model=model, path=None, traced=False, reason=str(error),
                         folded=[batchnorm for _, batchnorm in merged], merged=merged)
