"""Explanation-guided sparse attack (the paper's ``adversarial_attacks.py``), batched.

A more faithful explanation points at the inputs the model's decision rests on, so changing only
the positions it ranks highest should flip the decision with fewer and smaller changes.

Protocol
    The attacked class ``c`` is the label (the prediction where the label is unknown); only samples
    the model classifies as ``c`` are attacked (the others get NaN). The attack works on raw pixel
    values as fractions of the value range, ``u = (x * std + mean - low) / (high - low)``, so budgets
    and steps mean the same for every normalisation. Starting from ``u_0``, at most ``attack_steps``
    times:

    1. rank the pixel positions by the channel-sum relevance map of ``c`` at the current image (the
       run's own map before the first step; explained again with the run's method before every later
       step when ``attack_reexplain``, else the first map throughout);
    2. take the gradient ``g`` of the cross-entropy loss of ``c`` with respect to ``u``;
    3. step only at the ``k`` top-ranked positions (all channels):
       ``linf``: ``delta += step * sign(g)``; ``l2``: ``delta += step * g_k / ||g_k||_2`` with ``g_k`` the
       gradient restricted to those positions;
    4. project ``delta`` onto the budget (``linf``: ``|delta| <= epsilon`` per value; ``l2``:
       ``||delta||_2 <= epsilon`` over the image; ``attack_epsilon=null``: no budget, as the paper's
       shipped L2 attack) and ``u_0 + delta`` onto the valid box ``[0, 1]``;
    5. stop for this sample once the model no longer predicts ``c``.

    ``k = max(1, round(attack_k * H * W / 224^2))`` (``attack_k`` positions at 224 x 224 px). Ties in the
    ranking keep row-major order (stable sort), as in pixel flipping.

Scores (per attacked sample)
    ``attack_success`` (1 if the label flipped), ``attack_iterations`` (steps taken until it flipped;
    ``attack_steps`` when it did not: a censored count, comparable across methods),
    ``attack_perturbation`` (final ``||delta||`` in the budget's norm, fractions of the value range).
    With ``attack_random`` the same attack ranks the positions by a random score instead
    (``attack_random_*``): drawn from a CPU generator seeded with ``seed`` and the step, one draw per
    ranking (a new one before every step when re-explaining), shared by every sample, so results do
    not depend on the batch. ``attack_advantage`` = random iterations - guided iterations (per sample,
    higher is better: how many steps the explanation saves over a random choice of positions).

    Pixels at the edge of the value range cannot move outwards: where the top-ranked positions are
    saturated (MNIST strokes and background) the box stops the step there and the attack stalls on
    them (as the paper's clamp to [-1, 1] does); the random control meets the same box.

Cost per attacked sample and step taken: one forward and one backward pass of the model (the
forward also checks the prediction of the previous step), plus one attribution when re-explaining;
the random control adds one forward and one backward pass per step. Samples stop when they flip.

Deviations from the paper's code (``adversarial_attacks.py``, see the research notes), all deliberate:

* its L2 branch computes a projection but never applies it (``x = origin + d``), so the shipped
  attack has no budget at all; we project onto the configured budget;
* it ranks the 3 colour channels separately (top ``k`` per channel of the per-sample min-max-scaled,
  mean-cropped relevance); we rank positions by the channel-sum map (the map every other metric
  uses) and perturb all channels of a chosen position. Mean-cropping changes the ranking only when
  fewer than ``k`` values exceed the mean (its code then picks among tied zeros arbitrarily);
* its loss is ``cross_entropy(softmax(logits), softmax(onehot))`` (a double softmax against a soft
  target); we use the cross-entropy of the logits against ``c``;
* its L2 step normalises the gradient over the whole image (``alpha = 1`` on the [-1, 1] scale) and
  then keeps only the ``k`` positions, so the step's length depends on how much gradient lies
  elsewhere; ours normalises over the perturbed positions, so ``attack_step`` is the step's length;
* its budget ``epsilon = 0.05`` is on its [-1, 1] input scale: 0.025 of the value range here;
* it explains the *predicted* class (equal to ``c`` while the attack runs) and counts iterations
  over successful samples only; we report the censored count for every attacked sample (the mean
  over successes follows from the per-sample table).
"""
from __future__ import annotations

from typing import Optional

import math

from learnroot.lazy import F, torch

from learnroot.metrics.registry import SEED, Metric, Score, register, switch
from learnroot.params import Param

__all__ = ["REFERENCE_SIDE", "attack_positions", "sparse_attack", "compute_attack"]

#: Image side at which ``attack_k`` positions are perturbed (the paper's 224 x 224 px).
REFERENCE_SIDE = 224


