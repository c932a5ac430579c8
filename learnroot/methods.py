"""The method registry: name -> zennit composite (or gradient attributor), output relevance, recording.

:func:`make_attributor` turns a :class:`~learnroot.options.MethodOptions` (plus the root options
and the pixel box) into a callable ``attributor(x, target) -> Attribution``. Rule-based methods run
zennit on a private copy of the model: canonizers merge every BatchNorm into the affine layer
before it (an exact identity is left behind) and route torchvision ResNet residual sums through a
``Sum`` module, once, when the attributor is made; a composite, registered for each call and
removed after it, maps each layer to its rule:

================  =====================================  ===============================
method            hidden Linear/Conv layers              pixel layer
================  =====================================  ===============================
lrp_0             LRP-0 (epsilon = stabilizer)           ``pixel_rule`` (yaml: LRP-0)
lrp_epsilon       LRP-epsilon (``epsilon``)              ``pixel_rule`` (zB)
lrp_gamma         LRP-gamma (``gamma``)                  ``pixel_rule`` (zB)
dtd_zplus         z+                                     ``pixel_rule`` (zB; paper: z+)
dtd_zb            zB, box = [min, max] of layer input    ``pixel_rule`` (zB)
dtd_ww            w^2                                    ``pixel_rule`` (zB)
dtd_montavon      gamma / epsilon / LRP-0 by depth       ``pixel_rule`` (zB)
ours              learned root (``root_opt.layers``),    ``pixel_rule`` (zB), or the
                  z+ on the other layers                 learned root in the pixel box
================  =====================================  ===============================

The *pixel layer* is the first Linear/Conv layer the input reaches (found by a probe forward
pass). Its zB box is the pixel box mapped to that layer's input by evaluating the model on the
constant images ``low`` and ``high``: for CNNs this is the pixel box itself; for the toy sigmoid
network (``Flatten -> Sigmoid -> Linear``) it is ``[sigmoid(low), sigmoid(high)]`` - exact whenever
only reshapes and elementwise monotone functions precede the first affine layer.

Other layers: MaxPool keeps its gradient (winner-take-all); AvgPool, AdaptiveAvgPool and the
residual ``Sum`` split proportionally to their inputs (zennit ``Norm``); ReLU-type activations
(ReLU, LeakyReLU, PReLU, RReLU) pass relevance unchanged; other elementwise activations (sigmoid,
tanh, ...) use the z rule of the activation, ``R_in = x * phi'(x) * R_out / phi(x)`` (zennit
``Norm``: the first-order Taylor term at root 0, which equals "pass" for ReLU-type activations and
is what the seed's toy example analyses); merged BatchNorms pass. Every layer with a rule hook is
recorded for the conservation errors (:mod:`learnroot.conservation`).

Speed: the zennit rules of the affine layers are evaluated by :class:`~learnroot.rules.FastRule`
(same result; modified weights such as ``w+`` made once per layer and cached, branches whose
result is exactly zero skipped), and the rule templates, with their caches, are built once per
input shape and reused by every call. The caches hold about one more copy of the affine weights
(e.g. ``w+`` for ``dtd_zplus`` and ``ours``; two for ``lrp_gamma``), on top of the private copy of
the model. See ``docs/PERFORMANCE.md``.

Gradient-type methods (``gradient``, ``gradient_x_input``, ``integrated_gradients``) differentiate
the target logit on the unmodified copy, scaled by ``r_top / f_c(x)`` so that their relevance is on
the scale of the output relevance (scale 1 for ``output=logit``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.core import Composite, collect_leaves
from zennit.layer import Sum
from zennit.rules import Epsilon, Flat, Gamma, Norm, Pass, WSquare, ZBox, ZPlus
from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer
from zennit.types import Activation, AvgPool, BatchNorm, Linear as AnyLinear, MaxPool

from .conservation import LayerSums, Recorded
from .options import METHODS, PIXEL_RULES, ROOT_LOSSES, MethodOptions, RootOptOptions
from .rules import AFFINE, FastRule, GradientPass, LayerBox, LearnedRoot, RootLog

__all__ = [
    "GRADIENT_METHODS",
    "RULE_METHODS",
    "OUTPUTS",
    "LayerSums",
    "Attribution",
    "Attributor",
    "make_attributor",
    "output_relevance",
    "validate",
    "pixel_rule",
    "hidden_rules",
    "activation_rule",
    "layer_kind",
    "probe",
    "Probe",
    "ExactMergeBatchNorm",
    "tune_allocator",
]

#: ``eps`` of a merged BatchNorm: positive, and ``1 + eps == 1`` in float16, bfloat16, float32 and float64.
IDENTITY_EPS = 1e-30

GRADIENT_METHODS = ("gradient", "gradient_x_input", "integrated_gradients")
RULE_METHODS = tuple(name for name in METHODS if name not in GRADIENT_METHODS)
OUTPUTS = ("logit", "abs_logit", "one")
ROOT_LAYERS = ("all", "conv", "dense", "first_k")
PIXEL_LAYERS = ("zb", "learned")
ROOT_WEIGHTS = ("plus", "all")

#: Activations through which relevance passes unchanged (positively homogeneous, piecewise linear).
RELU_LIKE = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.RReLU)


@dataclass
class Attribution:
    """Result of one attribution of a batch.

    Attributes
    ----------
    relevance : torch.Tensor
        ``(B, *input_shape)`` relevance at the input, on the input's device (logit units).
    target_logit : torch.Tensor
        ``(B,)`` the target class logit ``f_c(x)``.
    r_top : torch.Tensor
        ``(B,)`` total relevance put on the output (``f_c``, ``|f_c|`` or 1).
    layers : list of LayerSums
        Relevance sums per propagated layer, backward order; empty for gradient-type methods.
    root_fallback : torch.Tensor
        ``(B,)`` bool, True where a learned root hit NaN/inf and fell back to its z+ start
        (always False for methods other than ``ours``).
    """

    relevance: torch.Tensor
    target_logit: torch.Tensor
    r_top: torch.Tensor
    layers: list = field(default_factory=list)
    root_fallback: Optional[torch.Tensor] = None


def validate(method: MethodOptions, root_opt: RootOptOptions) -> None:
    """Raise ``ValueError`` (one line) on any unknown name or invalid value in the options."""
    def check(value, allowed, what):
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")

    check(method.name, METHODS, "method")
    check(method.output, OUTPUTS, "method.output")
    check(method.pixel_rule, PIXEL_RULES, "method.pixel_rule")
    split = list(method.montavon_split)
    if len(split) != 2 or not 0.0 <= split[0] <= split[1] <= 1.0:
        raise ValueError(f"method.montavon_split must be two fractions 0 <= a <= b <= 1, got {split}")
    if method.ig_steps < 1:
        raise ValueError(f"method.ig_steps must be >= 1, got {method.ig_steps}")
    check(root_opt.weights, ROOT_WEIGHTS, "root_opt.weights")
    check(root_opt.layers, ROOT_LAYERS, "root_opt.layers")
    check(root_opt.pixel_layer, PIXEL_LAYERS, "root_opt.pixel_layer")
    if root_opt.k < 0:
        raise ValueError(f"root_opt.k must be >= 0, got {root_opt.k}")
    for kind in ("conv", "dense", "pixel"):
        layer = getattr(root_opt, kind)
        check(layer.loss, ROOT_LOSSES, f"root_opt.{kind}.loss")
        if layer.steps < 0 or layer.clip < 0:
            raise ValueError(f"root_opt.{kind}: steps and clip must be >= 0")


def output_relevance(logits: torch.Tensor, target: torch.Tensor,
                     output: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The relevance put on the output layer.

    Parameters
    ----------
    logits : torch.Tensor
        ``(B, K)`` model output.
    target : torch.Tensor
        ``(B,)`` long class indices.
    output : str
        ``logit`` (``R = f_c``), ``abs_logit`` (``|f_c|``) or ``one`` (1).

    Returns
    -------
    seed : torch.Tensor
        ``(B, K)`` ``onehot(target) * r_top``.
    r_top : torch.Tensor
        ``(B,)`` relevance on the target output.
    target_logit : torch.Tensor
        ``(B,)`` ``f_c(x)``.
    """
    target = target.to(device=logits.device, dtype=torch.long).view(-1, 1)
    logit = logits.gather(1, target)[:, 0]
    if output == "logit":
        r_top = logit
    elif output == "abs_logit":
        r_top = logit.abs()
    elif output == "one":
        r_top = torch.ones_like(logit)
    else:
        raise ValueError(f"unknown method.output {output!r}; choose one of {', '.join(OUTPUTS)}")
    seed = torch.zeros_like(logits).scatter(1, target, r_top.detach()[:, None])
    return seed, r_top.detach(), logit.detach()


