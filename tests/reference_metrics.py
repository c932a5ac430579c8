"""Slow, loop-based reference implementations of the metrics, written independently of
:mod:`learnroot.metrics` (plain Python and numpy, one sample, one pixel at a time)."""
from __future__ import annotations

import math

import numpy as np
import torch


def removal_order(map2d: np.ndarray, descending: bool) -> list[int]:
    """Flat pixel indices in removal order; ties: lower flat index first."""
    values = map2d.reshape(-1).tolist()
    sign = -1.0 if descending else 1.0
    return sorted(range(len(values)), key=lambda i: (sign * values[i], i))


def removal_curve(model, image, map2d, target, baseline, counts, descending):
    """Logits of ``model`` on one image with ``counts[t]`` pixels replaced, one forward per point.

    ``image`` and ``baseline`` are ``(C, H, W)`` tensors, ``map2d`` an ``(H, W)`` numpy array.
    Returns a list of ``(target logit, target probability, argmax)`` tuples.
    """
    order = removal_order(map2d, descending)
    width = image.shape[2]
    out = []
    for count in counts:
        perturbed = image.clone()
        for flat in order[:count]:
            row, col = divmod(flat, width)
            perturbed[:, row, col] = baseline[:, row, col]
        logits = model(perturbed[None])[0].double().tolist()
        top = max(logits)
        total = sum(math.exp(v - top) for v in logits)
        prob = math.exp(logits[target] - top) / total
        out.append((logits[target], prob, logits.index(top)))
    return out


def trapezoid(y: list[float], x: list[float]) -> float:
    """Trapezoid rule, written out."""
    return sum((x[i + 1] - x[i]) * (y[i + 1] + y[i]) / 2.0 for i in range(len(x) - 1))


def average_precision(scores: np.ndarray, mask: np.ndarray) -> float:
    """AP over labelled pixels (mask 0/1; 255 ignored) by a loop over the distinct thresholds."""
    keep = mask.reshape(-1) != 255
    s = scores.reshape(-1)[keep].astype(np.float64)
    y = mask.reshape(-1)[keep] == 1
    positives = int(y.sum())
    if positives == 0:
        return float("nan")
    ap, last_recall = 0.0, 0.0
    for threshold in sorted(set(s.tolist()), reverse=True):
        chosen = s >= threshold
        tp = int((chosen & y).sum())
        precision = tp / int(chosen.sum())
        recall = tp / positives
        ap += (recall - last_recall) * precision
        last_recall = recall
    return ap


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur a ``(C, H, W)`` image with a truncated 2-D Gaussian (radius ceil(3 sigma)), clamped
    (replicate) borders, by explicit loops."""
    radius = max(1, math.ceil(3 * sigma))
    weights = [math.exp(-0.5 * (d / sigma) ** 2) for d in range(-radius, radius + 1)]
    norm = sum(weights)
    weights = [w / norm for w in weights]
    channels, height, width = image.shape
    data = image.double().numpy()
    out = np.zeros_like(data)
    for c in range(channels):
        for i in range(height):
            for j in range(width):
                acc = 0.0
                for di in range(-radius, radius + 1):
                    for dj in range(-radius, radius + 1):
                        ii = min(max(i + di, 0), height - 1)
                        jj = min(max(j + dj, 0), width - 1)
                        acc += weights[di + radius] * weights[dj + radius] * data[c, ii, jj]
                out[c, i, j] = acc
    return torch.from_numpy(out)
