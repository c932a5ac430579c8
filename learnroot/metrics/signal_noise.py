"""Signal / root test (the paper's ``f_noise_eval.py``): does the root carry class evidence?

DTD explains ``f_c(x)`` by a first-order expansion at a root ``r``; the relevance is spread over the
*signal* ``x - r``. A good root holds none of the evidence for ``c``: the model should not classify
``r`` as ``c`` and ``f_c(r)`` should be low, while the signal keeps the evidence.

Which root
    Only a method with **one** root for the whole input at the pixel layer has a pixel-level root:
    ``ours`` with ``root_opt.pixel_layer=learned``, whose learned root (inside the pixel box) is shared
    by every output neuron of the first layer (:attr:`learnroot.attribution.Attribution.pixel_root`).
    zB has no single root: each output neuron ``j`` of the first layer has its own (the box corner
    ``l`` where ``w_ij > 0``, ``h`` where ``w_ij < 0``), so "the" root of the input is undefined and we do
    not invent a mixture. Every other method, or a model whose first affine layer does not see the
    input itself, gets NaN (with a warning saying why).

Scores
    ``signal_logit`` ``f_c(x - r)`` and ``root_logit`` ``f_c(r)`` (logits of the explained class ``c``),
    ``signal_kept`` / ``root_kept`` (1 where the model's top class on ``x - r`` / ``r`` is ``c``).
    Higher ``signal_*`` and lower ``root_*`` are better. ``x - r`` and ``r`` are fed to the model as
    they are (normalised inputs; ``r`` lies in the pixel box, ``x - r`` need not).

Cost: two forward passes per sample (the root comes from the run's own attribution).

Deviations from the paper's code: as shipped it cannot run (``get_noise()`` returns ``None``: the
root is never stored), and its stored ``f(x)`` and ``f(signal)`` values gather class 0 of the
signal's output instead of the target (``fx_else``, ``fs_else``); we record the explained class's
logits of both inputs.
"""
from __future__ import annotations

import warnings

from learnroot.lazy import torch

from learnroot.metrics.registry import Metric, Score, register, switch

__all__ = ["signal_noise_scores", "compute_signal_noise"]


def signal_noise_scores(model, x: torch.Tensor, root: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """The logits of ``target`` on the signal ``x - root`` and on the root, and whether each is classified as it.

    Parameters
    ----------
    model : torch.nn.Module
        ``(M, C, H, W) -> (M, K)``.
    x, root : torch.Tensor
        ``(B, C, H, W)`` normalised input and its pixel-level root.
    target : torch.Tensor
        ``(B,)`` long explained class.

    Returns
    -------
    dict of str to torch.Tensor
        ``signal_logit``, ``root_logit``, ``signal_kept``, ``root_kept``: ``(B,)`` float64.
    """
    with torch.no_grad():
        logits = model(torch.cat([x - root, root])).double()
    index = torch.cat([target, target]).view(-1, 1)
    value = logits.gather(1, index)[:, 0]
    kept = (logits.argmax(1) == index[:, 0]).double()
    batch = x.shape[0]
    return {"signal_logit": value[:batch], "root_logit": value[batch:],
            "signal_kept": kept[:batch], "root_kept": kept[batch:]}


def compute_signal_noise(context) -> tuple[dict, dict]:
    """The signal / root scores of a batch; NaN (with a warning) without a pixel-level root."""
    root = getattr(context.attribution, "pixel_root", None)
    if root is None:
        warnings.warn("signal_noise: the method has no single pixel-level root (only ours with "
                      "root_opt.pixel_layer=learned has one; zB has one root per output neuron): NaN",
                      RuntimeWarning, stacklevel=2)
        nan = torch.full((context.x.shape[0],), float("nan"), dtype=torch.float64, device=context.x.device)
        return {name: nan for name in ("signal_logit", "root_logit", "signal_kept", "root_kept")}, {}
    return signal_noise_scores(context.model, context.x, root.to(context.x), context.target), {}


register(Metric(
    "signal_noise",
    (Score("root_logit", "lower", "sanity", True, "logit of the explained class on the pixel root r alone"),
     Score("root_kept", "lower", "sanity", True, "the model still predicts the explained class on r"),
     Score("signal_logit", "higher", "sanity", False, "logit of the explained class on the signal x - r"),
     Score("signal_kept", "higher", "sanity", True, "the model still predicts the explained class on x - r")),
    params=(switch("signal_noise", False, "signal / root test: f_c(x - r) and f_c(r) for a method with one pixel "
                   "root r"),),
    compute=compute_signal_noise,
    cost="two forward passes per sample (the root is the run's own)"))