def _zero_params(method: MethodOptions):
    return None if method.bias else ["bias"]


def _epsilon(value: float, method: MethodOptions) -> FastRule:
    """LRP-epsilon; ``epsilon = 0`` is LRP-0, kept off zero denominators by the stabilizer."""
    epsilon = max(float(value), method.stabilizer)
    return FastRule(Epsilon(epsilon=epsilon, zero_params=_zero_params(method)), stabilizer=epsilon)


def _zplus(method: MethodOptions) -> FastRule:
    """z+ (fused with the stabiliser value where the input is non-negative)."""
    return FastRule(ZPlus(stabilizer=method.stabilizer, zero_params=_zero_params(method)), stabilizer=method.stabilizer)


def pixel_rule(method: MethodOptions, box: tuple[torch.Tensor, torch.Tensor]):
    """The classic rule of the pixel layer chosen by ``method.pixel_rule``.

    Parameters
    ----------
    method : MethodOptions
        ``pixel_rule``, ``epsilon``, ``gamma``, ``stabilizer``, ``bias``.
    box : (torch.Tensor, torch.Tensor)
        ``(low, high)`` of the pixel layer's input, ``(1, *input_shape)``, for ``zb``.

    Returns
    -------
    FastRule
        The zennit rule, evaluated by :class:`~learnroot.rules.FastRule`.
    """
    zero = _zero_params(method)
    name = method.pixel_rule
    if name == "epsilon":
        return _epsilon(method.epsilon, method)
    rules = {
        "zb": lambda: ZBox(low=box[0], high=box[1], stabilizer=method.stabilizer, zero_params=zero),
        "zplus": lambda: _zplus(method),
        "wsquare": lambda: WSquare(stabilizer=method.stabilizer, zero_params=zero),
        "flat": lambda: Flat(stabilizer=method.stabilizer, zero_params=zero),
        "gamma": lambda: Gamma(gamma=method.gamma, stabilizer=method.stabilizer, zero_params=zero),
    }
    if name not in rules:
        raise ValueError(f"unknown method.pixel_rule {name!r}; choose one of {', '.join(PIXEL_RULES)}")
    rule = rules[name]()
    return rule if isinstance(rule, FastRule) else FastRule(rule)


