"""What each graph operation is for relevance propagation: the tables the rewrite and the coverage check read.

An operation of a ``forward`` (a ``torch.fx`` ``call_function`` / ``call_method`` node, or a call seen
by the hook fallback's ``TorchFunctionMode``) is known by its *canonical name*: the function's or the
method's name without in-place or dunder underscores, aliases folded (``operator.iadd``,
``torch.add``, ``Tensor.add_``, ``Tensor.__radd__`` are all ``add``). Its *category* says what it
means for the relevance:

``reshape``
    moves, copies or selects values without arithmetic (``view``, ``flatten``, ``permute``,
    ``transpose``, ``chunk``, ``getitem``, ``stack``, ``expand``, a channel shuffle, zero ``pad``,
    functional max pooling, ...): its gradient hands each output's relevance to the input value it
    came from (copies sum back), so the gradient *is* the conserving rule; nothing to rewrite.
``meta``
    returns shapes and sizes (``size``, ``dim``, ``getattr(x, 'shape')``): carries no relevance.
``identity``
    dropout (in eval mode), stochastic depth (in eval mode): removed from the graph.
``cut``
    ``detach``: no relevance flows through it (a gate held constant).
``activation``, ``pool``, ``reduce``
    functional activations, poolings and ``mean``/``sum`` over dimensions: rewritten as the module of
    the same computation, so that they get that module's rule (see :data:`ACTIVATIONS`, :data:`POOLS`).
``add``, ``sub``, ``mul``, ``div``, ``neg``, ``cat``
    rewritten by :mod:`learnroot.graph.rewrite` depending on their operands (residual sum, bias,
    gate, product with a number, concatenation), or refused.

Anything else has no rule. :data:`ALTERNATIVES` names a supported way to write the common ones.
"""
from __future__ import annotations

from typing import Callable, Optional

from torch import nn

__all__ = ["canonical_name", "qualified_name", "category", "ACTIVATIONS", "POOLS", "ALTERNATIVES",
           "alternative", "bind"]

_ALIASES = {"iadd": "add", "radd": "add", "isub": "sub", "rsub": "rsub", "imul": "mul", "rmul": "mul",
            "truediv": "div", "itruediv": "div", "divide": "div", "true_divide": "div", "multiply": "mul",
            "subtract": "sub", "concat": "cat", "concatenate": "cat", "negative": "neg", "swapdims": "swapaxes",
            "moveaxis": "movedim"}

_RESHAPE = {"view", "reshape", "flatten", "unflatten", "permute", "transpose", "t", "contiguous", "squeeze",
            "unsqueeze", "chunk", "split", "tensor_split", "unbind", "getitem", "narrow", "select", "movedim",
            "swapaxes", "expand", "expand_as", "repeat", "clone", "stack", "pad", "channel_shuffle",
            "max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
            "adaptive_max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices", "view_as", "reshape_as",
            "float", "double", "to", "type_as", "stack_operands"}
_META = {"size", "dim", "numel", "nelement", "getattr", "len", "_assert", "ndimension", "floordiv", "eq", "ne",
         "lt", "le", "gt", "ge"}
_IDENTITY = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
             "stochastic_depth"}
_REWRITTEN = {"add", "sub", "rsub", "mul", "div", "neg", "cat"}


def _module_for(name: str) -> Callable:
    return lambda **kw: getattr(nn, name)(**kw)


def _hardtanh(min_val=-1.0, max_val=1.0):
    return nn.ReLU6() if (float(min_val), float(max_val)) == (0.0, 6.0) else nn.Hardtanh(min_val, max_val)


#: canonical name -> (argument names after the input, with defaults; module factory taking them as keywords).
ACTIVATIONS: dict[str, tuple[tuple, Callable]] = {
    "relu": ((("inplace", False),), lambda inplace: nn.ReLU()),
    "relu6": ((("inplace", False),), lambda inplace: nn.ReLU6()),
    "hardtanh": ((("min_val", -1.0), ("max_val", 1.0), ("inplace", False)),
                 lambda min_val, max_val, inplace: _hardtanh(min_val, max_val)),
    "leaky_relu": ((("negative_slope", 0.01), ("inplace", False)),
                   lambda negative_slope, inplace: nn.LeakyReLU(negative_slope)),
    "elu": ((("alpha", 1.0), ("inplace", False)), lambda alpha, inplace: nn.ELU(alpha)),
    "silu": ((("inplace", False),), lambda inplace: nn.SiLU()),
    "hardswish": ((("inplace", False),), lambda inplace: nn.Hardswish()),
    "mish": ((("inplace", False),), lambda inplace: nn.Mish()),
    "gelu": ((("approximate", "none"),), lambda approximate: nn.GELU(approximate=approximate)),
    "sigmoid": ((), lambda: nn.Sigmoid()),
    "hardsigmoid": ((("inplace", False),), lambda inplace: nn.Hardsigmoid()),
    "tanh": ((), lambda: nn.Tanh()),
    "softplus": ((("beta", 1.0), ("threshold", 20.0)), lambda beta, threshold: nn.Softplus(beta, threshold)),
}

