"""Conservation of the rule methods on every torchvision CNN family, random weights (issue 20, item 6).

For each architecture (torchvision, ``weights=None``, 10 classes, seed 0, eval mode, float32) and each
method (``dtd_zplus``, ``ours``, ``lrp_epsilon``, ``lrp_gamma``; default options), on a batch of
random inputs (seed 1) explaining the predicted class, the table gives

- ``global``: the largest global conservation error ``|sum R_pixels - f_c| / |f_c|`` over the batch;
- ``worst layer``: the largest layer-wise error ``|sum R_in - sum R_out| / |sum R_out|`` over the
  batch and every recorded layer, and that layer;
- ``cost``: seconds of one attribution of the batch (rule templates and modified weights cached by a
  first call) over seconds of one plain forward pass of the batch, timed in turns, median of 3 ratios;
- ``refused: why`` where the attributor refuses the model (an operation without a rule).

Inputs are as small as each architecture accepts (32 x 32; AlexNet 64; Inception-v3 75), so the
whole table runs on a CPU. ``lrp_epsilon`` is not conserving by design (its epsilon absorbs relevance).

Usage::

    OMP_NUM_THREADS=1 python scripts/conservation_table.py                  # all -> results/any_model/
    python scripts/conservation_table.py --arch resnet18 densenet121 -o /tmp/table
    python scripts/conservation_table.py --markdown-only                     # rewrite the .md from the .csv

Rows already in the CSV are kept (the run resumes); ``--redo`` starts over.
"""
from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

from learnroot.attribution import make_attributor
from learnroot.conservation import global_error, layer_errors
from learnroot.graph import UnsupportedOperations
from learnroot.options import MethodOptions, RootOptOptions

FAMILIES = {
    "ResNet": ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"],
    "ResNeXt": ["resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d"],
    "Wide ResNet": ["wide_resnet50_2", "wide_resnet101_2"],
    "VGG": ["vgg11", "vgg13", "vgg16", "vgg19"],
    "VGG-BN": ["vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"],
    "AlexNet": ["alexnet"],
    "SqueezeNet": ["squeezenet1_0", "squeezenet1_1"],
    "DenseNet": ["densenet121", "densenet161", "densenet169", "densenet201"],
    "GoogLeNet": ["googlenet"],
    "ShuffleNetV2": ["shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"],
    "MNASNet": ["mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3"],
    "MobileNet": ["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"],
    "EfficientNet": [f"efficientnet_b{index}" for index in range(8)],
    "EfficientNetV2": ["efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l"],
    "RegNetX": ["regnet_x_400mf", "regnet_x_800mf", "regnet_x_1_6gf", "regnet_x_3_2gf", "regnet_x_8gf",
                "regnet_x_16gf", "regnet_x_32gf"],
    "RegNetY": ["regnet_y_400mf", "regnet_y_800mf", "regnet_y_1_6gf", "regnet_y_3_2gf", "regnet_y_8gf",
                "regnet_y_16gf", "regnet_y_32gf", "regnet_y_128gf"],
    "other (not in issue 20)": ["inception_v3", "convnext_tiny", "swin_t", "vit_b_16"],
}
METHODS = ("dtd_zplus", "ours", "lrp_epsilon", "lrp_gamma")
FIELDS = ("family", "arch", "input", "params_m", "method", "status", "global_error", "worst_layer_error",
          "worst_layer", "layers", "cost_forward_passes", "seconds")
BOX = (torch.full((1, 3, 1, 1), -2.1), torch.full((1, 3, 1, 1), 2.6))  # ImageNet-normalised [0, 1] pixels


def input_size(arch: str, size: int) -> int:
    """The smallest input an architecture accepts, at least ``size``."""
    return max(size, {"alexnet": 64, "inception_v3": 75}.get(arch, 0))


def build(arch: str, size: int) -> torch.nn.Module:
    """Random-weight torchvision model, 10 classes, eval mode (seed 0)."""
    torch.manual_seed(0)
    extra = {"googlenet": dict(aux_logits=False, init_weights=True),
             "inception_v3": dict(aux_logits=False, init_weights=True),
             "vit_b_16": dict(image_size=size)}.get(arch, {})
    return getattr(torchvision.models, arch)(weights=None, num_classes=10, **extra).eval()


