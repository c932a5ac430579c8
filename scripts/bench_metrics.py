#!/usr/bin/env python
"""Forward passes per image and seconds per image of the evaluation metrics (issue 26, item 3).

The model is wrapped in a counter of the images it is given (:class:`PassCounter`); for every
preset of ``conf/metrics`` (``--presets``) the script evaluates one batch of random images with a
random relevance map, as the runner does: one clean forward pass for the batch (the runner's
``targets``, the ``model`` row: its logits go to :func:`~learnroot.metrics.evaluate.evaluate` when
it takes them), then every active metric alone (``metrics.select=[name]``: what it costs by
itself) and the preset as a whole (what a run costs: metrics share their images). Printed per
preset and metric: forward passes per image (images through the model / batch size; a metric's row
without the runner's pass) and the wall time per image (median of ``--repeats``; the runner's pass
included). The sanity checks, which explain again, are left out (their cost:
``learnroot-table --list-metrics``).

The count does not depend on the method: only the number of distinct perturbed images matters,
and a random map's rankings give distinct images at every step as a real map does.

Examples
--------
    python scripts/bench_metrics.py                                        # small_cnn, 64 px
    python scripts/bench_metrics.py --model vgg16 --size 224 --batch 2 --presets default
    python scripts/bench_metrics.py --model small_cnn --presets default,faithfulness,fast --csv out.csv
"""
from __future__ import annotations

import argparse
import csv
import inspect
import statistics
import time
from dataclasses import replace

import torch
from torch import nn

from learnroot.config import compose_options
from learnroot.metrics import REGISTRY, evaluate
from learnroot.metrics.registry import active
from learnroot.normalisation import Normalisation

#: Metrics that explain again or need the attribution itself (the sanity checks): not counted here
#: (their cost is stated in ``learnroot-table --list-metrics``).
EXPLAIN_AGAIN = ("attack", "class_sensitivity", "randomisation", "signal_noise")
IMAGENET = Normalisation(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], value_range=(0.0, 1.0))
SIZES = {"small_cnn": 64}


class PassCounter(nn.Module):
    """The model, counting the images (rows of its input) that pass through it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        return self.model(x)


def build(name: str, classes: int) -> nn.Module:
    """A random-weight classifier: ``small_cnn`` or a torchvision architecture."""
    torch.manual_seed(0)
    if name == "small_cnn":
        from learnroot.models import small_cnn
        return small_cnn(classes).eval()
    import torchvision
    return getattr(torchvision.models, name)(weights=None, num_classes=classes).eval()


def takes_clean_logits() -> bool:
    """Whether this version of :func:`evaluate` accepts the runner's clean logits."""
    return "clean_logits" in inspect.signature(evaluate).parameters


def one_evaluation(counter: PassCounter, x, relevance, target, label, options, ids) -> tuple[int, float]:
    """Images through the model and seconds of one evaluation, the runner's clean pass included."""
    counter.images = 0
    start = time.perf_counter()
    with torch.no_grad():
        logits = counter(x)
    extra = {"clean_logits": logits} if takes_clean_logits() else {}
    evaluate(counter, x, relevance, target, label, None, options, IMAGENET, ids=ids, **extra)
    return counter.images, time.perf_counter() - start