def _montavon(method: MethodOptions, hidden: list[tuple[str, nn.Module]]) -> dict:
    """Gamma on the lower, epsilon on the middle, LRP-0 on the upper layers and the dense head.

    Hidden layer ``i`` (0-based, forward order, ``n`` layers) is in the gamma block if
    ``i < round(split[0] * n)``, in the epsilon block if ``i < round(split[1] * n)``; dense layers
    always use LRP-0.
    """
    n = len(hidden)
    end_gamma, end_epsilon = (int(round(fraction * n)) for fraction in method.montavon_split)
    rules = {}
    for index, (name, module) in enumerate(hidden):
        if isinstance(module, nn.Linear) or index >= end_epsilon:
            rules[name] = _epsilon(0.0, method)
        elif index < end_gamma:
            rules[name] = FastRule(Gamma(gamma=method.gamma, stabilizer=method.stabilizer,
                                         zero_params=_zero_params(method)))
        else:
            rules[name] = _epsilon(method.epsilon, method)
    return rules


def _learned_layers(root_opt: RootOptOptions, hidden: list[tuple[str, nn.Module]]) -> set[str]:
    if root_opt.layers == "all":
        return {name for name, _ in hidden}
    if root_opt.layers == "conv":
        return {name for name, module in hidden if not isinstance(module, nn.Linear)}
    if root_opt.layers == "dense":
        return {name for name, module in hidden if isinstance(module, nn.Linear)}
    if root_opt.layers == "first_k":  # the k layers nearest the output
        return {name for name, _ in hidden[len(hidden) - root_opt.k:]} if root_opt.k > 0 else set()
    raise ValueError(f"unknown root_opt.layers {root_opt.layers!r}; choose one of {', '.join(ROOT_LAYERS)}")


