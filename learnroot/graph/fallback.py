"""The hook fallback for models ``torch.fx`` cannot trace (data-dependent control flow), used where it is exact.

Such a model is explained as it runs, with a rule hook on each leaf module (as learnroot did before
the graph canonizer): BatchNorms are merged into the Linear/Conv layer that precedes them in module
order (zennit's ``SequentialMergeBatchNorm``, as :class:`learnroot.canonizers.ExactMergeBatchNorm`),
and nothing written in a ``forward`` can be rewritten. That is exact only when every call made
outside the leaf modules passes relevance correctly by its own gradient (reshapes, concatenations,
adding a constant, ...: :func:`exact_call`) and each merged BatchNorm really reads the output of
the layer it was merged into.

:class:`Watch` checks both during every attribution's forward pass (the path a data-dependent
model takes can change from input to input): hooks on every module give the module stack, a
``TorchFunctionMode`` sees each call made outside the leaf modules, and after the forward pass the
autograd graph of the logits tells which of the calls and modules the relevance will flow through.
Any that has no exact rule stops the attribution with one
:class:`~learnroot.graph.coverage.UnsupportedOperations` line.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from zennit.core import collect_leaves
from zennit.types import BatchNorm

from ..canonizers import ExactMergeBatchNorm
from ..rules import AFFINE
from .coverage import Uncovered, UnsupportedOperations, module_gap
from .ops import alternative, canonical_name, category, qualified_name

__all__ = ["merge_in_module_order", "exact_call", "Watch"]


def merge_in_module_order(model: nn.Module) -> list[tuple[str, str]]:
    """Merge each BatchNorm into the Linear/Conv leaf before it in module order (in place; the BatchNorm
    becomes an exact identity). Returns the ``(layer, batchnorm)`` name pairs merged."""
    names = {id(module): name for name, module in model.named_modules()}
    pairs, last = [], None
    for leaf in collect_leaves(model):
        if isinstance(leaf, BatchNorm) and isinstance(last, AFFINE) and leaf.track_running_stats \
                and leaf.running_mean is not None:
            ExactMergeBatchNorm().register((last,), leaf)
            pairs.append((names[id(last)], names[id(leaf)]))
        last = leaf
    return pairs


def exact_call(name: str, args: tuple) -> bool:
    """Whether a call outside the leaf modules passes relevance correctly by its own gradient."""
    kind = category(name)
    if kind in ("reshape", "meta", "identity", "cut", "cat"):
        return True
    if kind in ("add", "sub"):
        signals = [isinstance(arg, torch.Tensor) and arg.requires_grad for arg in args[:2]]
        return len(signals) == 2 and signals[0] != signals[1] and (kind == "add" or signals[0])
    return False


class _Calls(TorchFunctionMode):
    """Records the calls made while no leaf module runs."""

    def __init__(self, watch: "Watch"):
        super().__init__()
        self.watch = watch

    def __torch_function__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        if self.watch.depth == 0 and isinstance(output, torch.Tensor) and output.grad_fn is not None:
            name = canonical_name(func)
            if not exact_call(name, args):
                self.watch.calls.append((self.watch.where(), qualified_name(func), name, output.grad_fn))
        return output


class Watch:
    """Checks one forward pass of a hook-explained model (see module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        The model (its BatchNorms merged by :func:`merge_in_module_order`).
    merged : list of (str, str)
        ``(layer, batchnorm)`` names merged.
    reason : str
        Why the model is explained with hooks (``torch.fx``'s error), for the message.
    method : str
        The method's name, for the message.

    Use ``with watch: logits = model(x)`` then ``watch.check(logits)``.
    """

    def __init__(self, model: nn.Module, merged: list, reason: str, method: str):
        self.model = model
        self.reason = reason
        self.method = method
        self.names = {id(module): name for name, module in model.named_modules()}
        self.leaves = {id(leaf) for leaf in collect_leaves(model)}
        self.merged = {batchnorm: layer for layer, batchnorm in merged}
        self.depth = 0
        self.stack: list[str] = []
        self.calls: list = []
        self.modules: list = []
        self.outputs: dict = {}
        self.misread: list = []
        self._handles: list = []
        self._mode: Optional[_Calls] = None

    def where(self) -> str:
        """The innermost module running (its name; '' for the model)."""
        return self.stack[-1] if self.stack else ""

    def _pre(self, module, args):
        name = self.names.get(id(module), "?")
        self.stack.append(name)
        if id(module) in self.leaves:
            self.depth += 1
            if name in self.merged:
                layer_output = self.outputs.get(self.merged[name])
                if not args or layer_output is None or args[0] is not layer_output:
                    self.misread.append(name)

    def _post(self, module, args, output):
        name = self.stack.pop() if self.stack else "?"
        if id(module) in self.leaves:
            self.depth -= 1
            self.outputs[name] = output
            gap = module_gap(name, module)
            if gap is not None and isinstance(output, torch.Tensor) and output.grad_fn is not None:
                self.modules.append((gap, output.grad_fn))

    def __enter__(self) -> "Watch":
        self.depth, self.stack, self.calls, self.modules, self.outputs, self.misread = 0, [], [], [], {}, []
        for module in self.model.modules():
            self._handles.append(module.register_forward_pre_hook(self._pre, prepend=True))
            self._handles.append(module.register_forward_hook(self._post))
        self._mode = _Calls(self)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.outputs.clear()

    def check(self, logits: torch.Tensor) -> None:
        """Raise :class:`UnsupportedOperations` if the relevance of ``logits`` would flow through a call or
        module without an exact rule, or a merged BatchNorm did not read its layer's output."""
        reachable, stack = set(), [logits.grad_fn] if logits.grad_fn is not None else []
        while stack:
            node = stack.pop()
            if node is None or node in reachable:
                continue
            reachable.add(node)
            stack.extend(next_node for next_node, _ in node.next_functions)
        gaps = [gap for gap, node in self.modules if node in reachable]
        gaps += [Uncovered(where, what, "a call outside the modules whose gradient is not its relevance rule",
                           alternative(name), call=True)
                 for where, what, name, node in self.calls if node in reachable]
        gaps += [Uncovered(name, "BatchNorm", f"merged into {self.merged[name]} by module order but does not read "
                           "its output", alternative("BatchNorm")) for name in dict.fromkeys(self.misread)]
        self.calls, self.modules = [], []
        if gaps:
            raise UnsupportedOperations(self.method, gaps, note=f"torch.fx cannot trace the model ({self.reason}), "
                                        "so it is explained with module hooks, which nothing outside the modules "
                                        "may need a rule for")
