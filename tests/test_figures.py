"""``learnroot-figures``: pixel sizes, captions, unnormalised inputs, and the toy table's numbers."""
from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import script
from learnroot.figures.curves import plot_mean_curves
from learnroot.report.files import display_image
from test_table import config, make_run


def run_figures(*args) -> subprocess.CompletedProcess:
    return subprocess.run([script("learnroot-figures"), *map(str, args)], capture_output=True, text=True, timeout=300)


def png_size(path: Path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 1000, path
    with Image.open(path) as image:
        return image.size


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


CURVES = {"morf": {"x": [0.0, 0.5, 1.0], "prob": [0.9, 0.3, 0.1], "logit": [3.0, 0.0, -1.0]},
          "lerf": {"x": [0.0, 0.5, 1.0], "prob": [0.9, 0.8, 0.1], "logit": [3.0, 2.0, -1.0]}}


@pytest.fixture
def runs(tmp_path) -> Path:
    """Two complete runs (dtd_zplus, ours) with relevance arrays of three 8 x 8 RGB images, a third
    run that saved no arrays, and a failed run."""
    root = tmp_path / "sweep"
    rng = np.random.default_rng(0)
    for job, method in enumerate(("dtd_zplus", "ours")):
        folder = make_run(root / str(job), config(method), [f"method={method}"], metrics={"morf_auc": (0.2, 0.1, 3)})
        data = json.loads((folder / "metrics.json").read_text())
        data["curves"] = CURVES
        (folder / "metrics.json").write_text(json.dumps(data))
        (folder / "relevance").mkdir()
        for sample in ("img_a", "img_b", "img_c"):
            np.savez(folder / "relevance" / f"{sample}.npz", relevance=rng.normal(size=(3, 8, 8)).astype(np.float32),
                     input=rng.normal(size=(3, 8, 8)).astype(np.float32), target=np.int64(1), logit=np.float64(2.0))
    make_run(root / "2", config("gradient"), ["method=gradient"], failed="boom")
    return root


def test_heatmap_grid_size_and_caption(runs, tmp_path):
    out = tmp_path / "figs"
    result = run_figures("heatmaps", runs, "-o", out, "-n", "2", "--prefix", "m_")
    assert result.returncode == 0, result.stderr
    # (1 input + 2 methods) columns x 160 px; 2 rows (the first and last id) x 160 px + 40 px of titles
    # + 50 px of colour bar
    assert png_size(out / "m_heatmaps.png") == (3 * 160, 2 * 160 + 40 + 50)
    assert (out / "m_heatmaps.pdf").stat().st_size > 1000
    caption = (out / "m_heatmaps.txt").read_text()
    assert "scaled by its own largest absolute relevance" in caption
    assert "Images: img_a, img_c" in caption and "- dtd_zplus:" in caption and "- ours:" in caption
    # row scaling and explicit ids; dpi scales the pixel size
    result = run_figures("heatmaps", runs, "-o", out, "--ids", "img_c", "--scale", "row", "--dpi", "50",
                         "--format", "png")
    assert result.returncode == 0, result.stderr
    assert png_size(out / "heatmaps.png") == (3 * 80, 160 // 2 + 20 + 25)
    assert "share one scale" in (out / "heatmaps.txt").read_text()
    assert not (out / "heatmaps.pdf").exists()
    missing = run_figures("heatmaps", runs, "-o", out, "--ids", "img_z")
    assert missing.returncode == 2 and "img_z" in missing.stderr


def test_curves_figure(runs, tmp_path):
    result = run_figures("curves", runs, "-o", tmp_path)
    assert result.returncode == 0, result.stderr
    assert png_size(tmp_path / "curves.png") == (550, 400)
    assert (tmp_path / "curves.pdf").is_file()
    assert "dtd_zplus, ours" in (tmp_path / "curves.txt").read_text()


def test_plot_mean_curves_keeps_its_runner_interface(tmp_path):
    plot_mean_curves({"ours": CURVES}, tmp_path / "curves.png", title="t")
    assert png_size(tmp_path / "curves.png") == (550, 400)


def test_display_image_undoes_the_normalisation():
    raw = np.array([0.2, 0.6, 1.0]).reshape(3, 1, 1) * np.ones((3, 2, 2))
    normalised = (raw - 0.5) / 0.25
    shown = display_image(normalised, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25], [0.0, 1.0])
    assert shown.shape == (2, 2, 3)
    assert np.allclose(shown[0, 0], [0.2, 0.6, 1.0])
    # a [0, 5] range with one channel (the toy): grey in [0, 1]
    grey = display_image(np.array([[[2.5, 5.0]]]), [0.0], [1.0], [0.0, 5.0])
    assert grey.shape == (1, 2) and np.allclose(grey, [[0.5, 1.0]])


def test_nothing_to_plot_is_a_one_line_error(tmp_path):
    result = run_figures("curves", tmp_path, "-o", tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("learnroot-figures: error:")


def test_toy_figure_and_its_numbers(tmp_path):
    result = run_figures("toy", "-o", tmp_path)
    assert result.returncode == 0, result.stderr
    assert png_size(tmp_path / "toy.png") == (1000, 450)
    assert (tmp_path / "toy.pdf").stat().st_size > 1000
    caption = (tmp_path / "toy.txt").read_text()
    assert "x~ = x - 0.1" in caption and "[0, 5]^2" in caption

    # independent values: a = (2, 0.5), b = a + (0.5, 0), c above a with f(c) = f(b)
    t = sigmoid(2.5) + sigmoid(0.5) - sigmoid(2.0)
    points = {"a": (2.0, 0.5), "b": (2.5, 0.5), "c": (2.0, math.log(t / (1 - t)))}
    d = lambda v: sigmoid(v) * (1 - sigmoid(v))  # sigmoid'
    frame = pd.read_csv(tmp_path / "toy.csv")
    assert len(frame) == 9 and set(frame["method"]) == {"lrp_0", "gxi_nearby_root", "ours"}
    for row in frame.itertuples():
        x, y = points[row.point]
        f = sigmoid(x) + sigmoid(y)
        assert (row.x, row.y) == pytest.approx((x, y), rel=1e-12)
        assert row.f == pytest.approx(f, rel=1e-9)
        if row.method == "lrp_0":  # root 0: gradient x input
            expected = (x * d(x), y * d(y))
        elif row.method == "gxi_nearby_root":  # root x - 0.1: 0.1 * gradient
            expected = (0.1 * d(x), 0.1 * d(y))
        else:
            # learned root at the affine layer, kept in its box [sigmoid(0), sigmoid(5)]: the signal
            # s_i = sigmoid(x_i) - 1/2 (root at the lower corner; the mse loss pulls W^T s up toward f),
            # redistributed exactly: R_i = s_i f / (s_x + s_y); then the sigmoid's z rule multiplies by
            # x_i sigmoid'(x_i) / sigmoid(x_i)
            s = (sigmoid(x) - 0.5, sigmoid(y) - 0.5)
            upper = [s_i * f / (s[0] + s[1]) for s_i in s]
            expected = tuple(upper[i] * v * d(v) / sigmoid(v) for i, v in enumerate((x, y)))
        assert (row.r_x, row.r_y) == pytest.approx(expected, rel=2e-5), row
        assert row.r_sum == pytest.approx(sum(expected), rel=2e-5)
    # the seed's point: b and c lie on one contour, yet their explanations differ
    lrp = frame[frame["method"] == "lrp_0"].set_index("point")
    assert lrp.loc["b", "f"] == pytest.approx(lrp.loc["c", "f"])
    assert abs(lrp.loc["b", "r_sum"] - lrp.loc["c", "r_sum"]) > 0.05
