#!/usr/bin/env python
"""Benchmark harness of learnroot's attribution methods and evaluation (issue 7).

For each device (CPU, and CUDA when present), model (random weights), batch size and method it
measures seconds per image and peak memory of:

``forward``
    one forward pass without gradients (the unit of the ``x_forward`` column);
``floor``
    a forward pass plus the input gradient of the target logit (the unit of ``x_floor``);
``attribution``
    the method through :func:`learnroot.attribution.make_attributor` with its ``conf/method`` preset
    (``ours`` once per ``--root-opt`` preset);
``attribution+metrics``
    the same plus :func:`learnroot.metrics.evaluate.evaluate` with ``MetricsOptions()`` defaults;
``zennit``
    raw zennit with the same rules: the method's own declaration made with plain zennit rules
    (``RuleBook(fast=False)``, no FastRule) and the library's canonizers, called through
    ``zennit.attribution.Gradient`` with the composite registered once, as a zennit user would;
    ``x_zennit`` of a baseline is its ``attribution`` time over this one.

Each measurement is timed together with its references (forward, floor, raw zennit, or our
``dtd_zplus`` for ``ours``, whose ratio is ``x_dtd_zplus``): after ``--warmup`` untimed calls each,
rounds time every callable once in rotating order, at least ``--repeats`` rounds and more (up to
``--max-repeats``) while the slowest callable has run less than ``--min-time`` seconds; the
median is reported, so ratios stay fair when the machine's load changes. The CPU time the process
used in each call is recorded too (``cpu_s_per_image``); ``--ratio-clock cpu`` computes the ratio
columns from it instead of the wall clock: on a machine shared with other work and one torch
thread it is the steadier measure (time spent waiting for a core does not count), with several
threads OpenMP's spin-waiting counts as CPU time. Peak memory: CPU, the
resident-set high-water mark of each timed call (reset through ``/proc/self/clear_refs``; else the
process maximum) and its increase over the memory in use before the call; CUDA,
``max_memory_allocated``. A configuration that runs out of memory gives a row noting it.

A sweep of ``root_opt`` steps (``--sweep-steps``, on every layer type of ``--sweep-preset``, with
``--sweep-overrides`` such as ``step=relative,conv.loss=cosine,dense.loss=cosine`` on top) shows
how the cost of ``ours`` grows, and ``--runner-check`` times whole runs
(:func:`learnroot.runner.run`: small CNN, shapes benchmark, default metrics) of several sizes, each
in a fresh process, for the per-image time, the marginal time of the extra images and the peak
memory of a whole run. ``--tune-malloc`` calls :func:`learnroot.allocator.tune_allocator` first.

``--paper-code DIR`` adds the paper's own code as a reference of ``ours`` with ``root_opt=paper``:
``DTDOpt`` and ``ActivationStoringNet`` of ``modules/layers_cnn.py`` in a work tree of the public
repository meetxinzhang/XAI-RootInference, imported from ``DIR`` (never copied; stand-ins for the
modules it imports but never calls on this path, ``cv2``, ``scipy.ndimage`` and ``einops``, are
put in ``sys.modules`` only when they are not installed). It runs on a copy of the same
random-weight model in torchvision's VGG layout (``model_archi='vgg'``: ``vgg16``, ``vgg19`` and the
tiny model; its code handles no other torchvision model: ResNet blocks only of its own ResNet class,
no ReLU6, no inverted residuals, so no MobileNetV2), on the same batch, explaining the same targets,
timed in the same rounds; the ``ours`` row gets ``x_paper_code`` (its time in units of the paper
code's) and a ``paper_code`` row is added. Both rows carry the relevance sum over the pixels
(``relevance_sum``, mean over the batch), the relevance put on the output (``r_top``: the target
logit for ``ours``, its absolute value for the paper's code) and the worst conservation error of
the batch, ``max |sum R - r_top| / |r_top|`` (every ``ours`` row carries these three, taken from its
last timed call).

Writes a CSV (``--csv``) and prints a table. ``--tiny`` runs a tiny configuration in seconds (used
by ``tests/test_bench.py``). The torch thread count (``--threads``, default: every core this process
may use) is printed and written to every row.

Examples
--------
    python scripts/bench.py                                   # vgg16, 224 px, batches 1, 8, 32
    python scripts/bench.py --models vgg16 --batch-sizes 1 --methods dtd_zplus,ours
    python scripts/bench.py --models small_cnn --runner-check --runner-sizes 16,64,128
    python scripts/bench.py --models resnet50 --threads 2 --no-metrics --csv bench.csv
    python scripts/bench.py --tiny --csv /tmp/tiny.csv
    python scripts/bench.py --models vgg16 --batch-sizes 1 --methods ours --root-opt paper --no-metrics \
        --no-zennit --sweep-steps '' --threads 2 --tune-malloc --paper-code ../XAI-RootInference
    python scripts/bench.py --models vgg16 --batch-sizes 1 --methods ours --root-opt paper --no-metrics \
        --no-zennit --sweep-steps '' --threads 1 --ratio-clock cpu --tune-malloc --paper-code ../XAI-RootInference
    python scripts/bench.py --models vgg16,mobilenet_v2 --batch-sizes 1 --methods ours --root-opt '' \
        --no-metrics --no-zennit --sweep-steps 1,2,3,5 --sweep-preset default \
        --sweep-overrides step=relative,conv.loss=cosine,dense.loss=cosine --threads 2 --tune-malloc
"""
from __future__ import annotations

import argparse
import copy
import csv
import importlib
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from zennit.attribution import Gradient, IntegratedGradients
from zennit.core import Composite

