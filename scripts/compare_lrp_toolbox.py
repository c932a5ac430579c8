#!/usr/bin/env python
"""Compare learnroot's LRP rules with the original LRP implementation, the LRP Toolbox (numpy).

    python scripts/compare_lrp_toolbox.py TOOLBOX_DIR [--digits N] [--mnist DIR] [--model FILE]

Imports the toolbox from ``TOOLBOX_DIR/python`` (or ``TOOLBOX_DIR`` when it is that folder; the
public repository sebastian-lapuschkin/lrp_toolbox), reads the same LeNet-5 plain-text model into
both (learnroot: ``model=lenet5_mnist``), runs both in float64 on the same ``N`` MNIST t10k digits
(``x / 127.5 - 1``, padded by 2 with -1) and prints, per rule, the largest relative difference of
the heatmaps: ``max over digits of max|R_learnroot - R_toolbox| / max|R_toolbox|``.

Both follow the toolbox's conventions: the same rule on every layer including the first (the
toolbox has no zB; ``method.pixel_rule`` set to the hidden layers' rule), biases in the
denominators of LRP-0, epsilon and alpha-beta (``method.bias=true``; w^2 and flat have none), the initial relevance is the logit of the predicted class
(``method.output=logit``, ``method.target=prediction``), tiny stabilisers (``method.stabilizer``),
and the toolbox's treatment of sum pooling (``method.pool_rule``: proportional for LRP-0 and
alpha-beta, epsilon added to the window sum for LRP-epsilon, equal shares for w^2 and flat). The
toolbox's alpha-beta multiplies the relevance by ``alpha`` at each ``SumPool`` (its alpha term on
non-negative pool inputs, with the beta term zero), so its alpha-beta heatmap is compared after
division by ``alpha ** (number of SumPools)``; flat on every layer is not a learnroot method
(flat is shared as a pixel rule: row ``w^2 + flat pixels``). The toolbox needs ``numpy.float``,
removed from numpy 1.24; the script sets ``numpy.float = float`` when it is missing.

Exit status 0 when every shared rule is within ``--tolerance`` (default 1e-5), 1 otherwise.
"""
from __future__ import annotations

import argparse
import gzip
import os
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LEARNROOT_SHARED_DATA", REPO.parent / "shared" / "data"))

BIAS = "method.bias=true"  # the rules built on z_ij = x_i w_ij have the bias in the denominator; w^2 and flat do not
#: (row label, toolbox call, learnroot overrides, toolbox per-layer presets for the first layer or None)
RULES = [
    ("LRP-0 (simple)", ("simple", None),
     ["method=lrp_0", "method.pixel_rule=epsilon", "method.epsilon=0", "method.pool_rule=norm", BIAS], None),
    ("epsilon 0.01", ("epsilon", 0.01),
     ["method=lrp_epsilon", "method.pixel_rule=epsilon", "method.epsilon=0.01", "method.pool_rule=epsilon", BIAS], None),
    ("epsilon 1", ("epsilon", 1.0),
     ["method=lrp_epsilon", "method.pixel_rule=epsilon", "method.epsilon=1.0", "method.pool_rule=epsilon", BIAS], None),
    ("alpha-beta a=1 b=0", ("alphabeta", 1.0),
     ["method=lrp_alpha_beta", "method.alpha=1.0", "method.beta=0.0", "method.pixel_rule=alpha_beta",
      "method.pool_rule=norm", BIAS], None),
    ("z+ (dtd_zplus, = a=1 b=0)", ("alphabeta", 1.0),
     ["method=dtd_zplus", "method.pixel_rule=zplus", "method.pool_rule=norm", "method.zplus_fallback=none", BIAS], None),
    ("alpha-beta a=2 b=1", ("alphabeta", 2.0),
     ["method=lrp_alpha_beta", "method.alpha=2.0", "method.beta=1.0", "method.pixel_rule=alpha_beta",
      "method.pool_rule=norm", BIAS], None),
    ("w^2", ("ww", None), ["method=dtd_ww", "method.pixel_rule=wsquare", "method.pool_rule=flat"], None),
    ("w^2 + flat pixels", ("ww", None), ["method=dtd_ww", "method.pixel_rule=flat", "method.pool_rule=flat"], "flat"),
]
COMMON = ["method.stabilizer=1e-16", "method.output=logit", "method.target=prediction"]


def toolbox_folder(path: str) -> Path:
    """The toolbox's ``python`` folder (holding ``model_io.py``) for ``path`` or ``path/python``."""
    folder = Path(path).expanduser()
    for candidate in (folder / "python", folder):
        if (candidate / "model_io.py").is_file():
            return candidate
    raise SystemExit(f"compare_lrp_toolbox: error: no model_io.py in {folder} or {folder / 'python'}")


