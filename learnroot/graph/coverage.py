"""The coverage check: every operation on the path to the logits has a relevance rule, or the run stops.

A rule-based method explains a model only if every leaf module and every function or method call
through which relevance flows (:func:`~learnroot.graph.trace.on_path`) has a rule: a Linear/Conv
layer (the method's own rule), a layer with a generic rule (:func:`learnroot.rules.layers.generic_rule`),
a layer or call whose gradient is the conserving rule (reshapes, concatenations, max pooling,
padding, adding a constant), or something the rewrite made explicit. Anything else is listed in
one :class:`UnsupportedOperations` error, raised before any batch, with the operation's name in the
model, its type and a supported alternative; a map that would silently be wrong is never made.
Gradient methods need no rules and are not checked.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import torch.fx as fx
from torch import nn
from zennit.types import BatchNorm

from ..layers import ChannelsLastFlatten
from ..rules import AFFINE
from ..rules.layers import generic_rule
from .fold import foldable
from .ops import alternative, category, qualified_name
from .trace import op_name, owner

__all__ = ["Uncovered", "UnsupportedOperations", "PASS_THROUGH", "module_gap", "call_gap", "graph_gaps",
           "method_gaps", "refuse"]

#: Leaf modules whose gradient is their conserving rule (they move or pad values): no hook needed.
PASS_THROUGH = (nn.Flatten, nn.Unflatten, ChannelsLastFlatten, nn.Identity, nn.ChannelShuffle,
                nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
                nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d, nn.ReplicationPad1d,
                nn.ReplicationPad2d, nn.ReplicationPad3d, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


@dataclass(frozen=True)
class Uncovered:
    """One operation without a rule.

    Attributes
    ----------
    where : str
        The module's name in the model, or for a call the module whose ``forward`` makes it (``''``:
        the model's own ``forward``).
    what : str
        Module type (``MultiheadAttention``) or call (``torch.erf``).
    why : str
        Why it has no rule (may be empty).
    instead : str
        A supported alternative.
    call : bool
        A function/method call (``what at where``) rather than a module (``where (what)``).
    """

    where: str
    what: str
    why: str
    instead: str
    call: bool = False


class UnsupportedOperations(ValueError):
    """A rule-based method cannot explain the model: one line listing each operation without a rule.

    Parameters
    ----------
    method : str
        The method's name.
    items : list of Uncovered
    note : str
        Appended after the list (e.g. why the hook fallback was used).
    """

    def __init__(self, method: str, items: Iterable[Uncovered], note: str = ""):
        self.method = method
        self.items = list(items)
        groups: dict = {}
        for item in self.items:
            groups.setdefault((item.what, item.why, item.instead, item.call), []).append(item.where or "the model")
        parts = []
        for (what, why, instead, call), places in groups.items():
            detail = "; ".join(text for text in (why, f"supported: {instead}") if text)
            places = list(dict.fromkeys(places))
            if call:
                parts.append(f"{what} at {', '.join(places)} ({detail})")
            else:
                parts.append(f"{', '.join(places)} ({what}; {detail})")
        message = f"model has operations without a relevance rule for {method}: {', '.join(parts)}"
        super().__init__(message + (f" [{note}]" if note else ""))


def module_gap(name: str, module: nn.Module) -> Optional[Uncovered]:
    """The gap of a leaf module on the path (None when it has a rule), whatever the method."""
    kind = type(module).__name__
    if isinstance(module, BatchNorm):
        if foldable(module):
            return None
        return Uncovered(name, kind, "uses the batch's statistics (train mode or no running statistics)",
                         alternative("BatchNorm"))
    if isinstance(module, AFFINE) or isinstance(module, PASS_THROUGH):
        return None
    if generic_rule(module, 1e-6) is not None:
        return None
    return Uncovered(name, kind, "no relevance rule", alternative(kind))


def call_gap(where: str, name: str, what: str, operands_on_path: tuple) -> Optional[Uncovered]:
    """The gap of a call left in the graph on the path (None when its gradient is its rule).

    Parameters
    ----------
    where : str
        The owner module's name.
    name : str
        Canonical name (:func:`~learnroot.graph.ops.canonical_name`).
    what : str
        Qualified name for the message.
    operands_on_path : tuple of bool
        For each of the first two operands, whether it carries relevance.
    """
    kind = category(name)
    if kind in ("reshape", "meta", "identity", "cut"):
        return None
    if kind in ("add", "sub") and len(operands_on_path) >= 2 and operands_on_path[0] and not operands_on_path[1]:
        return None  # x + c, x - c: a bias, passed on unchanged
    if kind == "add" and len(operands_on_path) >= 2 and operands_on_path[1] and not operands_on_path[0]:
        return None  # c + x
    reasons = {
        "add": "a sum whose form the rewrite does not know (alpha, out=)",
        "sub": "a difference of two signals, or a constant minus a signal (relevance would change sign)",
        "rsub": "a constant minus a signal (relevance would change sign)",
        "mul": "a product of two signals (neither is a sigmoid/hardsigmoid gate)",
        "div": "a division by a signal",
        "identity": "dropout in train mode",
        "reduce": "a reduction over the batch dimension or over computed dimensions",
        "activation": "an activation with computed arguments",
        "pool": "a pooling with computed arguments",
        "cat": "a concatenation of a computed list",
    }
    return Uncovered(where, what, reasons.get(kind, "no relevance rule"), alternative(name), call=True)


def graph_gaps(gm: fx.GraphModule, path: set, names: dict) -> list[Uncovered]:
    """The gaps of a canonized graph (whatever the method): modules and calls on the path without a rule.

    Parameters
    ----------
    gm : torch.fx.GraphModule
    path : set of torch.fx.Node
        The nodes on the path to the logits.
    names : dict
        Graph module name -> name shown to users.
    """
    gaps = []
    for node in gm.graph.nodes:
        if node.op == "output":
            if not isinstance(node.args[0], fx.Node):
                gaps.append(Uncovered("", "output", "the model returns a container, not one logits tensor",
                                      "a model whose forward returns the logits", call=True))
            continue
        if node not in path:
            continue
        if node.op == "call_module":
            gap = module_gap(names.get(node.target, node.target), gm.get_submodule(node.target))
        elif node.op in ("call_function", "call_method"):
            operands = tuple(isinstance(arg, fx.Node) and arg in path for arg in node.args[:2])
            gap = call_gap(owner(node), op_name(node), qualified_name(node.target, node.op == "call_method"),
                           operands)
        else:
            gap = None
        if gap is not None:
            gaps.append(gap)
    return gaps


def method_gaps(modules: Iterable[tuple[str, nn.Module]], method, learned: bool) -> list[Uncovered]:
    """The gaps that depend on the method, among the leaf modules on the path.

    - ``method.bias=true``: a BatchNorm that stays in the graph (no affine layer could absorb it) would
      have its shift dropped by the pass rule.
    - the learned root (``learned``): a Conv that pads with something other than zeros.
    """
    gaps = []
    for name, module in modules:
        if getattr(method, "bias", False) and isinstance(module, BatchNorm):
            gaps.append(Uncovered(name, type(module).__name__, "not next to a Linear/Conv layer that could absorb it; "
                                  "its shift would be dropped with method.bias=true",
                                  "method.bias=false, or BatchNorm right after a Linear/Conv layer"))
        if learned and isinstance(module, AFFINE) and getattr(module, "padding_mode", "zeros") != "zeros":
            gaps.append(Uncovered(name, type(module).__name__, f"padding_mode={module.padding_mode!r}",
                                  "padding_mode='zeros' (the learned root needs it)"))
    return gaps


def refuse(method: str, gaps: list, note: str = "") -> None:
    """Raise :class:`UnsupportedOperations` if there are gaps."""
    if gaps:
        raise UnsupportedOperations(method, gaps, note)