def attack_positions(k: int, height: int, width: int) -> int:
    """Positions perturbed per step: ``max(1, round(k * H * W / 224^2))``, at most ``H * W``."""
    return min(height * width, max(1, int(math.floor(k * height * width / REFERENCE_SIDE ** 2 + 0.5))))


def _to_fraction(x: torch.Tensor, norm) -> torch.Tensor:
    mean, std = norm.stats(x)
    low, high = norm.value_range
    return (x * std + mean - low) / (high - low)


def _to_input(u: torch.Tensor, norm) -> torch.Tensor:
    mean, std = norm.stats(u)
    low, high = norm.value_range
    return (u * (high - low) + low - mean) / std


def _top_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """``(n, H*W)`` bool: the ``k`` highest scores of each row (stable: ties in row-major order)."""
    order = torch.sort(scores.flatten(1), dim=1, descending=True, stable=True).indices[:, :k]
    return torch.zeros_like(scores.flatten(1), dtype=torch.bool).scatter_(1, order, True)


def _norm(delta: torch.Tensor, kind: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(1) if kind == "linf" else flat.norm(dim=1)


def _project(delta: torch.Tensor, kind: str, epsilon: Optional[float]) -> torch.Tensor:
    if epsilon is None:  # no budget (the paper's L2 attack as shipped)
        return delta
    if kind == "linf":
        return delta.clamp(-epsilon, epsilon)
    length = _norm(delta, "l2").view(-1, *(1,) * (delta.dim() - 1))
    return delta * torch.where(length > epsilon, epsilon / length.clamp(min=1e-300), 1.0)


def sparse_attack(model, x: torch.Tensor, cls: torch.Tensor, attacked: torch.Tensor, ranking, k: int,
                  norm, kind: str = "linf", epsilon: Optional[float] = 0.025, step: float = 0.005,
                  steps: int = 30) -> dict[str, torch.Tensor]:
    """Run the sparse attack on a batch (see the module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        ``(M, C, H, W) -> (M, K)`` logits, in eval mode.
    x : torch.Tensor
        ``(B, C, H, W)`` normalised inputs.
    cls : torch.Tensor
        ``(B,)`` long attacked class.
    attacked : torch.Tensor
        ``(B,)`` bool: samples to attack (classified as ``cls``).
    ranking : callable
        ``(step, index, x_current) -> (n, H, W)`` scores of the positions of samples ``index`` (long
        ``(n,)``) at their current normalised inputs ``x_current`` ``(n, C, H, W)``, before step ``step``
        (``1 .. steps``); higher is perturbed first.
    k : int
        Positions per step.
    norm : Normalisation
        How ``x`` was normalised.
    kind : str
        ``linf`` or ``l2``.
    epsilon, step : float
        Budget and step length (fractions of the value range); ``epsilon=None``: no budget.
    steps : int
        Most steps.

    Returns
    -------
    dict of str to torch.Tensor
        ``success``, ``iterations``, ``perturbation``: ``(B,)`` float64, NaN where not attacked.
    """
    if kind not in ("linf", "l2"):
        raise ValueError(f"attack norm must be linf or l2, got {kind!r}")
    origin = _to_fraction(x.detach(), norm)
    delta = torch.zeros_like(origin)
    active = attacked.clone()
    success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    iterations = torch.full((x.shape[0],), float(steps), dtype=torch.float64, device=x.device)
    for taken in range(steps + 1):
        index = active.nonzero()[:, 0]
        if index.numel() == 0:
            break
        with torch.enable_grad():
            current = (origin[index] + delta[index]).requires_grad_(True)
            logits = model(_to_input(current, norm))
            if taken > 0:  # the prediction after the previous step
                flipped = logits.argmax(1) != cls[index]
                success[index[flipped]] = True
                iterations[index[flipped]] = float(taken)
                active[index[flipped]] = False
                keep = ~flipped
            else:
                keep = torch.ones_like(index, dtype=torch.bool)
            if taken == steps or not bool(keep.any()):
                break
            loss = F.cross_entropy(logits[keep], cls[index[keep]], reduction="sum")
            gradient, = torch.autograd.grad(loss, current)
        index, gradient = index[keep], gradient[keep].detach()
        scores = ranking(taken + 1, index, _to_input(origin[index] + delta[index], norm))
        scores = torch.nan_to_num(scores.double(), nan=0.0, posinf=0.0, neginf=0.0)
        chosen = _top_mask(scores, k).view(-1, 1, *x.shape[2:]).to(gradient.dtype)
        masked = gradient * chosen
        if kind == "linf":
            direction = masked.sign()
        else:
            length = _norm(masked, "l2").view(-1, 1, 1, 1)
            direction = torch.where(length > 0, masked / length.clamp(min=1e-300), 0.0)
        moved = _project(delta[index] + step * direction, kind, epsilon)
        delta[index] = (origin[index] + moved).clamp(0.0, 1.0) - origin[index]
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=x.device)
    return {"success": torch.where(attacked, success.double(), nan),
            "iterations": torch.where(attacked, iterations, nan),
            "perturbation": torch.where(attacked, _norm(delta, kind).double(), nan)}


