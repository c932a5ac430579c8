"""Rewrite passes on a traced model: every operation that needs a rule of its own becomes a named layer.

- :func:`split_shared`: a module called at several places (torchvision's BasicBlock calls one ReLU
  twice; weight sharing calls one conv twice) gets one module per call site, sharing its parameters,
  so that each call site has its own rule hook (a hook stores its layer's input: one hook for two
  calls would explain the first call with the second call's input). The extra call sites are named
  ``<name>@2``, ``<name>@3``, ...; users see the module's own name (:func:`display_name`).
- :func:`drop_identities`: ``nn.Identity``, dropout modules and dropout / stochastic-depth calls in
  eval mode leave the graph.
- :func:`explicit_ops`: functional activations and poolings become the modules of the same
  computation (``F.relu`` -> ``nn.ReLU``, ``F.adaptive_avg_pool2d`` -> ``nn.AdaptiveAvgPool2d``,
  ``x.mean([2, 3])`` -> :class:`~learnroot.layers.Mean`); ``x + y`` of two tensors that carry
  relevance (``operator.add``, ``iadd``, ``torch.add``, ``Tensor.add``) becomes ``Sum`` of the stacked
  operands (the proportional rule); ``torch.cat`` becomes :class:`~learnroot.layers.Concat`; a product
  with a gate (an operand computed by a sigmoid / hardsigmoid, through reshapes) becomes
  :class:`~learnroot.layers.Gate` with the gate detached; a product with (or quotient by) a constant
  tensor the same;
  a product or quotient with a number (and ``-x``) becomes :class:`~learnroot.layers.Scale`.
  Adding or subtracting a constant (a bias) is left as it is: its gradient passes the relevance
  on unchanged, as the z rules do with biases left out.

New layers are named after their place: ``<owner>.<op>`` with ``<owner>`` the module whose
``forward`` made the call (``layer1.0.add``, ``features.denseblock1.denselayer2.cat``,
``adaptive_avg_pool2d`` for the model's own ``forward``), ``_1``, ``_2``, ... for repeats.
"""
from __future__ import annotations

import copy
import numbers
from typing import Optional

import torch
import torch.fx as fx
from torch import nn
from zennit.layer import Sum

from ..layers import Concat, Gate, Mean, Scale
from .ops import ACTIVATIONS, POOLS, bind, category
from .trace import carrying, op_name, owner, users_after

__all__ = ["SHARED_MARK", "display_name", "split_shared", "drop_identities", "explicit_ops", "stack_operands"]

#: Separates a module's name from the number of its call site (``layer1.0.relu@2``).
SHARED_MARK = "@"

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
_GATES = (nn.Sigmoid, nn.Hardsigmoid)


def display_name(name: str) -> str:
    """The name users see for a graph module: its own name without the call-site mark."""
    return name.split(SHARED_MARK, 1)[0] if SHARED_MARK in name else name


