"""The evaluation's forward passes as they were before issue 26 (item 3), kept as the reference of
``tests/test_evalcost.py``: every distinct perturbed image of every sample, the clean and the fully
replaced image included, goes through the model in chunks, and region perturbation with uniform
noise runs the clean batch once more. Written plainly (no sharing across samples or metrics)."""
from __future__ import annotations

import torch


def score_removals(model, x, baseline, positions, ranking, counts, target, chunk, n_units=None, clean=None):
    """:func:`learnroot.metrics.flipping.score_removals` before the sharing (``clean`` is ignored)."""
    _, batch, n_pixels = positions.shape
    n_units = n_pixels if n_units is None else n_units
    ranking, counts = ranking.cpu(), counts.cpu()
    trivial = (counts == 0) | (counts == n_units)  # the same image under every ranking
    key = torch.where(trivial, 0, ranking) * (n_units + 1) + counts
    keys, inverse = torch.unique(key, return_inverse=True)
    job_rank, job_count = keys // (n_units + 1), keys % (n_units + 1)
    n_jobs = job_rank.numel()
    logit = torch.empty(batch * n_jobs, dtype=torch.float64)
    prob = torch.empty_like(logit)
    pred = torch.empty(batch * n_jobs, dtype=torch.long)
    for start in range(0, batch * n_jobs, chunk):
        flat = torch.arange(start, min(start + chunk, batch * n_jobs))
        rows, jobs = flat // n_jobs, flat % n_jobs
        removed = positions[job_rank[jobs], rows] < job_count[jobs, None]
        images = torch.where(removed.view(-1, 1, *x.shape[2:]), baseline[rows], x[rows])
        out = model(images).double()
        logit[flat] = out.gather(1, target[rows, None]).squeeze(1)
        prob[flat] = out.softmax(dim=1).gather(1, target[rows, None]).squeeze(1)
        pred[flat] = out.argmax(dim=1)
    return (logit.view(batch, n_jobs)[:, inverse], prob.view(batch, n_jobs)[:, inverse],
            pred.view(batch, n_jobs)[:, inverse])


def old_clean_logits(context):
    """No sharing: a fresh forward pass of the clean batch at every request."""
    return context.model(context.x)