import learnroot
from learnroot.config import ConfigError, compose_options
from learnroot.allocator import tune_allocator
from learnroot.attribution import architecture, make_attributor
from learnroot.canonizers import canonizers
from learnroot.methods import get as get_method, names
from learnroot.methods.rulebook import RuleBook
from learnroot.metrics.evaluate import evaluate
from learnroot.models.small_vit import small_vit
from learnroot.models.vit import VIT_MODELS, vit_model
from learnroot.normalisation import Normalisation
from learnroot.models import preprocess_of, small_cnn
from learnroot.options import (DatasetOptions, MethodOptions, MetricsOptions,
                               PathsOptions, RootOptOptions, RunOptions)
from learnroot.rules.layers import generic_rule

METHODS = names()
GRADIENT_METHODS = names("gradient")

COLUMNS = ("device", "device_name", "threads", "malloc", "torch", "zennit", "model", "weights", "size", "batch", "images",
           "method", "preset", "steps", "measure", "s_per_image", "s_per_image_min", "cpu_s_per_image", "repeats", "peak_mb",
           "peak_delta_mb", "memory", "x_forward", "x_floor", "x_zennit", "x_dtd_zplus", "x_paper_code",
           "ratio_clock", "relevance_sum", "r_top", "conservation", "note")
SIZES = {"vgg16": 224, "vgg19": 224, "resnet18": 224, "resnet50": 224, "mobilenet_v2": 224, "small_cnn": 64,
         "tiny": 28, "vit_tiny": 224, "vit_small": 224, "vit_base": 224, "vit_b_16": 224, "small_vit": 64}
TORCHVISION = ("vgg16", "vgg19", "resnet18", "resnet50", "mobilenet_v2")
#: Models in torchvision's VGG layout (``features``, ``avgpool`` to 7 x 7, ``classifier``): what the
#: paper's ``DTDOpt`` handles as ``model_archi='vgg'``.
PAPER_CODE_MODELS = ("vgg16", "vgg19", "tiny")
AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _zennit_version() -> str:
    """The version of the zennit actually imported (its own ``version`` module, else the installed one)."""
    try:
        from zennit.version import __version__
        return __version__
    except ImportError:
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version("zennit")
        except PackageNotFoundError:
            return "?"


ZENNIT_VERSION = _zennit_version()


# ------------------------------------------------------------------------------------------------
# configuration


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options (``--tiny`` replaces the defaults by a seconds-long configuration)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vgg16",
                        help="comma list of vgg16, vgg19, resnet18, resnet50, mobilenet_v2, small_cnn, "
                             "vit_tiny, vit_small, vit_base, vit_b_16, small_vit (ViTs: the methods that explain them)")
    parser.add_argument("--weights", default="",
                        help="comma list of MODEL=PATH: a torchvision state dict instead of random weights")
    parser.add_argument("--size", type=int, default=0, help="image side in pixels (0: 224, small_cnn 64)")
    parser.add_argument("--methods", default="all", help="comma list of methods, or 'all'")
    parser.add_argument("--root-opt", default="default,paper",
                        help="root_opt presets timed for ours; 'paper+tol=0+conv.steps=2' sets keys on a preset")
    parser.add_argument("--batch-sizes", default="1,8,32", help="comma list")
    parser.add_argument("--devices", default="auto", help="comma list of cpu, cuda; auto: cpu and cuda if present")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores of this process)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs, at least (the median is reported)")
    parser.add_argument("--min-time", type=float, default=3.0,
                        help="more runs while the slowest callable of a group has run less than this (s)")
    parser.add_argument("--max-repeats", type=int, default=15, help="at most this many timed runs")
    parser.add_argument("--ratio-clock", choices=("wall", "cpu"), default="wall",
                        help="ratios of wall-clock medians, or of the process's CPU time (steadier on a shared "
                             "machine with one thread; with several, OpenMP's spin-waits count)")
    parser.add_argument("--no-metrics", dest="metrics", action="store_false", help="skip attribution+metrics")
    parser.add_argument("--pf-chunk", type=int, default=0, help="metrics.pf_chunk (0: the MetricsOptions default)")
    parser.add_argument("--no-zennit", dest="zennit", action="store_false", help="skip the raw zennit baselines")
    parser.add_argument("--sweep-steps", default="0,1,2,5,10", help="root_opt steps swept for ours ('' to skip)")
    parser.add_argument("--sweep-preset", default="default", help="root_opt preset of the sweep")
    parser.add_argument("--sweep-overrides", default="",
                        help="root_opt keys set on top of the sweep preset, e.g. step=relative,conv.loss=cosine")
    parser.add_argument("--sweep-batch", type=int, default=0, help="batch size of the sweep (0: the first one)")
    parser.add_argument("--runner-check", action="store_true", help="time whole runs of the small CNN")
    parser.add_argument("--runner-sizes", default="16,64", help="images per whole run")
    parser.add_argument("--runner-batch", type=int, default=8, help="batch size of the whole runs")
    parser.add_argument("--runner-method", default="ours", help="method of the whole runs")
    parser.add_argument("--cache-dir", default=os.environ.get("LEARNROOT_CACHE", "~/.cache/learnroot"),
                        help="learnroot cache with the shapes benchmark (whole runs)")
    parser.add_argument("--paper-code", default="", metavar="DIR",
                        help="work tree of meetxinzhang/XAI-RootInference: time its DTDOpt next to ours root_opt=paper")
    parser.add_argument("--tune-malloc", action="store_true",
                        help="call learnroot.allocator.tune_allocator() first (glibc keeps freed memory for reuse)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", default="bench.csv", help="output CSV file")
    parser.add_argument("--tiny", action="store_true", help="tiny model, few steps, seconds (CI)")
    parser.add_argument("--runner-child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tiny:
        args.models, args.size, args.batch_sizes = "tiny", 0, "1,2"
        args.warmup, args.repeats, args.sweep_steps, args.min_time = 1, 1, "0,1,2", 0.0
        args.runner_sizes, args.runner_batch = "2,4", 2
    return args


def split(text: str) -> list[str]:
    """Items of a comma list."""
    return [item.strip() for item in text.split(",") if item.strip()]


def conf_values(group: str, name: str):
    """The options of preset ``group=name`` as the CLI composes them (defaults lists and
    interpolations resolved), e.g. ``conf_values("method", "ours")``."""
    return getattr(composed(f"{group}={name}"), group)


def composed(*overrides: str) -> RunOptions:
    """:func:`learnroot.config.compose_options`, a config error as a one-line exit."""
    try:
        return compose_options(*overrides)
    except ConfigError as error:
        raise SystemExit(f"bench: {error}") from None


def method_options(name: str) -> MethodOptions:
    """The method as ``conf/method/<name>.yaml`` configures it (composed with a model it explains)."""
    model = () if "cnn" in get_method(name).architectures else ("model=small_vit",)
    return composed(f"method={name}", *model).method


def parse_overrides(text: str) -> list[str]:
    """``key=value`` items of a comma list as ``root_opt.key=value`` overrides, e.g. ``step=relative,conv.lr=0.5``."""
    overrides = []
    for item in split(text):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"root_opt overrides: {item!r} is not key=value")
        overrides.append(f"root_opt.{key.strip()}={value.strip()}")
    return overrides


