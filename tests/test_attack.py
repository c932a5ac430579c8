"""The explanation-guided sparse attack against hand-computed outcomes on a linear two-class model.

The model: ``f_0(x) = sum_i w_i x_i``, ``f_1 = b`` (a constant), one channel, 4 x 4 pixels, normalisation
mean 0, std 1, values in [0, 1] (so the attack's units are the input's). ``w = 1`` at the flat pixels
1, 6, 9, 14 and 0 elsewhere; ``x = 0.5`` everywhere, so ``f_0 = 2`` and class 0 is predicted while
``b < 2``. The cross-entropy gradient of class 0 is ``(p_0 - 1) w``: an ascent step lowers the four
weighted pixels and leaves the others alone. The explanation is gradient x input, ``w * x``.
"""
from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from learnroot.metrics import Normalisation, evaluate
from learnroot.metrics.attack import attack_positions
from learnroot.options import MetricsOptions

NORM = Normalisation(mean=[0.0], std=[1.0], value_range=(0.0, 1.0))
WEIGHTED = (1, 6, 9, 14)
#: attack_k giving 2 positions per step on a 4 x 4 image (k * 16 / 224^2 = 2).
K_TWO = 2 * 224 * 224 // 16


class Margin(nn.Module):
    """``[sum(w * x), b]``; counts its forward calls."""

    def __init__(self, bias: float):
        super().__init__()
        weight = torch.zeros(16, dtype=torch.float64)
        weight[list(WEIGHTED)] = 1.0
        self.weight = weight.view(1, 1, 4, 4)
        self.bias = bias
        self.calls = 0
        self.eval()

    def forward(self, x):
        self.calls += 1
        first = (x * self.weight).sum(dim=(1, 2, 3))
        return torch.stack([first, torch.full_like(first, self.bias)], dim=1)


def explain(model):
    """Gradient x input of class 0 (the only class the attack explains here)."""
    calls = []

    def attributor(x, target):
        assert bool((target == 0).all())
        calls.append(len(x))
        return SimpleNamespace(relevance=model.weight * x, r_top=(model.weight * x).flatten(1).sum(1))

    attributor.calls = calls
    return attributor


def attack(model, x=None, label=0, **changes):
    x = torch.full((1, 1, 4, 4), 0.5, dtype=torch.float64) if x is None else x
    settings = dict(attack_k=K_TWO, attack_random=False)
    settings.update(changes)
    options = replace(MetricsOptions(), select=["attack"], attack=True, **settings)
    attributor = explain(model)
    batch = x.shape[0]
    result = evaluate(model, x, model.weight * x, torch.zeros(batch, dtype=torch.long),
                      torch.full((batch,), label, dtype=torch.long), None, options, NORM, attributor=attributor)
    return result.per_sample, attributor.calls


def test_positions_scale_with_the_image_area():
    assert attack_positions(500, 224, 224) == 500
    assert attack_positions(500, 64, 64) == 41  # 500 * 4096 / 50176 = 40.8
    assert attack_positions(500, 4, 4) == 1  # at least one
    assert attack_positions(K_TWO, 4, 4) == 2
    assert attack_positions(10**9, 4, 4) == 16  # at most every position


def test_reexplaining_moves_on_to_the_next_pixels_and_flips_the_label():
    # budget 0.1, step 0.1, b = 1.7: step 1 lowers pixels 1 and 6 (ties: row-major) to 0.4, f_0 = 1.8;
    # explained again, 9 and 14 now rank first: step 2 lowers them, f_0 = 1.6 < 1.7: flipped after 2 steps
    scores, calls = attack(Margin(1.7), attack_epsilon=0.1, attack_step=0.1, attack_steps=10)
    assert scores["attack_success"].tolist() == [1.0]
    assert scores["attack_iterations"].tolist() == [2.0]
    assert scores["attack_perturbation"].item() == pytest.approx(0.1)
    assert calls == [1]  # the first step uses the run's map; one explanation before step 2


def test_ranking_once_stays_on_the_same_pixels_and_fails():
    # the same attack ranking only once: pixels 1 and 6 reach the budget (f_0 = 1.8) and nothing else moves
    scores, calls = attack(Margin(1.7), attack_epsilon=0.1, attack_step=0.1, attack_steps=10, attack_reexplain=False)
    assert scores["attack_success"].tolist() == [0.0]
    assert scores["attack_iterations"].tolist() == [10.0]  # censored at attack_steps
    assert scores["attack_perturbation"].item() == pytest.approx(0.1)
    assert calls == []


