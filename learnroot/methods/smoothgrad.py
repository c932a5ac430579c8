"""SmoothGrad (Smilkov et al. 2017): the input gradient averaged over noisy copies of the input.

``R = mean_k d f_c / d x (x + e_k)``, ``k = 1 .. smoothgrad_n``, with ``e_k ~ N(0, s^2)`` and
``s = smoothgrad_sigma * (max x - min x)`` (per image, in the model's input units; Smilkov et al.
recommend 10-20 % of the input range); ``smoothgrad_times_input`` multiplies the mean gradient by
``x`` (SmoothGrad x input). The noise of a sample is drawn from its own generator, seeded with
``smoothgrad_seed`` and a hash of the sample's input (:func:`learnroot.seeds.sample_seeds`), so a
sample's map does not depend on the batch it is explained in, and the same image explained again
(a second class, a randomised model) gets the same noise. Cost: ``smoothgrad_n`` forward and
backward passes, plus one forward pass for the logits at ``x``.
"""
from __future__ import annotations

from ..lazy import torch
from ..params import Param
from ..seeds import sample_generators
from .registry import Method, register

__all__ = ["smoothgrad"]

SMOOTHGRAD_N = Param("smoothgrad_n", int, 16, "SmoothGrad: noisy copies per image", min=1)
SMOOTHGRAD_SIGMA = Param("smoothgrad_sigma", float, 0.15, "SmoothGrad: noise standard deviation as a fraction of "
                         "each image's value range (max - min of the input)", above=0)
SMOOTHGRAD_SEED = Param("smoothgrad_seed", int, 0, "SmoothGrad: seed of the noise (with a hash of each input)")
SMOOTHGRAD_TIMES_INPUT = Param("smoothgrad_times_input", bool, False,
                               "SmoothGrad: multiply the mean gradient by the input")


def smoothgrad(model, x, index, options):
    """``(mean_k grad f_c(x + e_k) [* x], logits at x)`` for a batch ``x`` ``(B, ...)`` and targets ``index`` ``(B, 1)``."""
    x = x.detach()
    spread = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, *(1,) * (x.dim() - 1))
    count = options.smoothgrad_n
    noise = torch.stack([torch.randn((count, *x.shape[1:]), generator=generator, dtype=x.dtype)
                         for generator in sample_generators(options.smoothgrad_seed, x)]).to(x.device)
    total = torch.zeros_like(x)
    for copy in range(count):  # one batched forward and backward pass per noisy copy
        inputs = (x + options.smoothgrad_sigma * spread * noise[:, copy]).requires_grad_(True)
        gradient, = torch.autograd.grad(model(inputs).gather(1, index).sum(), inputs)
        total += gradient
    with torch.no_grad():
        logits = model(x)
    mean = total / count
    return (mean * x if options.smoothgrad_times_input else mean), logits


register(Method("smoothgrad", "gradient", "SmoothGrad: the input gradient averaged over noisy copies "
                "(Smilkov et al. 2017)", gradient=smoothgrad,
                params=(SMOOTHGRAD_N, SMOOTHGRAD_SIGMA, SMOOTHGRAD_SEED, SMOOTHGRAD_TIMES_INPUT)))
