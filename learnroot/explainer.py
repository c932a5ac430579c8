"""The building blocks that ``learnroot-run`` (:mod:`learnroot.runner`) and the Python API
(:mod:`learnroot.api`) share, so that both explain a model the same way.

- :func:`attributor_for`: a model, the run's options and the model's input contract -> the method's
  attributor (the zB box from the input contract, the layers to keep);
- :func:`explained_targets`: logits and labels -> the class each sample's explanation is for;
- :func:`with_model_classes`: the dataset options with ``model.classes`` as the class-index file of
  ImageNet-style folders (when ``dataset.class_index`` is not set).

Knows nothing of Hydra.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable

import torch
from torch import nn

from .attribution import make_attributor
from .data.images import Preprocess
from .options import RunOptions

log = logging.getLogger(__name__)

__all__ = ["attributor_for", "explained_targets", "with_model_classes"]


def attributor_for(model: nn.Module, options: RunOptions, preprocess: Preprocess, device) -> Callable:
    """The attributor of ``options.method`` (with ``options.root_opt``) on ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier on ``device`` (copied by :func:`~learnroot.attribution.make_attributor`, never
        modified).
    options : RunOptions
        ``method``, ``root_opt`` and ``save_layers`` (the layers whose maps are kept).
    preprocess : Preprocess
        The model's input contract; its pixel box, normalised, is the zB box of the pixel layer.
    device : torch.device or str
        Where the box lives (the model's device).

    Returns
    -------
    callable
        ``attributor(x, target) -> Attribution``.
    """
    box = preprocess.box(device)
    return make_attributor(model, options.method, options.root_opt, box, keep_layers=options.save_layers)


def explained_targets(logits: torch.Tensor, label: torch.Tensor, mode: str) -> torch.Tensor:
    """The class each sample is explained for.

    Parameters
    ----------
    logits : torch.Tensor
        ``(B, K)`` model outputs.
    label : torch.Tensor
        ``(B,)`` long true classes (``-1``: unknown).
    mode : str
        ``label`` (``method.target=label``: the label, the prediction where it is unknown) or
        ``prediction``.

    Returns
    -------
    torch.Tensor
        ``(B,)`` long.
    """
    use_label = mode == "label"
    if use_label and bool((label < 0).any()):
        log.warning("some samples have no label: explaining the prediction for those")
    return torch.where(use_label & (label >= 0), label, logits.argmax(1))


def with_model_classes(options: RunOptions) -> RunOptions:
    """``options`` with ``dataset.class_index`` set to ``model.classes`` when only the latter is given, so that
    an ImageNet-style folder whose class folders are named by the model's class names (or ids) gets the
    model's output indices as labels."""
    if options.model.classes and not options.dataset.class_index:
        return replace(options, dataset=replace(options.dataset, class_index=options.model.classes))
    return options