def import_toolbox(folder: Path):
    """``model_io`` of the toolbox (with the ``numpy.float`` shim)."""
    if not hasattr(np, "float"):
        np.float = float  # removed in numpy 1.24; the toolbox's LRP code still uses it
    sys.path.insert(0, str(folder))
    import model_io  # noqa: E402 - from the toolbox folder
    return model_io


def read_idx(path: Path) -> np.ndarray:
    """An MNIST IDX file (gzip or plain): big-endian header, ``magic & 0xFF`` dimensions."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def toolbox_inputs(digits: np.ndarray) -> np.ndarray:
    """The toolbox demo's preprocessing: ``x / 127.5 - 1``, padded by 2 with -1, NHWC float64."""
    x = digits.astype(np.float64) / 127.5 - 1.0
    return np.pad(x, ((0, 0), (2, 2), (2, 2)), constant_values=-1.0)[..., None]


def compare(toolbox_dir: str, digits: int = 10, mnist: str = None, model: str = None) -> list[tuple[str, float]]:
    """Run both implementations; return ``[(rule, max relative difference)]`` (NaN for a rule not shared)."""
    from PIL import Image

    from learnroot.attribution import make_attributor
    from learnroot.config import compose_options
    from learnroot.models import preprocess_of
    from learnroot.models.lenet import read_toolbox_txt

    model_file = Path(model) if model else SHARED / "weights" / "lrp_toolbox_mnist_LeNet-5.txt"
    mnist_dir = Path(mnist) if mnist else SHARED / "mnist"
    images = sorted(mnist_dir.glob("t10k-images*"))
    if not model_file.is_file() or not images:
        raise SystemExit(f"compare_lrp_toolbox: error: need {model_file} and {mnist_dir}/t10k-images-idx3-ubyte.gz")
    model_io = import_toolbox(toolbox_folder(toolbox_dir))
    raw = read_idx(images[0])[:digits]

    network = model_io.read(str(model_file))
    x_toolbox = toolbox_inputs(raw)
    logits_toolbox = network.forward(x_toolbox)
    ours = read_toolbox_txt(str(model_file), dtype=torch.float64)
    x = torch.from_numpy(x_toolbox).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        logits = ours(x)
    base = [f"model.weights={model_file}", "model=lenet5_mnist"]
    preprocess = preprocess_of(compose_options(*base).model)
    prepared = torch.stack([preprocess.image(Image.fromarray(digit)) for digit in raw]).double()
    print(f"{digits} digits; logits: max |learnroot - toolbox| = {np.abs(logits.numpy() - logits_toolbox).max():.2e} "
          f"(float64); model.pad/mean/std preprocessing vs the toolbox's input: "
          f"{float((prepared - x).abs().max()):.1e} (float32)")
    predicted = logits_toolbox.argmax(axis=1)
    r_init = logits_toolbox * np.eye(logits_toolbox.shape[1])[predicted]
    pools = sum(type(module).__name__ == "SumPool" for module in network.modules)
    box = preprocess.box(dtype=torch.float64)
    results = []
    print(f"{'rule':28s} {'max rel. diff':>13s}  sum R learnroot / toolbox (digit 0)")
    for label, (variant, param), overrides, first in RULES:
        network.forward(x_toolbox)
        if first is None:
            heat = network.lrp(r_init.copy(), variant, param)
        else:
            network.set_lrp_parameters(variant, param)
            network.modules[0].set_lrp_parameters(first, None)
            heat = network.lrp(r_init.copy())
            network.set_lrp_parameters(None, None)
        if variant == "alphabeta":
            heat = heat / param ** pools  # the toolbox's SumPool multiplies by alpha
        options = compose_options(*base, *COMMON, *overrides)
        attribution = make_attributor(ours, options.method, options.root_opt, box)(x, torch.from_numpy(predicted))
        relevance = attribution.relevance.permute(0, 2, 3, 1).numpy()
        scale = np.abs(heat).reshape(digits, -1).max(axis=1)
        difference = float((np.abs(relevance - heat).reshape(digits, -1).max(axis=1) / scale).max())
        results.append((label, difference))
        print(f"{label:28s} {difference:13.2e}  {relevance[0].sum():.6g} / {heat[0].sum():.6g}")
    print(f"{'flat (every layer)':28s} {'not shared':>13s}  (no learnroot method uses flat on hidden layers)")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("toolbox", help="the LRP toolbox folder (or its python/ folder)")
    parser.add_argument("--digits", type=int, default=10, help="MNIST t10k digits to explain (the first N)")
    parser.add_argument("--mnist", default=None, help="folder with t10k-images-idx3-ubyte[.gz] (default: shared data)")
    parser.add_argument("--model", default=None, help="the toolbox's LeNet-5 .txt (default: shared data)")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="largest accepted relative difference")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    results = compare(args.toolbox, args.digits, args.mnist, args.model)
    worst = max(difference for _, difference in results)
    print(f"worst: {worst:.2e} (tolerance {args.tolerance:g})")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