def measure(counter, x, relevance, target, label, options, ids, repeats: int) -> tuple[int, float]:
    """Images through the model (equal in every repeat) and the median seconds."""
    counts, seconds = [], []
    for _ in range(repeats):
        images, elapsed = one_evaluation(counter, x, relevance, target, label, options, ids)
        counts.append(images)
        seconds.append(elapsed)
    if len(set(counts)) != 1:
        raise SystemExit(f"the number of forward passes changed between repeats: {counts}")
    return counts[0], statistics.median(seconds)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="small_cnn", help="small_cnn or a torchvision architecture (vgg16, ...)")
    parser.add_argument("--size", type=int, default=0, help="image side in pixels (0: 64 for small_cnn, else 224)")
    parser.add_argument("--classes", type=int, default=0, help="outputs (0: 6 for small_cnn, else 1000)")
    parser.add_argument("--batch", type=int, default=4, help="images per evaluated batch")
    parser.add_argument("--presets", default="default,faithfulness,fast", help="comma list of conf/metrics presets")
    parser.add_argument("--overrides", default="", help="comma list of metrics.* overrides applied to every preset")
    parser.add_argument("--repeats", type=int, default=1, help="timed evaluations per row (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--no-single", action="store_true", help="only the presets as a whole, not each metric")
    parser.add_argument("--csv", default="", help="write the rows to this CSV file too")
    return parser.parse_args(argv)


def rows_of_preset(preset: str, args, counter, x, relevance, target, label, ids) -> list[dict]:
    """The rows of one preset: the runner's clean pass, each active metric alone, the preset as a whole."""
    overrides = [f"metrics={preset}"] + [f"metrics.{item}" for item in args.overrides.split(",") if item]
    options = compose_options(*overrides).metrics
    batch = x.shape[0]
    rows = [{"preset": preset, "metric": "model (runner)", "passes_per_image": 1.0, "s_per_image": ""}]
    names = [metric.name for metric in REGISTRY.values()
             if metric.compute is not None and active(metric, options, _Probe())]
    skipped = [name for name in names if name in EXPLAIN_AGAIN]
    names = [name for name in names if name not in EXPLAIN_AGAIN]
    if skipped:
        print(f"{preset}: not counted (they explain again): {', '.join(skipped)}")
        options = replace(options, select=[name for name in (options.select or REGISTRY) if name not in skipped])
    if not args.no_single:
        for name in names:
            images, seconds = measure(counter, x, relevance, target, label, replace(options, select=[name]), ids,
                                      args.repeats)
            rows.append({"preset": preset, "metric": name, "passes_per_image": (images - batch) / batch,
                         "s_per_image": seconds / batch})
    images, seconds = measure(counter, x, relevance, target, label, options, ids, args.repeats)
    rows.append({"preset": preset, "metric": "total (run)", "passes_per_image": images / batch,
                 "s_per_image": seconds / batch})
    return rows


class _Probe:
    """A stand-in context for the switches that look at the batch (localisation: no masks here)."""

    mask = None
    attributor = None
    attribution = None
    other_target = None


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    classes = args.classes or (6 if args.model == "small_cnn" else 1000)
    size = args.size or SIZES.get(args.model, 224)
    counter = PassCounter(build(args.model, classes)).eval()
    generator = torch.Generator().manual_seed(0)
    x = IMAGENET.normalise(torch.rand(args.batch, 3, size, size, generator=generator))
    relevance = torch.randn(args.batch, 3, size, size, generator=generator)
    target = torch.randint(classes, (args.batch,), generator=generator)
    label = target.clone()
    ids = [f"sample{index}" for index in range(args.batch)]
    print(f"model {args.model}, {size} px, batch {args.batch}, torch threads {torch.get_num_threads()}, "
          f"clean logits from the runner: {'yes' if takes_clean_logits() else 'no'}")
    rows = []
    for preset in [item for item in args.presets.split(",") if item]:
        rows += rows_of_preset(preset, args, counter, x, relevance, target, label, ids)
    print(f"{'preset':<14} {'metric':<16} {'passes/image':>13} {'s/image':>9}")
    for row in rows:
        seconds = f"{row['s_per_image']:.3f}" if row["s_per_image"] != "" else ""
        print(f"{row['preset']:<14} {row['metric']:<16} {row['passes_per_image']:>13.2f} {seconds:>9}")
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["model", "size", "batch", *rows[0]])
            writer.writeheader()
            writer.writerows({"model": args.model, "size": size, "batch": args.batch, **row} for row in rows)


if __name__ == "__main__":
    main()