#: canonical name -> (argument names after the input, with defaults; module factory).
POOLS: dict[str, tuple[tuple, Callable]] = {
    **{f"adaptive_avg_pool{n}d": ((("output_size", None),),
                                  lambda output_size, n=n: getattr(nn, f"AdaptiveAvgPool{n}d")(output_size))
       for n in (1, 2, 3)},
    "avg_pool1d": ((("kernel_size", None), ("stride", None), ("padding", 0), ("ceil_mode", False),
                    ("count_include_pad", True)),
                   lambda **kw: nn.AvgPool1d(**kw)),
    **{f"avg_pool{n}d": ((("kernel_size", None), ("stride", None), ("padding", 0), ("ceil_mode", False),
                          ("count_include_pad", True), ("divisor_override", None)),
                         lambda n=n, **kw: getattr(nn, f"AvgPool{n}d")(**kw))
       for n in (2, 3)},
}

#: canonical name (or module type name) -> a supported way to write it (the refusal names it).
ALTERNATIVES = {
    "mul": "a gate x * sigmoid(s) or x * hardsigmoid(s) (held constant), or a product with a constant",
    "div": "a division by a number or a constant",
    "sub": "an addition x + y (split in proportion), or subtracting a constant",
    "rsub": "an addition x + y, or subtracting a constant from x",
    "softmax": "explain the logits: leave the softmax out of the model",
    "log_softmax": "explain the logits: leave the log-softmax out of the model",
    "Softmax": "explain the logits: leave the softmax out of the model",
    "LogSoftmax": "explain the logits: leave the log-softmax out of the model",
    "layer_norm": "BatchNorm after a Linear/Conv layer (merged into it)",
    "LayerNorm": "BatchNorm after a Linear/Conv layer (merged into it)",
    "GroupNorm": "BatchNorm after a Linear/Conv layer (merged into it)",
    "InstanceNorm2d": "BatchNorm after a Linear/Conv layer (merged into it)",
    "batch_norm": "an nn.BatchNorm module after a Linear/Conv layer",
    "BatchNorm": "BatchNorm in eval mode with running statistics, after a Linear/Conv layer",
    "interpolate": "a strided Conv or a pooling layer",
    "Upsample": "a strided Conv or a pooling layer",
    "matmul": "nn.Linear", "bmm": "nn.Linear", "einsum": "nn.Linear", "mm": "nn.Linear", "linear": "nn.Linear",
    "conv1d": "nn.Conv1d", "conv2d": "nn.Conv2d", "conv3d": "nn.Conv3d",
    "MultiheadAttention": "learnroot's VisionTransformer with method=chefer or attnlrp",
    "mean": "mean over non-batch dimensions (x.mean([2, 3]))",
    "sum": "sum over non-batch dimensions",
    "ConvTranspose2d": "nn.Conv2d",
    "dropout": "dropout in eval mode (F.dropout(x, p, training=self.training))",
}


def alternative(name: str) -> str:
    """A supported alternative for the operation or module type ``name`` (a generic hint if none is listed)."""
    return ALTERNATIVES.get(name, "Linear/Conv layers, ReLU-type activations, pooling, x + y, torch.cat, "
                                  "gates x * sigmoid(s)")


def canonical_name(target) -> str:
    """The canonical name of a function, method name or ``TorchFunctionMode`` callable (see module docstring)."""
    name = target if isinstance(target, str) else getattr(target, "__name__", None) or str(target)
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        if name in ("radd", "rmul", "rsub", "rtruediv", "rdiv"):
            name = {"rtruediv": "rdiv"}.get(name, name)
    elif name.endswith("_") and not name.startswith("_"):
        name = name[:-1]  # in-place method (relu_, add_)
    return _ALIASES.get(name, name)


def qualified_name(target, method: bool = False) -> str:
    """A readable full name for messages: ``torch.erf``, ``Tensor.exp``, ``operator.mul``, ``F.relu``."""
    if method or isinstance(target, str):
        return f"Tensor.{target if isinstance(target, str) else getattr(target, '__name__', target)}"
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", str(target))
    owner = (getattr(target, "__qualname__", "") or "").split(".")[0]
    if not module and owner in ("TensorBase", "_TensorBase", "Tensor"):  # a tensor method seen by a mode
        return f"Tensor.{name}"
    module = {"_operator": "operator", "torch.nn.functional": "F", "torch._C._nn": "F",
              "torch._C._VariableFunctions": "torch"}.get(module, module)
    return f"{module}.{name}" if module else name


def category(name: str) -> Optional[str]:
    """``reshape``, ``meta``, ``identity``, ``cut``, ``activation``, ``pool``, ``reduce``, the name itself for
    the operand-dependent ones (``add``, ``mul``, ...), or None (no rule)."""
    if name in _RESHAPE:
        return "reshape"
    if name in _META:
        return "meta"
    if name in _IDENTITY:
        return "identity"
    if name == "detach":
        return "cut"
    if name in ACTIVATIONS:
        return "activation"
    if name in POOLS:
        return "pool"
    if name in ("mean", "sum"):
        return "reduce"
    if name in _REWRITTEN:
        return name
    if name == "rdiv":
        return None
    return None


def bind(args: tuple, kwargs: dict, names: tuple) -> dict:
    """Keyword arguments of a call ``f(input, *args, **kwargs)`` by the parameter list ``names``
    (``((name, default), ...)`` after the input)."""
    bound = {name: default for name, default in names}
    for (name, _), value in zip(names, args):
        bound[name] = value
    for key, value in kwargs.items():
        if key in bound:
            bound[key] = value
    return bound
