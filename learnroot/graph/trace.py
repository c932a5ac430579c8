"""Symbolic tracing of a model with ``torch.fx``, and what the graph says about each node.

The tracer keeps as leaves (``call_module`` nodes) the modules ``torch.fx`` keeps by default (those
of ``torch.nn``, except containers) and the layers whose rules this project defines
(:mod:`learnroot.layers`, ``zennit.layer.Sum``); it traces through everything else, so that the
additions, concatenations and products written in a model's ``forward`` appear as graph nodes.

A node *carries relevance* when its value depends on the model input through tensor operations
(not through sizes: ``x.size(1) // 2`` carries none) and is not cut off by ``detach``. A node is *on
the path to the logits* when it carries relevance and the output depends on it.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch.fx as fx
from torch import nn
from zennit.layer import Sum

from ..layers import ChannelsLastFlatten, Concat, Gate, Mean, PadShortcut, Scale, SumPool2d
from .ops import canonical_name, category

__all__ = ["LEAVES", "TraceFailed", "Tracer", "trace", "owner", "op_name", "carrying", "on_path", "users_after"]

#: Project layer types kept as leaves (their rules are known).
LEAVES = (Sum, SumPool2d, PadShortcut, ChannelsLastFlatten, Concat, Gate, Mean, Scale)


class TraceFailed(Exception):
    """``torch.fx`` cannot follow the model (data-dependent control flow, ...); the message says why."""


def inherits_torch_forward(module: nn.Module) -> bool:
    """Whether ``module`` is a subclass of a ``torch.nn`` layer that keeps that layer's ``forward`` (e.g. a
    ``Conv2d`` subclass that only sets its weights): it computes what the ``torch.nn`` layer does."""
    forward = type(module).forward
    return any(base is not nn.Module and base.__module__.startswith("torch.nn.modules.")
               and not base.__module__.startswith("torch.nn.modules.container") and base.__dict__.get("forward") is forward
               for base in type(module).__mro__[1:])


class Tracer(fx.Tracer):
    """``torch.fx.Tracer`` that also keeps the project's layers (:data:`LEAVES`) and subclasses of ``torch.nn``
    layers that keep their ``forward`` as leaves."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        """Project layers, ``torch.nn`` modules (but not containers) and their forward-keeping subclasses."""
        return (isinstance(module, LEAVES) or inherits_torch_forward(module)
                or super().is_leaf_module(module, qualified_name))


def trace(model: nn.Module) -> fx.GraphModule:
    """The ``GraphModule`` of ``model`` (which it shares submodules with).

    Raises
    ------
    TraceFailed
        Tracing failed; the message is one line naming the reason.
    """
    try:
        graph = Tracer().trace(model)
    except Exception as error:  # noqa: BLE001 - fx raises many types (TraceError, TypeError, AttributeError, ...)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise TraceFailed(f"{type(error).__name__}: {first}"[:200]) from None
    return fx.GraphModule(model, graph, class_name=type(model).__name__)


def owner(node: fx.Node) -> str:
    """The name of the innermost module whose ``forward`` made the node ('' for the model's own)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    entry = list(stack.values())[-1]
    name = entry[0] if isinstance(entry, tuple) else str(entry)
    if node.op == "call_module" and name == node.target:  # a leaf: its caller owns the call
        entries = list(stack.values())
        name = entries[-2][0] if len(entries) > 1 else ""
    return name


def op_name(node: fx.Node) -> str:
    """The canonical name of a ``call_function`` / ``call_method`` node (:func:`~learnroot.graph.ops.canonical_name`)."""
    return canonical_name(node.target)


def _inputs(node: fx.Node) -> list:
    return list(node.all_input_nodes)


def carrying(graph: fx.Graph) -> set:
    """Nodes whose value depends on the input through tensor operations (and not through ``detach``)."""
    result: set = set()
    for node in graph.nodes:
        if node.op == "placeholder":
            result.add(node)
        elif node.op in ("call_function", "call_method"):
            kind = category(op_name(node))
            if kind in ("meta", "cut"):
                continue
            if any(arg in result for arg in _inputs(node)):
                result.add(node)
        elif node.op == "call_module":
            if any(arg in result for arg in _inputs(node)):
                result.add(node)
        elif node.op == "output":
            if any(arg in result for arg in _inputs(node)):
                result.add(node)
    return result


def on_path(graph: fx.Graph, carried: Optional[set] = None) -> set:
    """Nodes that carry relevance and that the output depends on (through carrying nodes)."""
    carried = carrying(graph) if carried is None else carried
    outputs = [node for node in graph.nodes if node.op == "output"]
    seen: set = set()
    stack = [arg for node in outputs for arg in _inputs(node) if arg in carried]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        stack.extend(arg for arg in _inputs(node) if arg in carried and arg not in seen)
    return seen


def users_after(node: fx.Node, after: fx.Node) -> Iterable[fx.Node]:
    """Users of ``node`` that come after ``after`` in the graph's order (readers of an in-place result)."""
    order = {item: index for index, item in enumerate(node.graph.nodes)}
    return [user for user in node.users if order[user] > order[after]]