def hidden_rules(method: MethodOptions, root_opt: RootOptOptions, hidden: list[tuple[str, nn.Module]],
                 log: Optional[RootLog] = None) -> dict:
    """Rules of the affine layers above the pixel layer.

    Parameters
    ----------
    method, root_opt : MethodOptions, RootOptOptions
    hidden : list of (str, torch.nn.Module)
        The hidden affine layers in forward order (pixel layer excluded).
    log : RootLog, optional
        Shared by the learned-root hooks of ``ours``.

    Returns
    -------
    dict
        ``name -> zennit hook template``.
    """
    zero = _zero_params(method)
    name = method.name
    if name == "dtd_montavon":
        return _montavon(method, hidden)
    if name == "ours":
        learned = _learned_layers(root_opt, hidden)
        return {layer: (LearnedRoot.from_options(root_opt.dense if isinstance(module, nn.Linear) else root_opt.conv,
                                                 root_opt, log=log)
                        if layer in learned else _zplus(method))
                for layer, module in hidden}
    factories = {
        "lrp_0": lambda: _epsilon(0.0, method),
        "lrp_epsilon": lambda: _epsilon(method.epsilon, method),
        "lrp_gamma": lambda: FastRule(Gamma(gamma=method.gamma, stabilizer=method.stabilizer, zero_params=zero)),
        "dtd_zplus": lambda: _zplus(method),
        "dtd_zb": lambda: LayerBox(stabilizer=method.stabilizer, zero_params=zero),
        "dtd_ww": lambda: FastRule(WSquare(stabilizer=method.stabilizer, zero_params=zero)),
    }
    if name not in factories:
        raise ValueError(f"{name!r} is not a rule-based method ({', '.join(RULE_METHODS)})")
    return {layer: factories[name]() for layer, _ in hidden}


def activation_rule(module: nn.Module, stabilizer: float):
    """``Pass`` for ReLU-type activations, the activation's z rule (``Norm``) for the others."""
    if isinstance(module, RELU_LIKE):
        return Pass()
    return Norm(stabilizer=stabilizer)


def layer_kind(module: nn.Module) -> str:
    """``dense``, ``conv``, ``pool``, ``sum``, ``batchnorm``, ``activation`` or ``other``."""
    if isinstance(module, nn.Linear):
        return "dense"
    if isinstance(module, AFFINE):
        return "conv"
    if isinstance(module, (MaxPool, AvgPool)):
        return "pool"
    if isinstance(module, Sum):
        return "sum"
    if isinstance(module, BatchNorm):
        return "batchnorm"
    if isinstance(module, Activation):
        return "activation"
    return "other"