def root_options(preset: str, steps: Optional[int] = None, tiny: bool = False, overrides: str = "") -> RootOptOptions:
    """``root_opt=<preset>`` with ``overrides`` (``key=value`` comma list, layer keys as
    ``conv.loss``), optionally with ``steps`` on every layer type (tiny: at most 2)."""
    options = composed(f"root_opt={preset}", *parse_overrides(overrides)).root_opt
    layers = {}
    for kind in ("conv", "dense", "pixel"):
        layer = getattr(options, kind)
        if steps is not None:
            layer = replace(layer, steps=steps)
        elif tiny:
            layer = replace(layer, steps=min(layer.steps, 2))
        layers[kind] = layer
    return replace(options, **layers)


def tune_malloc() -> str:
    """:func:`learnroot.allocator.tune_allocator`; ``tuned`` or why not."""
    return "tuned" if tune_allocator() else "default (mallopt unavailable or refused)"


def devices(text: str) -> list[torch.device]:
    """The devices to time on."""
    names = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if text == "auto" else split(text)
    if "cuda" in names and not torch.cuda.is_available():
        raise SystemExit("--devices cuda but no CUDA GPU is available")
    return [torch.device(name) for name in names]


def device_name(device: torch.device) -> str:
    """Human-readable name of a device."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


# ------------------------------------------------------------------------------------------------
# models


@dataclass
class Subject:
    """A model to benchmark and what its inputs look like."""

    name: str
    model: nn.Module
    size: int
    weights: str
    classes: int
    box: tuple
    norm: Normalisation


class TinyVGG(nn.Module):
    """torchvision's VGG in miniature for seconds-long checks: two conv blocks, average pool to 7 x 7,
    a dense head (28 px inputs; the layout the paper's code handles as ``model_archi='vgg'``)."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Linear(8 * 7 * 7, 16), nn.ReLU(inplace=True), nn.Dropout(),
                                        nn.Linear(16, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def build_subject(name: str, size: int, device: torch.device, seed: int, weights: str = "") -> Subject:
    """A model with random weights (or the state dict at ``weights``), its pixel box and normalisation,
    on ``device``."""
    torch.manual_seed(seed)
    conf = "small_cnn" if name == "tiny" else name
    if not (resources.files("learnroot.conf") / "model" / f"{conf}.yaml").is_file():
        conf = "vgg16"  # a torchvision model without a preset of its own: ImageNet preprocessing
    options = conf_values("model", conf)
    if name in TORCHVISION:
        import torchvision
        model, classes = getattr(torchvision.models, name)(weights=None, num_classes=1000), 1000
    elif name == "small_cnn":
        model, classes = small_cnn(6), 6
    elif name == "tiny":
        model, classes = TinyVGG(), 5
    elif name in VIT_MODELS:
        model, classes = vit_model(replace(options, weights="random", crop=size or SIZES[name])), 1000
    elif name == "small_vit":
        model, classes = small_vit(6), 6
    else:
        raise SystemExit(f"unknown model {name!r}")
    if weights:
        model.load_state_dict(torch.load(Path(weights).expanduser(), map_location="cpu", weights_only=True))
    model = model.eval().to(device)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    preprocess = preprocess_of(options)
    norm = Normalisation(mean=list(options.mean), std=list(options.std), value_range=tuple(options.value_range))
    return Subject(name, model, size or SIZES[name], Path(weights).name if weights else "random", classes,
                   preprocess.box(device), norm)


def inputs(subject: Subject, batch: int, device: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images inside the pixel box and random targets."""
    generator = torch.Generator().manual_seed(seed)
    low, high = (bound.cpu() for bound in subject.box)
    x = low + (high - low) * torch.rand(batch, 3, subject.size, subject.size, generator=generator)
    target = torch.randint(subject.classes, (batch,), generator=generator)
    return x.to(device), target.to(device)


# ------------------------------------------------------------------------------------------------
# references: forward, floor, raw zennit


def forward_fn(model: nn.Module) -> Callable:
    """One forward pass without gradients."""
    def run(x, target):
        with torch.no_grad():
            return model(x)
    return run


def floor_fn(model: nn.Module) -> Callable:
    """Forward pass plus the input gradient of the target logits."""
    def run(x, target):
        with torch.enable_grad():
            variable = x.detach().requires_grad_(True)
            logit = model(variable).gather(1, target[:, None]).sum()
            return torch.autograd.grad(logit, variable)[0]
    return run


def affine_layers(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """Linear/Conv layers in forward order with their inputs (one probe pass)."""
    found, handles = [], []
    for name, module in model.named_modules():
        if isinstance(module, AFFINE):
            handles.append(module.register_forward_hook(
                lambda module, args, output, name=name: found.append((name, module, args[0].detach()))))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return found


def zennit_composite(model: nn.Module, method: MethodOptions, box: tuple, x: torch.Tensor) -> Composite:
    """A plain zennit composite with the rules of ``method`` (BatchNorm merged, ResNet sums canonized).

    The rules are the method's own declaration (:mod:`learnroot.methods.catalogue`) made by a
    ``RuleBook(fast=False)``: plain zennit rules, without :class:`~learnroot.rules.FastRule`; the
    other layers get the library's generic rules. So the reference cannot drift from the library's
    rule table, and what it measures is only the cost of zennit's own evaluation.
    """
    layers = affine_layers(model, x)
    book = RuleBook(method, fast=False)
    rules = get_method(method.name).hidden(book, [(name, module) for name, module, _ in layers[1:]])
    rules[layers[0][0]] = book.pixel(box)
    def module_map(ctx, name, module):
        return rules[name] if name in rules else generic_rule(module, method.stabilizer, method.pool_rule,
                                                               method.epsilon)

    return Composite(module_map=module_map, canonizers=canonizers())


class ZennitBaseline:
    """Raw zennit for one method: the composite registered once (a ``Gradient`` context), then called.

    Parameters
    ----------
    model : torch.nn.Module
        Copied (zennit canonizes it while registered).
    method : MethodOptions
    box : tuple
        Pixel box ``(low, high)``.
    x : torch.Tensor
        The batch that will be explained (``dtd_zb`` boxes are probed on it).
    """

    def __init__(self, model: nn.Module, method: MethodOptions, box: tuple, x: torch.Tensor):
        self.model = copy.deepcopy(model)
        self.method = method
        if method.name == "integrated_gradients":
            self.attributor = IntegratedGradients(self.model, n_iter=method.ig_steps)
        else:
            composite = None if method.name in GRADIENT_METHODS else zennit_composite(self.model, method, box, x)
            self.attributor = Gradient(self.model, composite=composite)
        self.attributor.__enter__()

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Relevance of ``target`` (output relevance: the target logit)."""
        onehot = torch.zeros(x.shape[0], self.classes(x), device=x.device, dtype=x.dtype)
        onehot.scatter_(1, target[:, None], 1.0)
        with torch.enable_grad():
            _, relevance = self.attributor(x.detach(), lambda output: onehot * output.detach())
        return x * relevance if self.method.name == "gradient_x_input" else relevance

    def classes(self, x: torch.Tensor) -> int:
        """Number of outputs of the model (probed once)."""
        if not hasattr(self, "_classes"):
            with torch.no_grad():
                self._classes = self.model(x[:1]).shape[1]
        return self._classes

    def close(self) -> None:
        """Remove the composite."""
        self.attributor.__exit__(None, None, None)


# ------------------------------------------------------------------------------------------------
# measuring


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_kb(key: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak(device: torch.device) -> tuple[str, float]:
    """Reset the peak-memory counter; the kind of counter and the current usage in bytes."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return "cuda-max-allocated", float(torch.cuda.memory_allocated(device))
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return "rss-hwm", float(_status_kb("VmRSS") * 1024)
    except (OSError, TypeError):
        return "ru-maxrss", float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def _peak(device: torch.device, kind: str) -> float:
    if kind == "cuda-max-allocated":
        return float(torch.cuda.max_memory_allocated(device))
    if kind == "rss-hwm":
        return float(_status_kb("VmHWM") * 1024)
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def measure(fns: dict, x: torch.Tensor, target: torch.Tensor, warmup: int, repeats: int,
            min_time: float = 0.0, max_repeats: int = 0) -> dict:
    """Seconds per image and peak memory of several ``fn(x, target)``, timed in turns.

    Every function is warmed up ``warmup`` times; then each round times every function once, the
    order rotating from round to round, so that a change of the machine's load hits all of them
    alike and their ratios stay fair on a busy machine. Rounds go on after ``repeats`` while the
    slowest function has run for less than ``min_time`` seconds in all, up to ``max_repeats``
    rounds (cheap groups get more repeats, hence steadier medians).

    Parameters
    ----------
    fns : dict
        Label to callable ``(x, target) -> anything``.
    x, target : torch.Tensor
        The batch.
    warmup, repeats : int
        Untimed calls, then timed rounds (at least).
    min_time, max_repeats : float, int
        More rounds while the slowest function's total time is below ``min_time`` seconds, up to
        ``max_repeats`` rounds.

    Returns
    -------
    dict
        Label to ``s_per_image`` (median), ``s_per_image_min``, ``cpu_s_per_image`` (median CPU time of
        the process per call, all threads), ``repeats``, ``peak_mb`` (largest
        peak of a timed call), ``peak_delta_mb`` (over the memory in use before that call) and
        ``memory`` (the counter used).
    """
    device, batch = x.device, x.shape[0]
    for fn in fns.values():
        for _ in range(warmup):
            fn(x, target)
    labels = list(fns)
    times = {label: [] for label in labels}
    cpu = {label: [] for label in labels}
    peaks = {label: (0.0, 0.0, "") for label in labels}
    round_ = 0
    while round_ < repeats or (round_ < max_repeats and max(sum(t) for t in times.values()) < min_time):
        turn = round_ % len(labels)
        round_ += 1
        for label in labels[turn:] + labels[:turn]:
            _sync(device)
            kind, before = _reset_peak(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            fns[label](x, target)
            _sync(device)
            times[label].append(time.perf_counter() - start)
            cpu[label].append(time.process_time() - start_cpu)
            peak = _peak(device, kind)
            if peak >= peaks[label][0]:
                peaks[label] = (peak, max(peak - before, 0.0), kind)
    return {label: {"s_per_image": statistics.median(times[label]) / batch,
                    "s_per_image_min": min(times[label]) / batch,
                    "cpu_s_per_image": statistics.median(cpu[label]) / batch, "repeats": len(times[label]),
                    "peak_mb": peaks[label][0] / 2**20, "peak_delta_mb": peaks[label][1] / 2**20,
                    "memory": peaks[label][2]} for label in labels}


class AttributionFn:
    """The attribution alone; keeps the relevance sums of its last call (:func:`relevance_sums`)."""

    def __init__(self, attributor):
        self.attributor = attributor
        self.sums: dict = {}

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        attribution = self.attributor(x, target)
        self.sums = relevance_sums(attribution.relevance, attribution.r_top)
        return attribution.relevance


def attribution_fn(attributor) -> AttributionFn:
    """The attribution alone (see :class:`AttributionFn`)."""
    return AttributionFn(attributor)


def relevance_sums(relevance: torch.Tensor, r_top: torch.Tensor) -> dict:
    """``relevance_sum`` (pixel sum, mean over the batch), ``r_top`` (mean) and ``conservation``
    (worst ``|sum R - r_top| / |r_top|`` of the batch)."""
    total = relevance.detach().flatten(1).sum(dim=1).double().cpu()
    top = r_top.detach().double().cpu()
    return {"relevance_sum": float(total.mean()), "r_top": float(top.mean()),
            "conservation": float(((total - top).abs() / top.abs()).max())}


# ------------------------------------------------------------------------------------------------
# the paper's code (optional reference of ours with root_opt=paper)


def _stand_in(name: str, **attributes) -> None:
    """Put an empty module ``name`` into ``sys.modules`` unless the real one is installed."""
    if name in sys.modules:
        return
    try:
        if importlib.util.find_spec(name) is not None:
            return
    except (ImportError, ValueError):  # a parent that is itself a stand-in
        pass
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)


def _not_available(*args, **kwargs):
    raise RuntimeError("a stand-in of bench.py (the module is not installed): not for use")


def load_paper_code(folder: str) -> types.ModuleType:
    """The paper's ``modules/layers_cnn.py`` (``DTDOpt``, ``ActivationStoringNet``, ``model_flattening``),
    imported from a work tree of meetxinzhang/XAI-RootInference.

    Its scripts import it as ``CNNs.dtd_opt``, a package the repository lacks; the module itself
    imports ``models.resnet``, ``modules.root_infer`` (which imports ``einops`` and its vendored
    ``pytorch_ssim``) and ``utils.visualization`` (``cv2``, ``scipy.ndimage``). Those three
    third-party modules are used only by functions this benchmark never calls, so stand-ins are
    registered for the ones that are not installed. Its top-level package names (``models``,
    ``modules``, ``utils``) must not be taken by other imports.
    """
    root = Path(folder).expanduser().resolve()
    if not (root / "modules" / "layers_cnn.py").is_file():
        raise SystemExit(f"--paper-code {folder}: no modules/layers_cnn.py there "
                         "(a work tree of github.com/meetxinzhang/XAI-RootInference is expected)")
    for name in ("models", "modules", "utils", "pytorch_ssim"):
        loaded = sys.modules.get(name)
        where = loaded and (getattr(loaded, "__file__", None) or next(iter(getattr(loaded, "__path__", [])), ""))
        if loaded is not None and not str(where).startswith(str(root)):
            raise SystemExit(f"--paper-code: a module named {name!r} is already imported from elsewhere")
    _stand_in("cv2")
    _stand_in("scipy")
    _stand_in("scipy.ndimage", gaussian_filter=_not_available)
    _stand_in("einops", rearrange=_not_available)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module("modules.layers_cnn")


class PaperCode:
    """The paper's ``DTDOpt`` on a private copy of a VGG-layout model: ``(x, target) -> relevance``.

    ``ActivationStoringNet`` runs the flattened model and stores every module's input on the module;
    ``DTDOpt(...)(stack, output, classes, 'vgg', index=target)`` propagates ``|onehot * logits|``
    back to the pixels. Its SSIM losses average over the whole batch, so at batch sizes above 1 the
    samples' roots depend on each other (the timing is still that of the code as published).

    Parameters
    ----------
    code : module
        :func:`load_paper_code`.
    model : torch.nn.Module
        Copied (the paper's code writes attributes onto the modules).
    classes : int
        Number of outputs.
    """

    def __init__(self, code: types.ModuleType, model: nn.Module, classes: int):
        self.code = code
        self.model = copy.deepcopy(model).eval()
        self.net = code.ActivationStoringNet(code.model_flattening(self.model))
        self.classes = classes
        self.sums: dict = {}

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            inputs = x.detach().clone().requires_grad_(True)
            stack, output = self.net(inputs)
            relevance = self.code.DTDOpt()(stack, output, self.classes, "vgg", index=target).detach()
            r_top = output.detach().gather(1, target.view(-1, 1))[:, 0].abs()
        for module in self.model.modules():  # drop the stored activations and their graphs
            for name in ("activation", "identity"):
                module.__dict__.pop(name, None)
        self.sums = relevance_sums(relevance, r_top)
        return relevance


def evaluation_fn(attributor, model: nn.Module, norm: Normalisation, chunk: int = 0) -> Callable:
    """Attribution plus the default metrics (label = target; ``chunk``: ``pf_chunk`` if not 0)."""
    options = MetricsOptions() if not chunk else replace(MetricsOptions(), pf_chunk=chunk)

    def run(x, target):
        relevance = attributor(x, target).relevance
        return evaluate(model, x, relevance, target, target, None, options, norm)
    return run


# ------------------------------------------------------------------------------------------------
# the benchmark


#: Roles of the callables of a group; the references give the ratio columns of the ``main`` row.
RATIOS = {"forward": "x_forward", "floor": "x_floor", "zennit": "x_zennit", "dtd_zplus": "x_dtd_zplus",
          "paper_code": "x_paper_code"}


@dataclass
class Bench:
    """Collects the rows of one benchmark run."""

    args: argparse.Namespace
    rows: list = field(default_factory=list)

    @property
    def clock(self) -> str:
        """The time the ratio columns divide: ``s_per_image`` (wall) or ``cpu_s_per_image``."""
        return "cpu_s_per_image" if self.args.ratio_clock == "cpu" else "s_per_image"

    def add(self, context: dict, method: str, measure: str, result: dict, preset: str = "", steps="",
            note: str = "") -> dict:
        """Append a row (and print it)."""
        row = {column: "" for column in COLUMNS}
        row.update(context)
        row.update(method=method, preset=preset, steps=steps, measure=measure, note=note)
        row.update(result)
        self.rows.append(row)
        ratios = " ".join(f"{column}={_fmt(row[column], 2)}" for column in RATIOS.values() if row[column] != "")
        print(f"  {row['model']:9s} b={row['batch']:<3} {method:20s} {preset:7s} {str(steps):3s} {measure:20s} "
              f"{_fmt(row['s_per_image'])} s/img  peak {_fmt(row['peak_mb'], 0)} MB  {ratios} {note}", flush=True)
        return row

    def group(self, context: dict, x, target, main: tuple, references: dict, emit: tuple = ()) -> None:
        """Time ``main`` with its references in turns; add its row (with ratios) and the rows of ``emit``.

        Parameters
        ----------
        context : dict
            Row fields of the device, model and batch.
        x, target : torch.Tensor
            The batch.
        main : (dict, callable)
            Row fields (``method``, ``measure``, optional ``preset``, ``steps``, ``note``) and callable.
        references : dict
            Role (a key of :data:`RATIOS`) to callable.
        emit : tuple of str
            Roles whose rows are added too (e.g. ``zennit``).
        """
        spec, fn = main
        try:
            results = measure({"main": fn, **references}, x, target, self.args.warmup, self.args.repeats,
                              self.args.min_time, self.args.max_repeats)
        except (RuntimeError, MemoryError) as error:
            if not _out_of_memory(error):
                raise
            self.add(context, result={}, **{**spec, "note": "out of memory"})
            return
        finally:
            if x.device.type == "cuda":
                torch.cuda.empty_cache()
        if spec["measure"] in RATIOS:  # a reference is its own unit
            results[spec["measure"]] = results["main"]
        for result in results.values():
            result["ratio_clock"] = self.args.ratio_clock
        if "paper_code" in results:
            spec = {**spec, "note": " ".join(filter(None, (spec.get("note", ""), "paper code takes {:.1f} x as long".format(
                results["paper_code"][self.clock] / results["main"][self.clock]))))}
        self.add(context, result={**_with_ratios(results["main"], results, self.clock), **getattr(fn, "sums", {})},
                 **spec)
        for role in emit:
            if role == "paper_code":
                self.add(context, "paper_code", "attribution",
                         {**_with_ratios(results[role], results, self.clock), **references[role].sums},
                         note="DTDOpt of XAI-RootInference (model_archi=vgg)")
                continue
            method = spec["method"] if role == "zennit" else "-"
            self.add(context, method, role, _with_ratios(results[role], results, self.clock)
                     if role in ("forward", "floor")
                     else results[role])


def _with_ratios(result: dict, results: dict, clock: str = "s_per_image") -> dict:
    """``result`` with its time in units of the references timed with it (forward, floor, ...), on the
    wall clock (``s_per_image``) or the process's CPU time (``cpu_s_per_image``)."""
    result = dict(result)
    for role, column in RATIOS.items():
        if role in results and results[role][clock] > 0:
            result[column] = result[clock] / results[role][clock]
    return result


def _out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, MemoryError) or "out of memory" in text or "can't allocate memory" in text


def _sci(value) -> str:
    return "-" if value == "" or value is None else f"{value:.3g}"


def _fmt(value, digits: int = 4) -> str:
    if value == "" or value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if digits else f"{value:.0f}"


def run_batch(bench: Bench, subject: Subject, device: torch.device, batch: int, methods: list[str],
              sweep: bool) -> None:
    """Every measurement of one model, device and batch size (each with its references, in turns)."""
    args = bench.args
    x, target = inputs(subject, batch, device, args.seed)
    context = {"device": device.type, "device_name": device_name(device), "threads": torch.get_num_threads(),
               "malloc": args.malloc, "torch": torch.__version__, "zennit": ZENNIT_VERSION,
               "model": subject.name, "weights": subject.weights, "size": subject.size, "batch": batch,
               "images": batch}
    model = subject.model
    units = {"forward": forward_fn(model), "floor": floor_fn(model)}
    bench.group(context, x, target, ({"method": "-", "measure": "floor"}, units["floor"]),
                {"forward": units["forward"]}, emit=("forward",))
    kind = architecture(model)
    if kind == "vit":  # no dtd_zplus or raw-zennit reference: the methods against forward and floor only
        for name in (name for name in methods if kind in get_method(name).architectures):
            run_baseline(bench, context, subject, x, target, units, name, None)
        return
    zplus = make_attributor(model, method_options("dtd_zplus"), root_options("default"), subject.box)
    for name in (name for name in methods if kind in get_method(name).architectures):
        if name == "ours":
            run_ours(bench, context, subject, x, target, units, zplus)
        else:
            run_baseline(bench, context, subject, x, target, units, name, zplus)
    if sweep:
        note = " ".join(filter(None, ("sweep", args.sweep_overrides.replace(",", " "))))
        for steps in (int(value) for value in split(args.sweep_steps)):
            options = root_options(args.sweep_preset, steps=steps, overrides=args.sweep_overrides)
            attributor = make_attributor(model, method_options("ours"), options, subject.box)
            bench.group(context, x, target, ({"method": "ours", "preset": args.sweep_preset, "steps": steps,
                                              "measure": "attribution", "note": note},
                                             attribution_fn(attributor)),
                        {**units, "dtd_zplus": attribution_fn(zplus)})


def _chunk_note(args: argparse.Namespace) -> str:
    return f"pf_chunk={args.pf_chunk}" if args.pf_chunk else ""


def run_baseline(bench: Bench, context: dict, subject: Subject, x, target, units: dict, name: str, zplus) -> None:
    """A baseline against raw zennit (and with the metrics)."""
    args = bench.args
    method = method_options(name)
    attributor = zplus if name == "dtd_zplus" else make_attributor(subject.model, method, root_options("default"),
                                                                    subject.box)
    references = dict(units)
    vit = architecture(subject.model) == "vit"
    baseline = ZennitBaseline(subject.model, method, subject.box, x) if args.zennit and not vit else None
    if baseline is not None:
        references["zennit"] = baseline
    try:
        bench.group(context, x, target, ({"method": name, "measure": "attribution"}, attribution_fn(attributor)),
                    references, emit=("zennit",) if baseline is not None else ())
    finally:
        if baseline is not None:
            baseline.close()
    if args.metrics:
        spec = {"method": name, "measure": "attribution+metrics", "note": _chunk_note(args)}
        bench.group(context, x, target, (spec, evaluation_fn(attributor, subject.model, subject.norm, args.pf_chunk)),
                    units)


def run_ours(bench: Bench, context: dict, subject: Subject, x, target, units: dict, zplus) -> None:
    """``ours`` with each root_opt preset against our ``dtd_zplus`` (and with the metrics); ``paper``
    also against the paper's code when ``--paper-code`` is given."""
    args = bench.args
    for preset in split(args.root_opt):
        name, _, overrides = preset.partition("+")
        attributor = make_attributor(subject.model, method_options("ours"),
                                     root_options(name, tiny=args.tiny, overrides=overrides.replace("+", ",")),
                                     subject.box)
        references, emit = {**units, "dtd_zplus": attribution_fn(zplus)}, ()
        if preset == "paper" and args.paper_code:
            if subject.name in PAPER_CODE_MODELS:
                references["paper_code"], emit = PaperCode(args.code, subject.model, subject.classes), ("paper_code",)
            else:
                bench.add(context, "paper_code", "attribution", {},
                          note=f"not run: the paper's code handles torchvision's VGG layout, not {subject.name}")
        bench.group(context, x, target, ({"method": "ours", "preset": preset, "measure": "attribution"},
                                         attribution_fn(attributor)), references, emit=emit)
        if args.metrics:
            bench.group(context, x, target, ({"method": "ours", "preset": preset, "measure": "attribution+metrics",
                                              "note": _chunk_note(args)},
                                             evaluation_fn(attributor, subject.model, subject.norm, args.pf_chunk)),
                        {**units, "dtd_zplus": evaluation_fn(zplus, subject.model, subject.norm, args.pf_chunk)})


# ------------------------------------------------------------------------------------------------
# whole runs


def runner_options(args: argparse.Namespace, images: int) -> RunOptions:
    """A whole run of the small CNN (random weights) on the shapes benchmark."""
    model = conf_values("model", "small_cnn")
    model = replace(model, weights="random")
    method = method_options(args.runner_method)
    root = root_options("default", tiny=args.tiny)
    return RunOptions(model=model, dataset=DatasetOptions(limit=images, seed=args.seed), method=method,
                      root_opt=root, metrics=MetricsOptions(), paths=PathsOptions(cache_dir=args.cache_dir),
                      batch_size=args.runner_batch, device="cpu", seed=args.seed)


def runner_child(spec: str) -> None:
    """Run one whole run (in this fresh process) and print its summary as one JSON line."""
    values = json.loads(spec)
    torch.set_num_threads(values["threads"])
    if values["args"].get("tune_malloc"):
        tune_malloc()
    args = argparse.Namespace(**values["args"])
    from learnroot.runner import run
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        summary = run(runner_options(args, values["images"]), Path(folder) / "run")
        seconds = time.perf_counter() - start
    print("RESULT " + json.dumps({"seconds": seconds, "n": summary["n_samples"],
                                  "peak_rss_mb": summary["memory"]["peak_rss_mb"]}))


def runner_check(bench: Bench) -> None:
    """Whole runs at several sizes, each in a fresh process (so that its peak RSS is its own)."""
    args = bench.args
    keep = ("runner_method", "runner_batch", "cache_dir", "seed", "tiny", "tune_malloc")
    previous = None
    for images in (int(value) for value in split(args.runner_sizes)):
        spec = json.dumps({"images": images, "threads": torch.get_num_threads(),
                           "args": {name: getattr(args, name) for name in keep}})
        process = subprocess.run([sys.executable, os.path.abspath(__file__), "--runner-child", spec],
                                 capture_output=True, text=True)
        lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT ")]
        context = {"device": "cpu", "device_name": device_name(torch.device("cpu")),
                   "threads": torch.get_num_threads(), "malloc": args.malloc, "torch": torch.__version__,
                   "zennit": ZENNIT_VERSION, "model": "small_cnn", "weights": "random", "size": 64,
                   "batch": args.runner_batch, "images": images}
        if process.returncode != 0 or not lines:
            tail = (process.stderr or process.stdout).strip().splitlines()[-1:] or ["no output"]
            bench.add(context, args.runner_method, "runner", {}, preset="default", note=f"failed: {tail[0][:120]}")
            continue
        result = json.loads(lines[-1][len("RESULT "):])
        note = "whole run, fresh process"
        if previous is not None and result["n"] > previous["n"]:  # the cost of the extra images alone
            marginal = (result["seconds"] - previous["seconds"]) / (result["n"] - previous["n"])
            note += f"; marginal {marginal:.4f} s/img over {previous['n']} images"
        bench.add(context, args.runner_method, "runner",
                  {"s_per_image": result["seconds"] / max(result["n"], 1), "repeats": 1,
                   "peak_mb": result["peak_rss_mb"], "memory": "ru-maxrss (whole process)", "images": result["n"]},
                  preset="default", note=note)
        previous = result


# ------------------------------------------------------------------------------------------------
# output


def write_csv(rows: list[dict], path: str) -> None:
    """Write the rows (floats with 6 significant digits)."""
    Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    with open(Path(path).expanduser(), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: f"{value:.6g}" if isinstance(value, float) else value for key, value in row.items()})


def print_table(rows: list[dict]) -> None:
    """The rows as a fixed-width table."""
    header = ("device", "model", "batch", "images", "method", "preset", "steps", "measure", "s/img", "x_fwd",
              "x_floor", "x_zennit", "x_z+", "x_paper", "sum_R", "r_top", "conservation", "peak_MB", "+MB", "note")
    lines = [header]
    for row in rows:
        lines.append((row["device"], row["model"], str(row["batch"]), str(row["images"]), row["method"],
                      row["preset"], str(row["steps"]), row["measure"], _fmt(row["s_per_image"]),
                      _fmt(row["x_forward"], 1), _fmt(row["x_floor"], 2), _fmt(row["x_zennit"], 2),
                      _fmt(row["x_dtd_zplus"], 2), _fmt(row["x_paper_code"], 3), _sci(row["relevance_sum"]),
                      _sci(row["r_top"]), _sci(row["conservation"]), _fmt(row["peak_mb"], 0), _fmt(row["peak_delta_mb"], 0),
                      row["note"]))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def main(argv=None) -> int:
    """Run the benchmark; returns the exit status."""
    args = parse_args(argv)
    if args.runner_child:
        runner_child(args.runner_child)
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(args.threads or cores)
    args.malloc = tune_malloc() if args.tune_malloc else "default"
    args.code = load_paper_code(args.paper_code) if args.paper_code else None
    for preset in split(args.root_opt):  # bad keys fail now, not after an hour
        name, _, overrides = preset.partition("+")
        root_options(name, overrides=overrides.replace("+", ","))
    root_options(args.sweep_preset, overrides=args.sweep_overrides)
    methods = list(METHODS) if args.methods == "all" else split(args.methods)
    unknown = [name for name in methods if name not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if "ours" in methods and "dtd_zplus" not in methods:
        methods.insert(methods.index("ours"), "dtd_zplus")  # the reference of ours
    batches = [int(value) for value in split(args.batch_sizes)]
    weights = dict(item.split("=", 1) for item in split(args.weights))
    print(f"learnroot {learnroot.__file__}; torch {torch.__version__}; zennit {ZENNIT_VERSION}; "
          f"torch threads: {torch.get_num_threads()}; malloc: {args.malloc}; methods: {', '.join(methods)}", flush=True)
    bench = Bench(args)
    for device in devices(args.devices):
        for model_name in split(args.models):
            subject = build_subject(model_name, args.size, device, args.seed, weights.get(model_name, ""))
            for batch in batches:
                sweep = bool(split(args.sweep_steps)) and batch == (args.sweep_batch or batches[0])
                run_batch(bench, subject, device, batch, methods, sweep)
            del subject
    if args.runner_check:
        runner_check(bench)
    write_csv(bench.rows, args.csv)
    print()
    print_table(bench.rows)
    print(f"\nwrote {len(bench.rows)} rows to {args.csv} (torch threads: {torch.get_num_threads()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