def stack_operands(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.stack([a, b], -1)`` after broadcasting the two to one shape: the input of a ``Sum``."""
    if a.shape != b.shape:
        a, b = torch.broadcast_tensors(a, b)
    return torch.stack([a, b], dim=-1)


def _free_name(gm: fx.GraphModule, base: str) -> str:
    names = {name for name, _ in gm.named_modules()}
    if base not in names:
        return base
    index = 1
    while f"{base}_{index}" in names:
        index += 1
    return f"{base}_{index}"


def _add_module(gm: fx.GraphModule, node: fx.Node, base: str, module: nn.Module) -> str:
    """Register ``module`` under a free name ``<owner of node>.<base>``; returns the name."""
    where = owner(node)
    name = _free_name(gm, f"{where}.{base}" if where else base)
    gm.add_submodule(name, module)
    return name


def _replace(gm: fx.GraphModule, node: fx.Node, name: str, args: tuple) -> fx.Node:
    """Put ``call_module(name, args)`` in place of ``node`` (same meta; the in-place semantics kept)."""
    with gm.graph.inserting_after(node):
        new = gm.graph.call_module(name, args)
    new.meta = dict(node.meta)
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    return new


def split_shared(gm: fx.GraphModule) -> dict[str, str]:
    """Give each further call site of a module its own module (sharing parameters and buffers).

    Returns
    -------
    dict
        New module name -> the shared module's name.
    """
    seen: dict[str, int] = {}
    made = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        count = seen[node.target] = seen.get(node.target, 0) + 1
        if count == 1:
            continue
        original = gm.get_submodule(node.target)
        clone = copy.copy(original)  # a new module object ...
        clone._parameters = dict(original._parameters)  # ... whose parameters are the same tensors
        clone._buffers = dict(original._buffers)
        clone._modules = dict(original._modules)
        for hooks in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                      "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called"):
            if hasattr(original, hooks):
                setattr(clone, hooks, type(getattr(original, hooks))())
        name = f"{node.target}{SHARED_MARK}{count}"
        gm.add_submodule(name, clone)
        made[name] = node.target
        node.target = name
    return made


def _eval_call(node: fx.Node, position: int) -> bool:
    """Whether a dropout-type call runs in eval mode (``training`` False)."""
    training = node.kwargs.get("training", node.args[position] if len(node.args) > position else True)
    return training is False


def drop_identities(gm: fx.GraphModule) -> int:
    """Remove identities, dropouts (modules, and calls in eval mode); returns how many nodes went."""
    dropped = 0
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), (nn.Identity,) + _DROPOUT) \
                and len(node.args) == 1 and isinstance(node.args[0], fx.Node):
            pass
        elif node.op == "call_function" and op_name(node) in ("dropout", "dropout1d", "dropout2d", "dropout3d",
                                                             "alpha_dropout", "feature_alpha_dropout") \
                and _eval_call(node, 2):
            pass
        elif node.op == "call_function" and op_name(node) == "stochastic_depth" and _eval_call(node, 3):
            pass
        else:
            continue
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
        dropped += 1
    return dropped


def _inplace(node: fx.Node) -> bool:
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    return (node.kwargs.get("inplace") is True or target.startswith("__i")
            or (target.endswith("_") and not target.startswith("_")) or target in ("iadd", "imul", "isub", "itruediv"))


def _keep_inplace(node: fx.Node, new: fx.Node, mutated) -> None:
    """After an in-place op was made out-of-place: later readers of the mutated operand read the result."""
    if isinstance(mutated, fx.Node):
        for user in users_after(mutated, new):
            if user is not new:
                user.replace_input_with(mutated, new)


def _is_gate(gm: fx.GraphModule, node) -> bool:
    """Whether ``node`` is computed by a sigmoid / hardsigmoid (through reshapes)."""
    while isinstance(node, fx.Node):
        if node.op == "call_module":
            return isinstance(gm.get_submodule(node.target), _GATES)
        if node.op in ("call_function", "call_method"):
            name = op_name(node)
            if name in ("sigmoid", "hardsigmoid"):
                return True
            if category(name) == "reshape" and node.args:
                node = node.args[0]
                continue
        return False
    return False


def _constant(node) -> bool:
    """Whether ``node`` is a tensor computed from parameters and buffers only (``get_attr`` nodes)."""
    if not isinstance(node, fx.Node):
        return False
    if node.op == "get_attr":
        return True
    if node.op in ("call_function", "call_method") and category(op_name(node)) != "meta":
        inputs = node.all_input_nodes
        return bool(inputs) and all(_constant(item) for item in inputs)
    return False


def _activation_or_pool(gm: fx.GraphModule, node: fx.Node, name: str) -> Optional[fx.Node]:
    table = ACTIVATIONS if name in ACTIVATIONS else POOLS
    names, factory = table[name]
    if not node.args or not isinstance(node.args[0], fx.Node):
        return None
    bound = bind(tuple(node.args[1:]), dict(node.kwargs), names)
    if any(isinstance(value, fx.Node) for value in bound.values()):
        return None  # arguments computed in the graph: not a fixed module
    module = factory(**bound)
    new = _replace(gm, node, _add_module(gm, node, name, module), (node.args[0],))
    if _inplace(node):
        _keep_inplace(node, new, new.args[0])
    return new


def _reduce(gm: fx.GraphModule, node: fx.Node, name: str) -> Optional[fx.Node]:
    """``x.mean(dims, keepdim)`` / ``x.sum(...)`` over non-batch dimensions -> :class:`Mean`."""
    bound = bind(tuple(node.args[1:]), dict(node.kwargs), (("dim", None), ("keepdim", False)))
    dims = bound["dim"]
    if dims is None or isinstance(dims, fx.Node) or node.kwargs.get("dtype") is not None:
        return None
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if not dims or any(not isinstance(dim, int) or dim == 0 for dim in dims):
        return None
    return _replace(gm, node, _add_module(gm, node, name, Mean(dims, bool(bound["keepdim"]), name)), (node.args[0],))


def _binary(gm: fx.GraphModule, node: fx.Node, name: str, carried: set) -> Optional[fx.Node]:
    """``add`` / ``mul`` / ``div`` / ``neg`` by their operands; None leaves the node as it is."""
    if name == "neg":
        return _replace(gm, node, _add_module(gm, node, "neg", Scale(-1)), (node.args[0],))
    if len(node.args) < 2 or node.kwargs.get("alpha", 1) != 1 or node.kwargs.get("out") is not None:
        return None
    a, b = node.args[0], node.args[1]
    a_on, b_on = a in carried, b in carried
    if name == "add" and a_on and b_on:
        with gm.graph.inserting_before(node):
            stacked = gm.graph.call_function(stack_operands, (a, b))
        stacked.meta = dict(node.meta)
        new = _replace(gm, node, _add_module(gm, node, "add", Sum()), (stacked,))
    elif name in ("mul", "div") and (a_on != b_on) and isinstance(b if a_on else a, numbers.Number):
        if name == "div" and not a_on:
            return None  # c / x
        number = b if a_on else a
        new = _replace(gm, node, _add_module(gm, node, name, Scale(number, divide=name == "div")),
                       (a if a_on else b,))
    elif name == "div" and a_on and not b_on and _constant(b):  # x / c with a constant tensor
        with gm.graph.inserting_before(node):
            held = gm.graph.call_method("detach", (b,))
        held.meta = dict(node.meta)
        new = _replace(gm, node, _add_module(gm, node, "div", Gate(divide=True)), (a, held))
    elif name == "mul" and (a_on and b_on or (a_on and _constant(b)) or (b_on and _constant(a))):
        gate_a, gate_b = a_on and _is_gate(gm, a), b_on and _is_gate(gm, b)
        if a_on and b_on and gate_a == gate_b:
            return None  # a product of two signals (or of two gates): no rule
        if a_on and b_on:  # the gate is held, the other operand gets the relevance
            input, gate = (b, a) if gate_a else (a, b)
        else:  # a constant factor: the signal gets the relevance
            input, gate = (a, b) if a_on else (b, a)
        with gm.graph.inserting_before(node):
            held = gm.graph.call_method("detach", (gate,))
        held.meta = dict(node.meta)
        new = _replace(gm, node, _add_module(gm, node, "gate" if (a_on and b_on) else "mul", Gate()), (input, held))
    else:
        return None
    if _inplace(node):
        _keep_inplace(node, new, a)
    return new


def _concat(gm: fx.GraphModule, node: fx.Node) -> Optional[fx.Node]:
    tensors = node.args[0] if node.args else node.kwargs.get("tensors")
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, fx.Node) for t in tensors) \
            or not isinstance(dim, int):
        return None
    return _replace(gm, node, _add_module(gm, node, "cat", Concat(dim)), tuple(tensors))


def explicit_ops(gm: fx.GraphModule) -> list[str]:
    """Rewrite the operations that need a rule into named layers (see module docstring); returns their names.

    Operations it cannot rewrite stay as they are; the coverage check reports those on the path.
    """
    made = []
    for node in list(gm.graph.nodes):  # activations and poolings first: gates are recognised by their modules
        if node.op in ("call_function", "call_method") and category(op_name(node)) in ("activation", "pool"):
            new = _activation_or_pool(gm, node, op_name(node))
            made += [new.target] if new is not None else []
    carried = carrying(gm.graph)
    for node in list(gm.graph.nodes):
        if node.op not in ("call_function", "call_method") or node not in carried:
            continue
        name = op_name(node)
        kind = category(name)
        if kind == "reduce":
            new = _reduce(gm, node, name)
        elif kind == "cat":
            new = _concat(gm, node)
        elif kind in ("add", "mul", "div", "neg"):
            new = _binary(gm, node, name, carried)
        else:
            continue
        if new is not None:
            carried.add(new)
            made.append(new.target)
    return made
