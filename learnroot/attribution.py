"""Run a method: ``make_attributor(model, method, root_opt, box)(x, target) -> Attribution``.

Rule-based methods run zennit on a private copy of the model, canonized once when the attributor
is made (:mod:`learnroot.graph`: traced with ``torch.fx``, BatchNorms folded, residual sums,
concatenations, gates, functional activations and poolings made named layers, shared modules
split per call site); the attributor refuses, with one line listing each operation, a model with
operations on the path to the logits that have no rule for the method
(:class:`~learnroot.graph.UnsupportedOperations`, a ``ValueError``). A composite, registered for each
call and removed after it, maps each affine layer to the rule its method declares
(:mod:`learnroot.methods.catalogue`) and every other layer to its generic rule
(:mod:`learnroot.rules.layers`). Every layer with a rule hook is recorded for the conservation
errors (:mod:`learnroot.conservation`), under the model's own module names (a new layer under the
name of its place in the graph, e.g. ``layer1.0.add``).

The *pixel layer* is the first Linear/Conv layer the input reaches (found by a probe forward
pass). Its zB box is the pixel box mapped to that layer's input by evaluating the model on the
constant images ``low`` and ``high``: for CNNs this is the pixel box itself; for the toy sigmoid
network (``Flatten -> Sigmoid -> Linear``) it is ``[sigmoid(low), sigmoid(high)]`` - exact whenever
only reshapes and elementwise monotone functions precede the first affine layer.

Speed: the rules of the affine layers are evaluated by :class:`~learnroot.rules.FastRule` (same
result; modified weights such as ``w+`` made once per layer and cached, branches whose result is
exactly zero skipped), and the rule templates, with their caches, are built once per input shape
and reused by every call (about one more copy of the affine weights; see ``docs/PERFORMANCE.md``).

Gradient-type methods differentiate the target logit on the unmodified copy, scaled by
``r_top / f_c(x)`` so that their relevance is on the scale of the output relevance (scale 1 for
``output=logit``).

For the evaluations: layers named in ``keep_layers`` keep their channel-summed input relevance
(:meth:`Attribution.layer_maps`), and a method with one root at the pixels (``ours`` with
``root_opt.pixel_layer=learned``) returns it (:attr:`Attribution.pixel_root`); its rule alone
keeps its signals (a :class:`~learnroot.rules.RootLog` of its own), so nothing else is stored.
:meth:`Attributor.with_model` makes the same method's attributor for another model (the
randomisation check).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn
from zennit.core import Composite

from .conservation import Recorded
from .graph import Canonized, canonize
from .groups import RootOptOptions
from .methods import get, validate
from .methods.rulebook import RuleBook
from .rules import AFFINE, RootLog
from .rules.ruleonly import replaces_gradient, rule_only
from .rules.layers import generic_rule, layer_kind

__all__ = ["Attribution", "Attributor", "make_attributor", "output_relevance", "probe", "Probe", "recordable_layers",
           "architecture"]


def architecture(model: nn.Module) -> str:
    """``vit`` for :class:`learnroot.transformers.vit.VisionTransformer`, ``cnn`` for any other model."""
    from .transformers.vit import is_vit
    return "vit" if is_vit(model) else "cnn"


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
    conserving : bool
        False for maps that are not relevance decompositions (Chefer's transformer attribution and
        the attention rollouts on vision transformers): no conservation error is reported for them.
    pixel_root : torch.Tensor, optional
        ``(B, *input_shape)`` the one root ``r`` of the pixel layer (signal ``x - r``), where the method
        has one and that layer's input is the model input (``ours`` with
        ``root_opt.pixel_layer=learned``); ``None`` otherwise.
    """

    relevance: torch.Tensor
    target_logit: torch.Tensor
    r_top: torch.Tensor
    layers: list = field(default_factory=list)
    root_fallback: Optional[torch.Tensor] = None
    conserving: bool = True
    pixel_root: Optional[torch.Tensor] = None

    def layer_maps(self) -> dict[str, torch.Tensor]:
        """The kept layer-wise maps: module name -> ``(B, *S)`` channel-summed input relevance (``(B, F)``
        for dense inputs); a module called more than once gets ``name#1``, ``name#2``, ... in forward order."""
        kept = [layer for layer in reversed(self.layers) if layer.relevance is not None]  # forward order
        counts: dict[str, int] = {}
        for layer in kept:
            counts[layer.name] = counts.get(layer.name, 0) + 1
        maps, seen = {}, {}
        for layer in kept:
            seen[layer.name] = seen.get(layer.name, 0) + 1
            key = layer.name if counts[layer.name] == 1 else f"{layer.name}#{seen[layer.name]}"
            maps[key] = layer.relevance
        return maps


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
        raise ValueError(f"method.output={output!r} is not one of: logit, abs_logit, one")
    seed = torch.zeros_like(logits).scatter(1, target, r_top.detach()[:, None])
    return seed, r_top.detach(), logit.detach()


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
          dtype: torch.dtype, device, keep: Optional[Callable[[str], bool]] = None) -> Probe:
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
    keep : callable, optional
        ``name -> bool``: the affine layers to list (e.g. those relevance flows through); all by default.

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
               for name, module in model.named_modules() if isinstance(module, AFFINE) and (keep is None or keep(name))]
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