def _generic_rule(module: nn.Module, stabilizer: float):
    if isinstance(module, (Sum, AvgPool)):
        return Norm(stabilizer=stabilizer)
    if isinstance(module, MaxPool):
        return GradientPass()
    if isinstance(module, BatchNorm):
        return Pass()  # merged into the layer before it (checked), i.e. an identity
    if isinstance(module, Activation) and not isinstance(module, nn.MultiheadAttention):
        return activation_rule(module, stabilizer)
    return None


class ExactMergeBatchNorm(SequentialMergeBatchNorm):
    """zennit's ``SequentialMergeBatchNorm`` whose merged BatchNorm is an exact identity.

    After the merge the BatchNorm has mean 0, variance 1, weight 1 and bias 0, and still scales by
    ``1 / sqrt(1 + eps)``: zennit 0.5.1 leaves ``eps`` (e.g. ``1e-5``), zennit 1.0 sets it to 0,
    which ``torch.nn.functional.batch_norm`` of some torch versions refuses (``eps must be
    positive``; torch 2.11 does, on every device). This sets :data:`IDENTITY_EPS`, positive and
    so small that ``1 + eps`` rounds to 1 in every float type: the canonized model computes the
    original function, on every torch version.
    """

    def register(self, linears, batch_norm):
        """Merge, then make the BatchNorm an exact identity."""
        self._eps = batch_norm.eps
        super().register(linears, batch_norm)
        batch_norm.eps = IDENTITY_EPS

    def remove(self):
        """Undo the merge and restore ``eps``."""
        super().remove()
        self.batch_norm.eps = self._eps


def canonizers() -> list:
    """BatchNorm merge and torchvision ResNet residual ``Sum`` canonizers (fresh instances)."""
    return [ExactMergeBatchNorm(), ResNetBottleneckCanonizer(), ResNetBasicBlockCanonizer()]


def unmerged_batchnorms(model: nn.Module) -> list[str]:
    """Names of BatchNorm layers that do not directly follow a Linear/Conv layer (cannot be merged)."""
    names = {id(module): name for name, module in model.named_modules()}
    unmerged, last = [], None
    for leaf in collect_leaves(model):
        if isinstance(leaf, BatchNorm) and not isinstance(last, AnyLinear):
            unmerged.append(names.get(id(leaf), "?"))
        last = leaf
    return unmerged


@dataclass
class Probe:
    """What a probe forward pass finds out about a model for one input shape.

    Attributes
    ----------
    affine : list of (str, torch.nn.Module)
        Linear/Conv layers in the order the forward pass first calls them.
    box : (torch.Tensor, torch.Tensor)
        ``(low, high)`` of the pixel (first affine) layer's input, ``(1, *layer_input_shape)``.
    """

    affine: list
    box: tuple


def probe(model: nn.Module, box: tuple[torch.Tensor, torch.Tensor], input_shape: tuple,
          dtype: torch.dtype, device) -> Probe:
    """Run the constant images ``low`` and ``high`` through ``model`` (no hooks left behind).

    Parameters
    ----------
    model : torch.nn.Module
        Model in eval mode.
    box : (torch.Tensor, torch.Tensor)
        Pixel value range ``(low, high)`` in normalised input space, broadcastable to
        ``(1, *input_shape)``.
    input_shape : tuple of int
        Shape of one input, e.g. ``(C, H, W)``.
    dtype, device
        Of the inputs.

    Returns
    -------
    Probe
    """
    low, high = (torch.as_tensor(bound).to(device=device, dtype=dtype).expand(1, *input_shape) for bound in box)
    order, captured = [], []

    def hook_for(name):
        def hook(module, args, output):
            if name not in {entry[0] for entry in order}:
                order.append((name, module))
                if not captured:
                    captured.append(args[0].detach().clone())
        return hook

    handles = [module.register_forward_hook(hook_for(name))
               for name, module in model.named_modules() if isinstance(module, AFFINE)]
    try:
        with torch.no_grad():
            model(torch.cat([low, high]))
    finally:
        for handle in handles:
            handle.remove()
    if not captured:
        raise ValueError("the model has no Linear/Conv layer: rule-based methods cannot run on it")
    first = captured[0]
    return Probe(affine=order, box=(torch.minimum(first[:1], first[1:]), torch.maximum(first[:1], first[1:])))