def seconds(function, repeats: int = 1) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(family: str, arch: str, size: int, batch: int, max_params: float) -> list[dict]:
    """The rows of one architecture (one per method)."""
    side = input_size(arch, size)
    model = build(arch, side)
    params = sum(parameter.numel() for parameter in model.parameters()) / 1e6
    base = dict(family=family, arch=arch, input=f"{batch}x3x{side}x{side}", params_m=f"{params:.1f}")
    if params > max_params:
        return [dict(base, method=method, status=f"not run: {params:.0f}M parameters > --max-params {max_params:g}")
                for method in METHODS]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    torch.manual_seed(1)
    x = torch.randn(batch, 3, side, side)
    with torch.no_grad():
        logits = model(x)
    target = logits.argmax(1)

    def forward():
        with torch.no_grad():
            model(x)
    rows = []
    for method in METHODS:
        try:
            attributor = make_attributor(model, MethodOptions(name=method), RootOptOptions(), BOX)
        except UnsupportedOperations as error:
            rows.append(dict(base, method=method, status="refused: " + str(error).split(": ", 1)[1]))
            continue
        attribution = attributor(x, target)  # builds the rule templates and caches
        ratios, times = [], []
        for _ in range(3):  # in turns, so that a busy machine slows both alike
            plain = seconds(forward)
            times.append(seconds(lambda: attributor(x, target)))
            ratios.append(times[-1] / plain)
        elapsed, cost = statistics.median(times), statistics.median(ratios)
        errors = [(float(error.max()), name) for name, _, error in layer_errors(attribution)]
        worst, layer = max(errors) if errors else (math.nan, "")
        rows.append(dict(base, method=method, status="ok", global_error=f"{float(global_error(attribution).max()):.2e}",
                         worst_layer_error=f"{worst:.2e}", worst_layer=layer, layers=len(errors),
                         cost_forward_passes=f"{cost:.1f}", seconds=f"{elapsed:.3f}"))
        del attributor, attribution
    return rows


def read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def write(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def cell(row: dict) -> str:
    if row["status"] != "ok":
        return row["status"].split(":")[0]
    return f"{row['global_error']} / {row['worst_layer_error']} ({row['cost_forward_passes']})"


def markdown(rows: list[dict], header: str) -> str:
    """One line per architecture: per method ``global / worst layer (cost in forward passes)``, then refusals."""
    by_arch: dict = {}
    for row in rows:
        by_arch.setdefault((row["family"], row["arch"]), {})[row["method"]] = row
    lines = [header, "",
             "| family | architecture | input | params (M) | " + " | ".join(METHODS) + " |",
             "|---|---|---|---|" + "---|" * len(METHODS)]
    notes = []
    for (family, arch), methods in by_arch.items():
        first = next(iter(methods.values()))
        lines.append(f"| {family} | {arch} | {first['input']} | {first['params_m']} | "
                     + " | ".join(cell(methods[m]) if m in methods else "" for m in METHODS) + " |")
        reasons = {row["status"] for row in methods.values() if row["status"] != "ok"}
        notes += [f"- **{arch}**: {reason}" for reason in sorted(reasons)]
    ok = [row for row in rows if row["status"] == "ok"]
    summary = []
    for method in METHODS:
        values = [row for row in ok if row["method"] == method]
        if values:
            worst_global = max(values, key=lambda row: float(row["global_error"]))
            worst_layer = max(values, key=lambda row: float(row["worst_layer_error"]))
            summary.append(f"- `{method}` on {len(values)} architectures: largest global error "
                           f"{worst_global['global_error']} ({worst_global['arch']}), largest layer-wise error "
                           f"{worst_layer['worst_layer_error']} ({worst_layer['arch']}, `{worst_layer['worst_layer']}`)")
    return "\n".join(lines + ["", "Summary:", ""] + summary + (["", "Not explained:", ""] + notes if notes else [])) + "\n"


HEADER = ("Conservation on random weights (float32; `scripts/conservation_table.py`). Cells: largest global error / "
          "largest layer-wise error over the batch and all layers (cost: one attribution in forward passes).")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", default="results/any_model", help="folder for conservation.csv / .md")
    parser.add_argument("--arch", nargs="*", help="architectures (default: every one listed)")
    parser.add_argument("--size", type=int, default=32, help="input side (raised where an architecture needs more)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--max-params", type=float, default=200.0, help="skip larger models (millions of parameters)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--redo", action="store_true", help="recompute rows already in the CSV")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite the markdown from the CSV")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = Path(args.output)
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "conservation.csv"
    rows = [] if args.redo else read(table)
    if not args.markdown_only:
        wanted = [(family, arch) for family, archs in FAMILIES.items() for arch in archs
                  if not args.arch or arch in args.arch]
        for family, arch in wanted:
            if any(row["arch"] == arch for row in rows):
                continue
            started = time.perf_counter()
            try:
                new = measure(family, arch, args.size, args.batch, args.max_params)
            except Exception as error:  # noqa: BLE001 - one architecture failing must not stop the table
                new = [dict(family=family, arch=arch, method=method, status=f"error: {type(error).__name__}: "
                            f"{str(error).splitlines()[0][:200] if str(error) else ''}") for method in METHODS]
            rows += new
            write(table, rows)
            print(f"{arch}: {time.perf_counter() - started:.0f} s; "
                  + ", ".join(f"{row['method']} {cell(row)}" for row in new), flush=True)
    order = {arch: index for index, arch in enumerate(arch for archs in FAMILIES.values() for arch in archs)}
    rows.sort(key=lambda row: (order.get(row["arch"], len(order)), METHODS.index(row["method"])))
    write(table, rows)
    (folder / "conservation.md").write_text(markdown(rows, HEADER))
    return 0


if __name__ == "__main__":
    sys.exit(main())