def test_linf_steps_accumulate_up_to_the_budget():
    # b = 1.5, budget 0.3, ranking once: f_0 = 2 - 0.2 t, below 1.5 after t = 3 steps; |delta| = 0.3
    scores, _ = attack(Margin(1.5), attack_epsilon=0.3, attack_step=0.1, attack_steps=10, attack_reexplain=False)
    assert scores["attack_iterations"].tolist() == [3.0]
    assert scores["attack_perturbation"].item() == pytest.approx(0.3)


@pytest.mark.parametrize("epsilon, success, iterations, norm", [(0.25, 1.0, 3.0, 0.25), (0.2, 0.0, 10.0, 0.2)])
def test_l2_steps_are_normalised_over_the_chosen_pixels_and_projected(epsilon, success, iterations, norm):
    # each step moves pixels 1 and 6 by 0.1 / sqrt(2): f_0 = 2 - 0.1414 t; b = 1.7 needs t = 3 (delta 0.3),
    # projected onto the ball: 0.25 still flips (f_0 = 2 - 2 * 0.25 / sqrt(2) = 1.646), 0.2 does not (1.717)
    scores, _ = attack(Margin(1.7), attack_norm="l2", attack_epsilon=epsilon, attack_step=0.1, attack_steps=10,
                       attack_reexplain=False)
    assert scores["attack_success"].tolist() == [success]
    assert scores["attack_iterations"].tolist() == [iterations]
    assert scores["attack_perturbation"].item() == pytest.approx(norm)


def test_the_valid_box_limits_the_change():
    # x = 0.05: a step of 0.5 is clipped at 0 (the box), so |delta| = 0.05; f_0 = 0.2 - 0.1 = 0.1 < b = 0.11
    x = torch.full((1, 1, 4, 4), 0.05, dtype=torch.float64)
    scores, _ = attack(Margin(0.11), x=x, attack_epsilon=0.5, attack_step=0.5, attack_steps=5, attack_reexplain=False)
    assert scores["attack_iterations"].tolist() == [1.0]
    assert scores["attack_perturbation"].item() == pytest.approx(0.05)


def test_misclassified_samples_are_not_attacked_and_unknown_labels_attack_the_prediction():
    model = Margin(1.7)
    x = torch.full((2, 1, 4, 4), 0.5, dtype=torch.float64)
    scores, _ = attack(model, x=x, label=1, attack_epsilon=0.1, attack_step=0.1, attack_steps=10)
    assert all(math.isnan(value) for value in scores["attack_success"].tolist())
    scores, _ = attack(model, x=x, label=-1, attack_epsilon=0.1, attack_step=0.1, attack_steps=10)
    assert scores["attack_success"].tolist() == [1.0, 1.0]
    assert scores["attack_iterations"].tolist() == [2.0, 2.0]


def test_a_random_ranking_of_every_position_is_the_same_attack():
    # with k = all 16 positions any ranking selects every pixel: the control must agree exactly
    scores, _ = attack(Margin(1.7), attack_k=10**6, attack_epsilon=0.1, attack_step=0.05, attack_steps=10,
                       attack_random=True)
    for name in ("success", "iterations", "perturbation"):
        assert scores[f"attack_random_{name}"].tolist() == scores[f"attack_{name}"].tolist()
    assert scores["attack_iterations"].tolist() == [2.0]  # 4 pixels x 0.05 x 2 steps: f_0 = 1.6
    assert scores["attack_advantage"].tolist() == [0.0]


def test_the_control_ranking_does_not_depend_on_the_batch():
    model = Margin(1.9)
    single, _ = attack(model, attack_epsilon=0.2, attack_step=0.05, attack_steps=20, attack_random=True,
                       attack_k=4 * 224 * 224 // 16)
    x = torch.full((3, 1, 4, 4), 0.5, dtype=torch.float64)
    batch, _ = attack(model, x=x, attack_epsilon=0.2, attack_step=0.05, attack_steps=20, attack_random=True,
                      attack_k=4 * 224 * 224 // 16)
    for name in ("attack_random_success", "attack_random_iterations", "attack_random_perturbation"):
        assert batch[name].tolist() == single[name].tolist() * 3


def test_an_unknown_norm_is_one_line_from_the_declaration():
    from learnroot.config import ConfigError, compose_options
    with pytest.raises(ConfigError, match=r"metrics.attack_norm='l1' is not one of: linf, l2"):
        compose_options("metrics.attack_norm=l1")
    with pytest.raises(ValueError, match=r"metrics.attack_norm='l1' is not one of: linf, l2"):
        attack(Margin(1.5), attack_norm="l1")