def recordable_layers(model: nn.Module) -> list[str]:
    """Names of the modules whose relevance a rule-based method records (and can keep as a layer map):
    the Linear/Conv layers and the layers with a generic rule (pooling, activations, sums, concatenations)
    that relevance flows through in the canonized model (a BatchNorm folded into its conv is not one)."""
    canonized = canonize(copy.deepcopy(model).eval())
    names = [canonized.display(name) for name, module in canonized.leaves()
             if isinstance(module, AFFINE) or generic_rule(module, 1e-6) is not None]
    return list(dict.fromkeys(names))


class Attributor:
    """``attributor(x, target) -> Attribution`` for one method; see :func:`make_attributor`."""

    def __init__(self, model: nn.Module, method, root_opt: RootOptOptions,
                 box: tuple[torch.Tensor, torch.Tensor], keep_layers=()):
        validate(method, root_opt)
        self.spec = get(method.name)
        self.method = method
        self.root_opt = root_opt
        self.box = box
        self.keep_layers = frozenset(keep_layers)
        self.model = copy.deepcopy(model).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.log = RootLog()
        self.pixel_log = RootLog(keep_signals=True)  # the learned pixel root's signal, for Attribution.pixel_root
        self._probes: dict = {}
        self._templates: dict = {}
        self.canonized: Optional[Canonized] = None
        if self.spec.kind == "rule":
            # canonized once for good (the copy is private): the folded weights stay the same tensors, so
            # the rules' cached modified weights stay valid from call to call
            self.canonized = canonize(self.model)
            self.canonized.check(method.name, method, learned=self.spec.uses_root_opt)
            self.model = self.canonized.model

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
            if self.spec.kind == "gradient":
                return self._gradient(x, target)
            return self._rules(x, target)

    def with_model(self, model: nn.Module) -> "Attributor":
        """The same method (options, box, kept layers) on another model (copied and canonized anew)."""
        return type(self)(model, self.method, self.root_opt, self.box, self.keep_layers)

    def probe(self, x: torch.Tensor) -> Probe:
        """The (cached) :class:`Probe` for inputs shaped like ``x``."""
        key = (tuple(x.shape[1:]), x.dtype, x.device)
        if key not in self._probes:
            keep = None if self.canonized is None else self.canonized.on_path
            self._probes[key] = probe(self.model, self.box, tuple(x.shape[1:]), x.dtype, x.device, keep=keep)
        return self._probes[key]

    def rules(self, found: Probe, fast: bool = True) -> dict:
        """The rule templates of the affine layers for a probed model (built once per probe, then reused:
        their caches keep the modified weights between calls). ``fast=False``: plain zennit rules, not cached."""
        key = id(found)
        if key not in self._templates or not fast:
            book = RuleBook(self.method, self.root_opt, log=self.log, fast=fast)
            (pixel_name, _), hidden = found.affine[0], found.affine[1:]
            rules = self.spec.hidden(book, hidden)
            if self.spec.uses_root_opt and self.root_opt.pixel_layer == "learned":
                rules[pixel_name] = book.learned(self.root_opt.pixel, box=found.box, log=self.pixel_log)
            else:
                rules[pixel_name] = book.pixel(found.box)
            if not fast:
                return rules
            self._templates[key] = (found, rules)
        return self._templates[key][1]

    def composite(self, found: Probe, sink: list, fast: bool = True, replaced: Optional[list] = None) -> Composite:
        """The zennit composite of this method for a probed model; records into ``sink``.

        The model copy is canonized once when the attributor is made, so the composite has no
        canonizers of its own; modules that relevance does not flow through get no hook. ``replaced``
        receives the modules whose rule replaces their own input gradient (:func:`~learnroot.rules.rule_only`).
        """
        rules = self.rules(found, fast=fast)
        method = self.method
        canonized = self.canonized

        def module_map(ctx, name, module):
            if canonized is not None and not canonized.on_path(name):  # e.g. a gate's branch: no relevance
                template = None
            elif name in rules:
                template = rules[name]
            elif isinstance(module, AFFINE):  # not reached by the forward pass
                template = None
            else:
                template = generic_rule(module, method.stabilizer, method.pool_rule, method.epsilon)
            if template is not None and replaced is not None and replaces_gradient(module, template):
                replaced.append(module)
            shown = name if canonized is None else canonized.display(name)
            return None if template is None else Recorded(template, shown, layer_kind(module), sink,
                                                           keep=shown in self.keep_layers)

        return Composite(module_map=module_map)

    def _rules(self, x: torch.Tensor, target: torch.Tensor) -> Attribution:
        found = self.probe(x)
        sink: list = []
        self.log.clear()
        self.pixel_log.clear()
        replaced: list = []
        composite = self.composite(found, sink, replaced=replaced)
        composite.register(self.model)
        try:
            with torch.enable_grad(), rule_only(replaced):  # no wasted backward of the affine layers
                inputs = x.detach().requires_grad_(True)
                with self.canonized.watch(self.method.name) as watch:  # checks the hook fallback only
                    logits = self.model(inputs)
                watch.check(logits)
                seed, r_top, logit = output_relevance(logits, target, self.method.output)
                relevance, = torch.autograd.grad(logits, inputs, grad_outputs=seed)
        finally:
            composite.remove()
        fallback = self.log.fallback(x.shape[0], device=x.device) | self.pixel_log.fallback(x.shape[0], x.device)
        return Attribution(relevance=relevance.detach(), target_logit=logit, r_top=r_top, layers=sink,
                           root_fallback=fallback, pixel_root=self._pixel_root(x))

    def _pixel_root(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """``input - signal`` of the learned pixel rule's last call, if that layer's input is ``x`` itself."""
        records = [record for record in self.pixel_log.records if "signal" in record]
        if len(records) != 1:  # no learned pixel root, or a pixel layer called more than once
            return None
        layer_input, signal = records[0]["input"], records[0]["signal"]
        if layer_input.shape != x.shape or not torch.equal(layer_input, x.detach()):
            return None  # something (a sigmoid, a normalisation) lies between the input and the pixel layer
        return (layer_input - signal).detach()

    def _gradient(self, x: torch.Tensor, target: torch.Tensor) -> Attribution:
        index = target.to(device=x.device, dtype=torch.long).view(-1, 1)
        with torch.enable_grad():
            relevance, logits = self.spec.gradient_function()(self.model, x, index, self.method)
        _, r_top, logit = output_relevance(logits, target, self.method.output)
        scale = torch.where(logit != 0, r_top / logit, torch.zeros_like(logit))
        relevance = relevance * scale.view(-1, *(1,) * (x.dim() - 1))
        return Attribution(relevance=relevance.detach(), target_logit=logit, r_top=r_top, layers=[],
                           root_fallback=torch.zeros(x.shape[0], dtype=torch.bool, device=x.device))


def make_attributor(model: nn.Module, method, root_opt: RootOptOptions,
                    box: tuple[torch.Tensor, torch.Tensor],
                    keep_layers=()) -> Callable[[torch.Tensor, torch.Tensor], Attribution]:
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
    keep_layers : iterable of str
        Module names whose channel-summed input relevance the attributions keep
        (:meth:`Attribution.layer_maps`; rule-based methods).

    Returns
    -------
    callable
        ``attributor(x, target) -> Attribution`` with ``x`` ``(B, C, H, W)`` on the model's device
        and ``target`` ``(B,)`` long. Leaves no hooks behind; not thread-safe. Transformer methods
        return the attributor their declaration builds.
    """
    spec = get(method.name)
    kind = architecture(model)
    spec.check(kind)
    build = spec.builder(kind)
    if build is not None:
        validate(method, root_opt)
        return build(model, method, root_opt, box, keep_layers)
    return Attributor(model, method, root_opt, box, keep_layers)