class Attributor:
    """``attributor(x, target) -> Attribution`` for one method; see :func:`make_attributor`."""

    def __init__(self, model: nn.Module, method: MethodOptions, root_opt: RootOptOptions,
                 box: tuple[torch.Tensor, torch.Tensor]):
        validate(method, root_opt)
        self.method = method
        self.root_opt = root_opt
        self.box = box
        self.model = copy.deepcopy(model).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.log = RootLog()
        self._probes: dict = {}
        self._templates: dict = {}
        self._canonized: list = []
        if method.name in RULE_METHODS:
            unmerged = unmerged_batchnorms(self.model)
            if unmerged:
                raise ValueError(f"BatchNorm layer(s) {', '.join(unmerged)} do not follow a Linear/Conv layer "
                                 f"and cannot be merged; {method.name} would pass them through silently")
            # canonized once for good (the copy is private): the merged weights stay the same tensors, so
            # the rules' cached modified weights stay valid from call to call
            self._canonized = [handle for canonizer in canonizers() for handle in canonizer.apply(self.model)]

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> Attribution:
        """Explain ``target`` for each image of ``x``.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, *input_shape)`` float inputs on the model's device.
        target : torch.Tensor
            ``(B,)`` long class indices.

        Returns
        -------
        Attribution
        """
        with torch.inference_mode(False):
            # called under torch.inference_mode(): autograd needs normal tensors
            x = x.clone() if x.is_inference() else x
            target = target.clone() if target.is_inference() else target
            if self.method.name in GRADIENT_METHODS:
                return self._gradient(x, target)
            return self._rules(x, target)

    def probe(self, x: torch.Tensor) -> Probe:
        """The (cached) :class:`Probe` for inputs shaped like ``x``."""
        key = (tuple(x.shape[1:]), x.dtype, x.device)
        if key not in self._probes:
            self._probes[key] = probe(self.model, self.box, tuple(x.shape[1:]), x.dtype, x.device)
        return self._probes[key]

    def rules(self, found: Probe) -> dict:
        """The rule templates of the affine layers for a probed model (built once per probe, then reused:
        their caches keep the modified weights between calls)."""
        key = id(found)
        if key not in self._templates:
            method, root_opt = self.method, self.root_opt
            (pixel_name, _), hidden = found.affine[0], found.affine[1:]
            rules = hidden_rules(method, root_opt, hidden, log=self.log)
            if method.name == "ours" and root_opt.pixel_layer == "learned":
                rules[pixel_name] = LearnedRoot.from_options(root_opt.pixel, root_opt, box=found.box, log=self.log)
            else:
                rules[pixel_name] = pixel_rule(method, found.box)
            self._templates[key] = (found, rules)
        return self._templates[key][1]

    def composite(self, found: Probe, sink: list) -> Composite:
        """The zennit composite of this method for a probed model; records into ``sink``.

        The model copy is canonized once when the attributor is made, so the composite has no
        canonizers of its own.
        """
        method = self.method
        rules = self.rules(found)

        def module_map(ctx, name, module):
            if name in rules:
                template = rules[name]
            elif isinstance(module, AFFINE):  # not reached by the forward pass
                template = None
            else:
                template = _generic_rule(module, method.stabilizer)
            return None if template is None else Recorded(template, name, layer_kind(module), sink)

        return Composite(module_map=module_map)

    def _rules(self, x: torch.Tensor, target: torch.Tensor) -> Attribution:
        found = self.probe(x)
        sink: list = []
        self.log.clear()
        composite = self.composite(found, sink)
        composite.register(self.model)
        try:
            with torch.enable_grad():
                inputs = x.detach().requires_grad_(True)
                logits = self.model(inputs)
                seed, r_top, logit = output_relevance(logits, target, self.method.output)
                relevance, = torch.autograd.grad(logits, inputs, grad_outputs=seed)
        finally:
            composite.remove()
        fallback = self.log.fallback(x.shape[0], device=x.device)
        return Attribution(relevance=relevance.detach(), target_logit=logit, r_top=r_top, layers=sink,
                           root_fallback=fallback)

    def _gradient(self, x: torch.Tensor, target: torch.Tensor) -> Attribution:
        method = self.method
        index = target.to(device=x.device, dtype=torch.long).view(-1, 1)
        with torch.enable_grad():
            inputs = x.detach().requires_grad_(True)
            logits = self.model(inputs)
            _, r_top, logit = output_relevance(logits, target, method.output)
            if method.name == "integrated_gradients":
                total = torch.zeros_like(x)
                for step in range(1, method.ig_steps + 1):  # right Riemann sum, baseline 0
                    point = (x.detach() * (step / method.ig_steps)).requires_grad_(True)
                    gradient, = torch.autograd.grad(self.model(point).gather(1, index).sum(), point)
                    total = total + gradient
                relevance = x.detach() * total / method.ig_steps
            else:
                gradient, = torch.autograd.grad(logits.gather(1, index).sum(), inputs)
                relevance = gradient if method.name == "gradient" else x.detach() * gradient
        scale = torch.where(logit != 0, r_top / logit, torch.zeros_like(logit))
        relevance = relevance * scale.view(-1, *(1,) * (x.dim() - 1))
        return Attribution(relevance=relevance.detach(), target_logit=logit, r_top=r_top, layers=[],
                           root_fallback=torch.zeros(x.shape[0], dtype=torch.bool, device=x.device))


