"""Relevance conservation: recording per-layer relevance sums, global and layer-wise errors.

Recording is a thin wrapper around each rule hook's ``backward``: :class:`Recorded` is a hook
template (what a zennit composite's ``module_map`` returns) whose ``copy()`` hands zennit a copy of
the real hook with its ``backward`` wrapped, so the sum of ``grad_output[0]`` (relevance arriving
from above) and of the returned relevance (leaving towards the input; towards all inputs of a layer
with several, such as a concatenation) are recorded per sample. It
touches no other part of zennit's hook machinery, so it works with zennit 0.5.1 and 1.0.

Layers asked for by name (``keep=True``, the runner's ``save_layers``) also keep the returned
relevance itself, summed over channels (:func:`channel_map`): the layer-wise relevance maps.
Other layers keep only the two sums, so runs that ask for no map pay nothing for the option.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Optional

import torch

__all__ = ["LayerSums", "Recorded", "channel_map", "per_sample_sum", "global_error", "layer_errors", "nonfinite"]


@dataclass
class LayerSums:
    """Relevance sums of one propagated layer (one entry per call of the module, backward order).

    Attributes
    ----------
    name : str
        Module name in the model (``named_modules``), e.g. ``features.28``; a layer the graph canonizer made
        explicit is named after its place (``layer1.0.add``, ``features.denseblock1.denselayer2.cat``).
    kind : str
        ``conv``, ``dense``, ``pool``, ``sum``, ``concat``, ``gate``, ``scale``, ``shortcut``, ``activation`` or
        ``batchnorm`` (:func:`learnroot.rules.layers.layer_kind`).
    r_out : torch.Tensor
        ``(B,)`` sum of the relevance arriving from above (output side).
    r_in : torch.Tensor
        ``(B,)`` sum of the relevance leaving towards the input.
    relevance : torch.Tensor, optional
        The relevance leaving towards the input (the first input of a layer with several, such as a
        concatenation), summed over channels (:func:`channel_map`); only for layers recorded with ``keep=True``.
    """

    name: str
    kind: str
    r_out: torch.Tensor
    r_in: torch.Tensor
    relevance: Optional[torch.Tensor] = None


def channel_map(relevance: torch.Tensor) -> torch.Tensor:
    """The relevance of a layer input summed over channels: ``(B, C, *S) -> (B, *S)`` for spatial inputs;
    ``(B, F)`` vectors are returned as they are."""
    return relevance.sum(dim=1) if relevance.dim() > 2 else relevance


def per_sample_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over all but the first (batch) dimension: ``(B, ...) -> (B,)``."""
    return tensor.reshape(tensor.shape[0], -1).sum(dim=1)


def _first(values) -> torch.Tensor:
    return next(value for value in values if value is not None)


def _leaving_sum(values) -> torch.Tensor:
    """``(B,)`` relevance leaving towards all inputs of a layer (a concatenation has several)."""
    present = [value for value in values if value is not None]
    total = per_sample_sum(present[0])
    for value in present[1:]:
        total = total + per_sample_sum(value)
    return total


class Recorded:
    """Hook template that records the relevance sums of every copy of ``hook``.

    Parameters
    ----------
    hook : zennit.core.Hook
        The rule template.
    name, kind : str
        Recorded with the sums (see :class:`LayerSums`).
    sink : list
        Receives one :class:`LayerSums` per backward call.
    keep : bool
        Also keep the channel-summed relevance leaving towards the input (``LayerSums.relevance``).
    """

    def __init__(self, hook, name: str, kind: str, sink: list, keep: bool = False):
        self.hook = hook
        self.name = name
        self.kind = kind
        self.sink = sink
        self.keep = keep

    def copy(self):
        """A copy of the wrapped hook whose ``backward`` also records the sums."""
        hook = self.hook.copy()
        backward = type(hook).backward
        reference = weakref.ref(hook)  # no reference cycle hook -> wrapper -> hook
        name, kind, sink, keep = self.name, self.kind, self.sink, self.keep

        def recorded(module, grad_input, grad_output):
            result = backward(reference(), module, grad_input, grad_output)
            leaving = grad_input if result is None else result
            sink.append(LayerSums(name, kind, per_sample_sum(grad_output[0]).detach(),
                                  _leaving_sum(leaving).detach(),
                                  channel_map(_first(leaving).detach()) if keep else None))
            return result

        hook.backward = recorded
        return hook


def global_error(attr) -> torch.Tensor:
    """Global conservation error ``|sum_pixels R - r_top| / |r_top|``.

    Parameters
    ----------
    attr : Attribution
        Needs ``relevance`` ``(B, ...)`` and ``r_top`` ``(B,)``.

    Returns
    -------
    torch.Tensor
        ``(B,)`` relative error (dimensionless); inf/NaN where ``r_top`` is 0.
    """
    return (per_sample_sum(attr.relevance) - attr.r_top).abs() / attr.r_top.abs()


def layer_errors(attr) -> list[tuple[str, str, torch.Tensor]]:
    """Layer-wise conservation errors ``|r_in - r_out| / |r_out|``, in backward order.

    Parameters
    ----------
    attr : Attribution
        Needs ``layers`` (list of :class:`LayerSums`).

    Returns
    -------
    list of (str, str, torch.Tensor)
        ``(name, kind, error (B,))`` per recorded layer; inf/NaN where ``r_out`` is 0.
    """
    return [(layer.name, layer.kind, (layer.r_in - layer.r_out).abs() / layer.r_out.abs())
            for layer in attr.layers]


def nonfinite(relevance: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: True where a sample's relevance map holds NaN or inf anywhere."""
    return ~torch.isfinite(relevance).reshape(relevance.shape[0], -1).all(dim=1)