def _random_scores(seed: int, draw: int, shape: tuple, device) -> torch.Tensor:
    """``shape`` ``(H, W)`` uniform scores from a CPU generator seeded with ``seed`` and ``draw``."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed) * 1_000_003 + int(draw))
    return torch.rand(shape, generator=generator, dtype=torch.float64).to(device)


def compute_attack(context) -> tuple[dict, dict]:
    """The attack guided by the run's method and, with ``attack_random``, by a random ranking."""
    options = context.options
    x, height, width = context.x, context.x.shape[2], context.x.shape[3]
    with torch.no_grad():
        prediction = context.model(x).argmax(1)
    cls = torch.where(context.label >= 0, context.label, prediction)
    # the run explained context.target; a correctly classified sample's target is cls under either setting
    attacked = (prediction == cls) & (context.target == cls) & context.finite
    k = attack_positions(options.attack_k, height, width)
    settings = dict(k=k, norm=context.norm, kind=options.attack_norm, epsilon=options.attack_epsilon,
                    step=options.attack_step, steps=options.attack_steps)
    attributor = context.attributor
    if options.attack_reexplain and attributor is None:
        raise ValueError("metrics.attack_reexplain needs the method's attributor")

    def explained(taken, index, current):
        if taken == 1 or not options.attack_reexplain:
            return context.map2d[index]
        return attributor(current, cls[index]).relevance.detach().sum(1)

    scores = {}
    result = sparse_attack(context.model, x, cls, attacked, explained, **settings)
    scores.update({f"attack_{name}": value for name, value in result.items()})
    if options.attack_random:
        def random(taken, index, current):
            draw = taken if options.attack_reexplain else 1
            return _random_scores(options.seed, draw, (height, width), x.device).expand(len(index), -1, -1)

        result = sparse_attack(context.model, x, cls, attacked, random, **settings)
        scores.update({f"attack_random_{name}": value for name, value in result.items()})
        scores["attack_advantage"] = scores["attack_random_iterations"] - scores["attack_iterations"]
    return scores, {}


register(Metric(
    "attack",
    (Score("attack_success", "higher", "faithfulness", True,
           "explanation-guided sparse attack: the label flipped within the budget"),
     Score("attack_iterations", "lower", "faithfulness", True,
           "attack steps until the label flipped (attack_steps when it did not)"),
     Score("attack_perturbation", "lower", "faithfulness", False,
           "final perturbation norm of the attack (fraction of the value range)"),
     Score("attack_random_success", None, "faithfulness", False, "the attack with a random ranking: label flipped"),
     Score("attack_random_iterations", None, "faithfulness", False, "the attack with a random ranking: steps"),
     Score("attack_random_perturbation", None, "faithfulness", False,
           "the attack with a random ranking: final perturbation norm"),
     Score("attack_advantage", "higher", "faithfulness", True,
           "attack steps the explanation saves over a random ranking (random - guided iterations)")),
    params=(
        switch("attack", False, "explanation-guided sparse attack: perturb the top-ranked positions until the label "
               "flips"),
        Param("attack_k", int, 500, "positions perturbed per step at 224 x 224 pixels, scaled with the image area "
              "(the paper: 500)", min=1),
        Param("attack_norm", str, "linf", "linf (sign steps, |delta| <= epsilon per value) or l2 (normalised steps, "
              "||delta||_2 <= epsilon)", choices=("linf", "l2")),
        Param("attack_epsilon", Optional[float], 0.025, "budget as a fraction of the raw value range (the paper: 0.05 "
              "on [-1, 1]); null: no budget (the paper's L2 attack as its code runs)", above=0),
        Param("attack_step", float, 0.005, "length of one step, same units", above=0),
        Param("attack_steps", int, 30, "most steps (the paper: 30)", min=1),
        Param("attack_reexplain", bool, True, "explain the perturbed image again before every step (the paper)"),
        Param("attack_random", bool, True, "the same attack with a random ranking, as a control"),
        SEED,
    ),
    compute=compute_attack,
    cost="per correctly classified sample and step taken (at most attack_steps): one forward and one backward "
         "pass, plus one attribution when attack_reexplain; the random control one more forward and backward"))