def tune_allocator(threshold: int = 1 << 30) -> bool:
    """Let glibc keep freed CPU memory for reuse instead of handing it back to the system (opt-in).

    glibc serves large blocks (above 32 MB at most, e.g. one VGG16 activation of a batch of 8)
    from fresh memory maps and trims the top of its heap when much of it is free. An attribution
    allocates and frees the same large tensors on every call, so each call then faults its memory
    in again, page by page: about 8 % of ``lrp_epsilon`` on VGG16 at batch 1, far more at batch 8
    (``docs/PERFORMANCE.md``). Raising both thresholds (``mallopt``) removes this; the process keeps
    its peak memory mapped instead. A process-wide setting: call it once at the start of a program
    (e.g. the run's entry point), not from library code. Does nothing where glibc is absent.

    Parameters
    ----------
    threshold : int
        Bytes; blocks up to this size come from the heap, and free heap memory up to this much is
        kept (default 1 GiB).

    Returns
    -------
    bool
        True where glibc accepted both settings.
    """
    import ctypes
    import ctypes.util

    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    value = int(min(threshold, 2**31 - 1))
    return mallopt(m_mmap_threshold, value) == 1 and mallopt(m_trim_threshold, value) == 1


def make_attributor(model: nn.Module, method: MethodOptions, root_opt: RootOptOptions,
                    box: tuple[torch.Tensor, torch.Tensor]) -> Callable[[torch.Tensor, torch.Tensor], Attribution]:
    """Build the attributor of one method.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier; deep-copied once (put in eval mode, parameters frozen), so the original is
        never hooked, canonized or modified.
    method : MethodOptions
        Method name and rule parameters.
    root_opt : RootOptOptions
        Learned-root options (used by ``ours``).
    box : (torch.Tensor, torch.Tensor)
        ``(low, high)``: pixel value range in the model's normalised input space, ``(1, C, 1, 1)``
        (broadcastable to the input).

    Returns
    -------
    Attributor
        ``attributor(x, target) -> Attribution`` with ``x`` ``(B, C, H, W)`` on the model's device
        and ``target`` ``(B,)`` long. Leaves no hooks behind; not thread-safe.
    """
    return Attributor(model, method, root_opt, box)
