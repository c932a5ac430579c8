"""The Python API: ``explain`` a classifier's decisions and ``evaluate`` the explanations, from a notebook or
another program, with the command line's defaults and checks.

>>> import torch, torchvision
>>> from learnroot import explain, evaluate
>>> model = torchvision.models.resnet18(weights=None).eval()
>>> images = torch.randn(2, 3, 224, 224)             # already normalised with the ImageNet mean and std
>>> explanation = explain(model, images, method="dtd_zplus", input="imagenet")
>>> explanation.relevance.shape, explanation.conservation_error.shape
(torch.Size([2, 3, 224, 224]), torch.Size([2]))
>>> scores = evaluate(model, images, explanation, metrics="fast")   # one row per image

Options are composed from the shipped config tree exactly as ``learnroot-run`` composes them
(:func:`learnroot.config.compose_options`), so every default and every check is the command line's.
Keyword overrides are translated into config overrides:

===========================================  ====================================================
keyword                                      config override
===========================================  ====================================================
``method="lrp_epsilon"``                     ``method=lrp_epsilon`` (a method preset)
a method parameter: ``epsilon=0.1``          ``method.epsilon=0.1`` (any field of ``MethodOptions``)
``root_opt="paper"``                         ``root_opt=paper`` (a preset of the learned root)
``metrics="fast"`` (``evaluate``)            ``metrics=fast`` (a metrics preset)
a metric parameter: ``pf_steps=10``          ``metrics.pf_steps=10`` (``evaluate``; fields of ``MetricsOptions``)
``batch_size=4``, ``seed=1``, ``save_layers=[...]``  the top-level keys
``config=["root_opt.conv.steps=5", ...]``    any override, as on the command line
===========================================  ====================================================

The model is the caller's object: it is never modified, hooked or moved. Methods run on a private
copy (:func:`~learnroot.attribution.make_attributor`); the logits and the metrics use the model itself
when it is in eval mode, else a private copy in eval mode; everything runs on the model's device
(``device=`` runs a private copy elsewhere).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import conservation
from .config import compose_options
from .data.classes import read_classes
from .data.images import Preprocess
from .explainer import attributor_for
from .inputs import INPUTS, input_contract, prepare_images
from .memory import chunk_size
from .metrics.evaluate import evaluate as evaluate_batch
from .options import LayerRootOptions, MethodOptions, MetricsOptions, RootOptOptions, RunOptions

__all__ = ["Explanation", "explain", "evaluate", "INPUTS", "input_contract", "prepare_images"]

#: Top-level config keys a keyword may set.
TOP_LEVEL = ("batch_size", "seed", "save_layers")
#: Config groups a keyword names by preset.
GROUPS = ("root_opt", "metrics")


@dataclass
class Explanation:
    """The explanation of a batch of images by one method.

    Attributes
    ----------
    relevance : torch.Tensor
        ``(B, C, H, W)`` relevance of each input value (CPU, float; in logit units for ``output=logit``).
    target : torch.Tensor
        ``(B,)`` long: the explained class of each image.
    logits : torch.Tensor
        ``(B, K)`` the model's outputs.
    target_logit : torch.Tensor
        ``(B,)`` the explained class's logit ``f_c(x)``.
    r_top : torch.Tensor
        ``(B,)`` relevance put on the output (``method.output``).
    layers : pandas.DataFrame
        One row per image and propagated layer (rule-based methods; empty otherwise): ``sample``,
        ``layer``, ``kind``, ``r_out`` (relevance arriving from above), ``r_in`` (leaving towards the
        input), ``error`` (``|r_in - r_out| / |r_out|``), as ``layers.csv`` of a run.
    conservation_error : torch.Tensor
        ``(B,)`` global conservation error ``|sum R - r_top| / |r_top|`` (NaN for maps that are not
        relevance decompositions, e.g. Chefer's).
    worst_layer_error : torch.Tensor
        ``(B,)`` the largest layer-wise conservation error of each image (NaN without layers).
    inputs : torch.Tensor
        ``(B, C, H, W)`` the normalised inputs that were explained (CPU).
    options : dict
        The options used: ``method``, ``root_opt`` (dicts of the option dataclasses), ``input`` (mean,
        std, value_range, resize, crop, pad), ``batch_size``.
    class_names : list of str, optional
        The name of each image's explained class, when ``class_names=`` was given.
    layer_maps : dict
        Module name -> ``(B, ...)`` channel-summed input relevance of the layers in ``save_layers``.
    """

    relevance: torch.Tensor
    target: torch.Tensor
    logits: torch.Tensor
    target_logit: torch.Tensor
    r_top: torch.Tensor
    layers: pd.DataFrame
    conservation_error: torch.Tensor
    worst_layer_error: torch.Tensor
    inputs: torch.Tensor
    options: dict
    class_names: Optional[list] = None
    layer_maps: dict = field(default_factory=dict)

    @property
    def method(self) -> str:
        """The method's name."""
        return self.options["method"]["name"]

    def __len__(self) -> int:
        return int(self.relevance.shape[0])

    def heatmap(self) -> np.ndarray:
        """``(B, H, W)`` float32 NumPy array: the relevance summed over channels (what heatmaps show)."""
        return self.relevance.sum(1).float().numpy()

    def to_numpy(self) -> np.ndarray:
        """``(B, C, H, W)`` float32 NumPy array of the relevance."""
        return self.relevance.float().numpy()


def _format(value) -> str:
    """A Python value as a Hydra override value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{key}:{_format(item)}" for key, item in value.items()) + "}"
    if isinstance(value, str) and (value == "" or any(char in value for char in " ,=[]{}:'\"")):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


def _field_names(kind) -> list[str]:
    return [item.name for item in dataclasses.fields(kind)]


def config_overrides(overrides: Mapping[str, Any], allowed=("method",), function: str = "explain") -> list[str]:
    """Translate keyword overrides into config overrides (see the module's table).

    Parameters
    ----------
    overrides : mapping
        Keyword arguments of :func:`explain` or :func:`evaluate` (``config`` holds raw override strings).
    allowed : tuple of str
        Which groups' parameters are keywords: ``method`` and/or ``metrics``.
    function : str
        For messages.

    Raises
    ------
    TypeError
        A keyword that names no option (with the closest one).
    """
    method_keys = [key for key in _field_names(MethodOptions) if key != "name"] if "method" in allowed else []
    metric_keys = _field_names(MetricsOptions) if "metrics" in allowed else []
    result = []
    for key, value in overrides.items():
        if key == "config":
            items = [value] if isinstance(value, str) else list(value or [])
            result += [str(item) for item in items]
        elif key in GROUPS:
            result.append(f"{key}={value}")
        elif key in method_keys:
            result.append(f"method.{key}={_format(value)}")
        elif key in metric_keys:
            result.append(f"metrics.{key}={_format(value)}")
        elif key in TOP_LEVEL:
            result.append(f"{key}={_format(value)}")
        else:
            known = method_keys + metric_keys + list(TOP_LEVEL) + list(GROUPS) + ["config"]
            match = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {match[0]}?)" if match else ""
            raise TypeError(f"{function}() got an unexpected keyword argument {key!r}{hint}")
    return result


def _input_overrides(preprocess: Preprocess) -> list[str]:
    return [f"model.mean={_format(list(preprocess.mean))}", f"model.std={_format(list(preprocess.std))}",
            f"model.value_range={_format(list(preprocess.value_range))}", f"model.resize={preprocess.resize}",
            f"model.crop={preprocess.crop}", f"model.pad={preprocess.pad}"]


def _model_overrides(model: nn.Module) -> list[str]:
    """The ``model=`` choice the config checks see: a learnroot ViT for transformer methods, else a CNN."""
    from .attribution import architecture
    return ["model=small_vit"] if architecture(model) == "vit" else []


def _options(model: nn.Module, preprocess: Preprocess, method: str, overrides: Mapping, allowed,
             function: str) -> RunOptions:
    return compose_options(*_model_overrides(model), f"method={method}", *_input_overrides(preprocess),
                           *config_overrides(overrides, allowed, function))


def _device_of(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _runnable(model: nn.Module, device) -> nn.Module:
    """The model itself when it is in eval mode on ``device``, else a private copy that is."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if model.training or _device_of(model) != torch.device(device):
        model = copy.deepcopy(model).eval().to(device)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
    return model


def _targets(target, logits: torch.Tensor) -> torch.Tensor:
    count, classes = logits.shape
    if target is None:
        return logits.argmax(1)
    value = torch.as_tensor(target, dtype=torch.long, device=logits.device).reshape(-1)
    if value.numel() == 1:
        value = value.expand(count)
    if value.shape != (count,):
        raise ValueError(f"target must be None, one class or one class per image ({count}), got {value.numel()}")
    if bool(((value < 0) | (value >= classes)).any()):
        raise ValueError(f"target holds classes outside 0 .. {classes - 1}: {value.tolist()}")
    return value


def _layer_rows(start: int, attribution) -> list[dict]:
    rows = []
    for sums, (name, kind, errors) in zip(attribution.layers, conservation.layer_errors(attribution)):
        for offset, (r_out, r_in, error) in enumerate(zip(sums.r_out.tolist(), sums.r_in.tolist(), errors.tolist())):
            rows.append({"sample": start + offset, "layer": name, "kind": kind, "r_out": r_out, "r_in": r_in,
                         "error": error})
    return rows


def explain(model: nn.Module, images, target=None, method: str = "ours", *, input=None, device=None,
            class_names: Optional[Sequence[str]] = None, **overrides) -> Explanation:
    """Explain the model's decisions on ``images`` with one attribution method.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier, ``(B, C, H, W) -> (B, K)`` logits; never modified, hooked or moved.
    images : torch.Tensor, numpy.ndarray, PIL.Image.Image or list of PIL images
        ``(B, C, H, W)`` float inputs **already normalised** as the model expects (``(C, H, W)``: one
        image); ``uint8`` tensors (raw pixels) and PIL images are prepared with ``input``.
    target : None, int, sequence of int or torch.Tensor
        The class to explain: ``None`` the prediction; one class for every image; or one per image.
    method : str
        A method of ``learnroot-run`` (``ours``, ``dtd_zplus``, ``lrp_epsilon``, ``gradient``, ...).
    input : str, dict or Preprocess
        Required: the input contract, i.e. how pixels became the model's input (its pixel box is the
        zB box of the pixel layer): ``"imagenet"``, ``"unit"``, ``"signed"`` (:data:`INPUTS`), or a dict
        with ``mean``, ``std``, ``value_range`` (and ``resize``, ``crop``, ``pad`` for PIL images).
    device : str or torch.device, optional
        Where to run; default the model's own device (a private copy runs elsewhere).
    class_names : sequence of str or str, optional
        The names of the model's outputs, or a class file (``model.classes``' formats: one name per line,
        a JSON list, ``imagenet_class_index.json``), to name each image's explained class.
    **overrides
        Method parameters (``epsilon=0.1``), presets (``root_opt="paper"``), top-level keys
        (``batch_size=4``, ``save_layers=[...]``) and ``config=[...]`` raw overrides (module docstring).

    Returns
    -------
    Explanation

    Raises
    ------
    learnroot.config.ConfigError
        An invalid configuration (the command line's one-line message).
    ValueError, TypeError
        Invalid images, targets, input contract or keywords.
    """
    preprocess = input_contract(input)
    options = _options(model, preprocess, method, overrides, ("method",), "explain")
    device = torch.device(device) if device is not None else _device_of(model)
    own = _runnable(model, device)
    x = prepare_images(images, preprocess).to(device=device, dtype=_dtype_of(own))
    attributor = attributor_for(own, options, preprocess, device)
    parts: dict[str, list] = {name: [] for name in ("relevance", "target", "logits", "target_logit", "r_top",
                                                   "global", "worst")}
    rows, maps = [], {}
    conserving = True
    for start in range(0, len(x), options.batch_size):
        chunk = x[start:start + options.batch_size]
        with torch.no_grad():
            logits = own(chunk)
        chosen = _targets(None if target is None else _slice(target, start, len(chunk), len(x)), logits)
        attribution = attributor(chunk, chosen)
        conserving = conserving and attribution.conserving
        parts["relevance"].append(attribution.relevance.detach().cpu())
        parts["target"].append(chosen.cpu())
        parts["logits"].append(logits.detach().cpu())
        parts["target_logit"].append(attribution.target_logit.detach().cpu())
        parts["r_top"].append(attribution.r_top.detach().cpu())
        parts["global"].append(conservation.global_error(attribution).detach().cpu())
        errors = [errors for _, _, errors in conservation.layer_errors(attribution)]
        parts["worst"].append(_worst(errors, len(chunk)))
        rows += _layer_rows(start, attribution)
        for name, value in attribution.layer_maps().items():
            maps.setdefault(name, []).append(value.detach().cpu())
    joined = {name: torch.cat(values) for name, values in parts.items()}
    if not conserving:
        joined["global"] = torch.full_like(joined["global"], float("nan"))
    names = None
    if isinstance(class_names, (str, Path)):
        class_names = read_classes(str(class_names)).names
    if class_names is not None:
        names = [class_names[index] if 0 <= index < len(class_names) else "" for index in joined["target"].tolist()]
    used = {"method": asdict(options.method), "root_opt": asdict(options.root_opt),
            "input": {"mean": list(preprocess.mean), "std": list(preprocess.std),
                      "value_range": list(preprocess.value_range), "resize": preprocess.resize,
                      "crop": preprocess.crop, "pad": preprocess.pad},
            "batch_size": options.batch_size, "save_layers": list(options.save_layers)}
    return Explanation(relevance=joined["relevance"], target=joined["target"], logits=joined["logits"],
                       target_logit=joined["target_logit"], r_top=joined["r_top"],
                       layers=pd.DataFrame(rows, columns=["sample", "layer", "kind", "r_out", "r_in", "error"]),
                       conservation_error=joined["global"], worst_layer_error=joined["worst"], inputs=x.detach().cpu(),
                       options=used, class_names=names,
                       layer_maps={name: torch.cat(values) for name, values in maps.items()})


def _worst(errors: list, count: int) -> torch.Tensor:
    """``(B,)`` the largest layer-wise error per image, ignoring NaN (0 / 0); NaN without any layer."""
    if not errors:
        return torch.full((count,), float("nan"))
    stacked = torch.stack(errors).detach().cpu().double()
    worst = stacked.nan_to_num(nan=float("-inf"), posinf=float("inf")).amax(0)
    return worst.masked_fill(worst == float("-inf"), float("nan"))


def _slice(target, start: int, size: int, total: int):
    """This batch's part of a per-image ``target`` (a single class is kept)."""
    value = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if value.numel() == 1:
        return value
    if value.numel() != total:
        raise ValueError(f"target must be None, one class or one class per image ({total}), got {value.numel()}")
    return value[start:start + size]


def _dtype_of(model: nn.Module) -> torch.dtype:
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.get_default_dtype()


def evaluate(model: nn.Module, images, explanation: Explanation, metrics: str = "faithfulness", *, labels=None,
             masks=None, ids: Optional[Sequence[str]] = None, device=None, **overrides) -> pd.DataFrame:
    """Score an explanation with the metrics of ``learnroot-run`` (pixel flipping, region perturbation,
    localisation, sanity checks, ...).

    Parameters
    ----------
    model : torch.nn.Module
        The explained classifier (never modified).
    images : torch.Tensor, PIL images or None
        The explained images, as given to :func:`explain` (``None``: ``explanation.inputs``).
    explanation : Explanation
        What :func:`explain` returned for these images.
    metrics : str
        A metrics preset of ``learnroot-run``: ``faithfulness`` (default), ``default``, ``fast``,
        ``sanity``, ``none``.
    labels : sequence of int or torch.Tensor, optional
        ``(B,)`` true classes (``-1``: unknown), for the top-1 correctness of the curves.
    masks : torch.Tensor, optional
        ``(B, H, W)`` object masks (0 background, 1 object, 255 unlabelled) for the localisation scores.
    ids : sequence of str, optional
        Stable ids of the images (seeds of the random region order; default: from the input's bytes).
    device : str or torch.device, optional
        Where to run; default the model's device.
    **overrides
        Metric parameters (``pf_steps=10``), ``batch_size``, ``seed`` and ``config=[...]`` raw overrides.

    Returns
    -------
    pandas.DataFrame
        One row per image: ``sample`` (index), ``id`` (when given), ``target``, then one column per score
        (``morf_auc``, ``aopc_morf_logit``, ...; ``conservation_error`` where the method conserves);
        ``.attrs["curves"]`` holds the curves (as ``curves.csv`` of a run).

    Raises
    ------
    learnroot.config.ConfigError
        An invalid configuration.
    ValueError, TypeError
        Images that are not the explained ones, masks of the wrong shape, unknown keywords.
    """
    preprocess = input_contract(explanation.options["input"])
    method = explanation.options["method"]["name"]
    options = _options(model, preprocess, method, {"metrics": metrics, **overrides}, ("metrics",), "evaluate")
    options = dataclasses.replace(options, method=MethodOptions(**explanation.options["method"]),
                                  root_opt=_root_opt(explanation.options["root_opt"]))
    device = torch.device(device) if device is not None else _device_of(model)
    own = _runnable(model, device)
    x = explanation.inputs if images is None else prepare_images(images, preprocess)
    if tuple(x.shape) != tuple(explanation.relevance.shape):
        raise ValueError(f"images {tuple(x.shape)} are not the explained ones {tuple(explanation.relevance.shape)}")
    x = x.to(device=device, dtype=_dtype_of(own))
    count = len(x)
    label = torch.full((count,), -1, dtype=torch.long) if labels is None else \
        torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if label.shape != (count,):
        raise ValueError(f"labels must hold one class per image ({count})")
    if masks is not None:
        masks = torch.as_tensor(masks)
        if tuple(masks.shape) != (count, *x.shape[2:]):
            raise ValueError(f"masks must have shape {(count, *x.shape[2:])}, got {tuple(masks.shape)}")
    if ids is not None and len(ids) != count:
        raise ValueError(f"ids must name each image ({count})")
    chunk, _ = chunk_size(own, x[:1], options.metrics.pf_chunk)
    metrics_options = dataclasses.replace(options.metrics, pf_chunk=chunk)
    attributor = attributor_for(own, options, preprocess, device)
    rows, curves = [], []
    for start in range(0, count, options.batch_size):
        stop = min(start + options.batch_size, count)
        batch_ids = None if ids is None else list(ids[start:stop])
        result = evaluate_batch(own, x[start:stop], explanation.relevance[start:stop].to(device),
                                explanation.target[start:stop].to(device), label[start:stop].to(device),
                                None if masks is None else masks[start:stop].to(device), metrics_options,
                                preprocess.norm, attributor=attributor, ids=batch_ids)
        for offset in range(stop - start):
            row = {"sample": start + offset}
            if ids is not None:
                row["id"] = ids[start + offset]
            row["target"] = int(explanation.target[start + offset])
            row.update({name: float(values[offset]) for name, values in result.per_sample.items()})
            if options.metrics.conservation and not bool(torch.isnan(explanation.conservation_error).all()):
                row["conservation_error"] = float(explanation.conservation_error[start + offset])
            rows.append(row)
        curves += [{**item, "sample": start + item["sample"]} for item in result.curves]
    frame = pd.DataFrame(rows)
    frame.attrs["curves"] = pd.DataFrame(curves)
    return frame


def _root_opt(values: dict) -> RootOptOptions:
    layers = {kind: LayerRootOptions(**values[kind]) for kind in ("conv", "dense", "pixel")}
    return RootOptOptions(**{**values, **layers})
