#!/usr/bin/env python
"""How much one uniform-noise draw moves a sample's AOPC, against the paired differences between methods.

Usage::

    python scripts/aopc_noise.py [overrides ...] [--methods ours,dtd_zplus] [--draws 8] [--score aopc_morf_logit]

e.g. ``python scripts/aopc_noise.py setup=lenet5_mnist dataset.part=test dataset.limit=200`` (the
measurement behind the default of ``metrics.aopc_draws``, docs/METHOD.md section 3). For each image of
the selection and each method the script computes the region-perturbation score with one noise draw
per sample and step (``metrics.aopc_draws=1``) under ``--draws`` seeds (``metrics.seed = 0 ..
draws-1``), and prints

- the noise SD of one draw of a sample's score (per sample over the seeds, root mean square over the
  samples), per method and for the paired difference of the first two methods (both drawing the
  same noise, as the metric pairs them);
- the SD over the samples of the paired difference (each sample's difference averaged over the seeds,
  and that SD with the noise of the average taken out: ``sqrt(SD^2 - SD_noise^2 / draws)``);
- the number of draws ``D`` that brings the noise SD of a sample's score, ``SD_1 / sqrt(D)``, below
  that spread.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import replace

import torch


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value (as for learnroot-run)")
    parser.add_argument("--methods", default="ours,dtd_zplus", help="methods, the first two are paired")
    parser.add_argument("--draws", type=int, default=8, help="noise seeds (metrics.seed = 0 .. draws - 1)")
    parser.add_argument("--score", default="aopc_morf_logit")
    return parser.parse_args(argv)


def scores(options, methods: list[str], draws: int, score: str) -> dict[str, torch.Tensor]:
    """``method -> (draws, N)`` scores of every sample under each seed (one noise draw each)."""
    from learnroot.attribution import make_attributor
    from learnroot.data import build_dataset, collate
    from learnroot.metrics.evaluate import evaluate
    from learnroot.models import build_model, num_outputs, preprocess_of
    preprocess = preprocess_of(options.model)
    model = build_model(options.model, options.dataset, options.paths.cache_dir)
    dataset = build_dataset(options.dataset, preprocess, num_outputs(options.model, options.dataset),
                            options.paths.cache_dir)
    metrics = replace(options.metrics, pixel_flipping=False, perturbation=False, localisation="off",
                      conservation=False, cost=False, aopc=True, aopc_draws=1, aopc_baseline="uniform")
    result = {}
    for name in methods:
        attributor = make_attributor(model, replace(options.method, name=name), options.root_opt,
                                     preprocess.box(torch.device("cpu")))
        rows = []
        for start in range(0, len(dataset), options.batch_size):
            batch = collate([dataset[i] for i in range(start, min(start + options.batch_size, len(dataset)))])
            with torch.no_grad():
                target = model(batch["image"]).argmax(1)
            relevance = attributor(batch["image"], target).relevance
            rows.append(torch.stack([evaluate(model, batch["image"], relevance, target, batch["label"], None,
                                              replace(metrics, seed=seed), preprocess.norm, ids=batch["id"])
                                     .per_sample[score] for seed in range(draws)]))
        result[name] = torch.cat(rows, dim=1).double()
        print(f"{name}: {result[name].shape[1]} images, mean {score} {float(result[name].mean()):.3f}", flush=True)
    return result


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    from learnroot.config import compose_options
    methods = args.methods.split(",")
    options = compose_options(*args.overrides, f"method={methods[0]}")
    values = scores(options, methods, args.draws, args.score)
    rms = lambda spread: float(spread.pow(2).mean().sqrt())
    for name in methods:
        print(f"noise SD of one draw, {name}: {rms(values[name].std(dim=0)):.3f}")
    first, second = methods[:2]
    difference = values[first] - values[second]
    noise = rms(difference.std(dim=0))
    observed = float(difference.mean(dim=0).std())
    spread = math.sqrt(max(observed ** 2 - noise ** 2 / args.draws, 0.0))  # the noise of the mean taken out
    single = max(rms(values[first].std(dim=0)), rms(values[second].std(dim=0)))
    print(f"noise SD of one draw of the paired difference {first} - {second}: {noise:.3f}")
    print(f"SD over images of the paired difference: {observed:.3f} of the mean of {args.draws} draws, {spread:.3f} "
          f"without its remaining noise; mean difference {float(difference.mean()):+.3f}")
    print(f"draws D with SD_1 / sqrt(D) < that spread: a sample's score {math.ceil((single / spread) ** 2 + 1e-9)}, "
          f"its paired difference {math.ceil((noise / spread) ** 2 + 1e-9)}")


if __name__ == "__main__":
    main()
