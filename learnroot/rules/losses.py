"""Relevance-matching losses of the learned root."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .ssim import SSIMReference, relevance_softmax

__all__ = ["RootLoss", "SCALE_FREE_LOSSES"]

#: Losses that compare only the pattern of response and relevance (invariant to their scales).
SCALE_FREE_LOSSES = ("cosine", "kl")
#: Floor on the response shares of the ``kl`` loss, as a fraction of the mean share.
KL_FLOOR = 1e-6


class RootLoss:
    """Relevance-matching loss between a layer's response and the relevance arriving from above.

    A small configured callable ``(response, relevance) -> (B,)``. Each loss is a sum over the
    sample's elements of an elementwise term, so a sample's value (and gradient) never depends on
    the rest of the batch, and the gradient of one element does not shrink with the layer's width:

    - ``mse``: ``sum (z - R)^2``
    - ``l1``: ``sum |z - R|``
    - ``hinge``: PyTorch's hinge-embedding loss (margin 1) with targets ``sign(R)``: ``z`` where
      ``R > 0``, ``max(0, 1 - z)`` where ``R < 0``; neurons with ``R = 0`` carry no target and add 0.
    - ``ssim``: ``sum (1 - ssim_map(z, R))`` = ``N (1 - SSIM)`` over the ``N`` positions of the map,
      with ``L = max(R) - min(R)`` per sample (at least the dtype's epsilon) as the data range.

    Two losses compare only the *pattern* of response and relevance, so that their units (the
    layer's activation units and the logit's) cancel and the loss does not change when the network
    is rescaled without changing its function (``docs/METHOD.md``, section 2):

    - ``cosine``: ``1 - <z, R> / (|z| |R|)`` over the sample's elements (0 when the response points
      along the relevance, whatever the scales);
    - ``kl``: ``KL(pi || p) = sum pi log(pi / p)`` between the relevance shares ``pi = |R| / sum |R|``
      and the response shares ``p = z+ / sum z+`` (``z+ = max(z, 0)``), with a floor of ``1e-6``
      times the mean share on ``p`` so that a silent neuron costs a finite amount.

    Parameters
    ----------
    name : str
        One of ``mse``, ``l1``, ``hinge``, ``ssim``, ``cosine``, ``kl``.
    softmax : bool
        Compare :func:`relevance_softmax` of response and relevance (as the paper's code does).
    paper_quirks : bool
        Reproduce the paper's code: SSIM enters as ``+SSIM`` (the descent moves the response *away*
        from the relevance map), the hinge loss takes the raw relevances as its "+-1" targets
        (every target that is neither 1 nor -1 gives ``z + max(0, 1 - z)``), and every loss is the
        mean over the sample's elements instead of the sum (the paper's code averages with batch
        size 1).
    """

    def __init__(self, name: str = "mse", softmax: bool = False, paper_quirks: bool = False):
        if not callable(getattr(self, "_" + str(name), None)):
            raise ValueError(f"unknown root loss {name!r}")
        self.name = name
        self.softmax = softmax
        self.paper_quirks = paper_quirks

    def __repr__(self) -> str:
        return f"RootLoss({self.name!r}, softmax={self.softmax}, paper_quirks={self.paper_quirks})"

    def __call__(self, response: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        """Per-sample loss.

        Parameters
        ----------
        response : torch.Tensor
            ``(B, ...)`` layer response ``W'^T s`` (differentiable).
        relevance : torch.Tensor
            ``(B, ...)`` relevance from above, same shape (treated as a constant).

        Returns
        -------
        torch.Tensor
            ``(B,)`` loss values.
        """
        return self.against(relevance)(response)

    def against(self, relevance: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The loss as a function of the response alone, for a fixed relevance.

        What depends only on the relevance (its softmax, signs, SSIM statistics) is computed here,
        once, instead of at every descent step.

        Parameters
        ----------
        relevance : torch.Tensor
            ``(B, ...)`` relevance from above (treated as a constant).

        Returns
        -------
        callable
            ``response (B, ...) -> (B,)`` loss values, equal to ``self(response, relevance)``.
        """
        relevance = relevance.detach()
        if self.softmax:
            relevance = relevance_softmax(relevance)
        term = getattr(self, "_" + self.name)(relevance)
        reduce = (lambda t: t.mean(dim=1)) if self.paper_quirks else (lambda t: t.sum(dim=1))

        def loss(response: torch.Tensor) -> torch.Tensor:
            if self.softmax:
                response = relevance_softmax(response)
            return reduce(term(response).flatten(1))

        if self.name == "ssim":
            loss.value_and_gradient = self._ssim_gradient(term)
        return loss

    def _ssim_gradient(self, term) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """``response -> (loss (B,), dloss/dresponse)`` of the SSIM loss without autograd
        (:meth:`SSIMReference.value_and_gradient`, the softmax included)."""
        reference = term if isinstance(term, SSIMReference) else term.reference

        def value_and_gradient(response: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            count = response[0].numel()
            # quirks: mean(SSIM), d/dSSIM = 1 / N; else sum(1 - SSIM), d/dSSIM = -1
            weight = torch.full((response.shape[0],), 1.0 / count if self.paper_quirks else -1.0,
                                dtype=response.dtype, device=response.device)
            total, gradient = reference.value_and_gradient(response, weight, softmax=self.softmax)
            return (total / count if self.paper_quirks else count - total), gradient

        return value_and_gradient

    @staticmethod
    def _mse(relevance):
        return lambda response: (response - relevance) ** 2

    @staticmethod
    def _l1(relevance):
        return lambda response: (response - relevance).abs()

    def _hinge(self, relevance):
        if self.paper_quirks:
            return lambda response: F.hinge_embedding_loss(response, relevance, margin=1.0, reduction="none")
        sign, labelled = relevance.sign(), relevance != 0
        return lambda response: F.hinge_embedding_loss(response, sign, margin=1.0, reduction="none") * labelled

    def _ssim(self, relevance):
        flat = relevance.flatten(1)
        data_range = (flat.amax(dim=1) - flat.amin(dim=1)).clamp(min=torch.finfo(flat.dtype).eps)
        reference = SSIMReference(relevance, data_range)
        if self.paper_quirks:
            return reference

        def term(response):
            return 1 - reference(response)
        term.reference = reference
        return term

    @staticmethod
    def _cosine(relevance):
        flat = relevance.flatten(1)
        tiny = torch.finfo(flat.dtype).tiny
        direction = flat / flat.norm(dim=1, keepdim=True).clamp(min=tiny)

        def term(response):
            z = response.flatten(1)
            return (1 - (z * direction).sum(dim=1) / z.norm(dim=1).clamp(min=tiny))[:, None]
        return term

    @staticmethod
    def _kl(relevance):
        magnitude = relevance.flatten(1).abs()
        share = magnitude / magnitude.sum(dim=1, keepdim=True).clamp(min=torch.finfo(magnitude.dtype).tiny)
        entropy = torch.special.xlogy(share, share).sum(dim=1, keepdim=True)
        floor = KL_FLOOR / share.shape[1]

        def term(response):
            z = response.flatten(1).clamp(min=0)
            p = z / z.sum(dim=1, keepdim=True).clamp(min=torch.finfo(z.dtype).tiny)
            return entropy - (share * torch.log(p + floor)).sum(dim=1, keepdim=True)
        return term
