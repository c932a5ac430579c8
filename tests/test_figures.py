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


# ------------------------------------------------- issue 24: the figures' data (titles, targets, scaling)

def _npz_run(folder: Path, method: str, maps: dict, overrides=None, pixel_layer=None) -> Path:
    """A complete run whose relevance files hold ``maps[id] = dict(relevance=..., target=..., ...)``."""
    cfg = config(method)
    if pixel_layer is not None:
        cfg["root_opt"]["pixel_layer"] = pixel_layer
    make_run(folder, cfg, overrides or [f"method={method}"], metrics={"morf_auc": (0.2, 0.1, 3)})
    (folder / "relevance").mkdir()
    for sample, arrays in maps.items():
        np.savez(folder / "relevance" / f"{sample}.npz", input=np.zeros((3,) + arrays["relevance"].shape[-2:]),
                 **arrays)
    return folder


def test_multitarget_cells_name_their_own_rows_classes(tmp_path):
    from learnroot.figures.readers import runs_with
    from learnroot.figures.scenarios import scenario_grid
    from learnroot.figures.style import paper_values

    targets = {"img_a": (0, 4), "img_b": (2, 0), "img_c": (2, 5), "img_d": (3, 1)}
    negative = -np.ones((1, 4, 4))
    negative[0, 1, 1] = 0.5  # a runner-up with a negative logit: mostly negative relevance, one positive pixel
    maps = {sample: {"relevance": np.ones((1, 4, 4)), "relevance_other": negative, "target": np.int64(t),
                     "target_other": np.int64(o), "logit": np.float64(1.0)} for sample, (t, o) in targets.items()}
    _npz_run(tmp_path / "0", "ours", maps)
    runs = runs_with(tmp_path, ["method"], "relevance_other")
    grid = scenario_grid("multitarget", runs, sorted(targets))
    assert grid.titles == ["input", "ours: explained class", "ours: second class"]
    for row, sample in zip(grid.rows, sorted(targets)):
        assert [cell.label for cell in row[1:]] == [f"class {targets[sample][0]}", f"class {targets[sample][1]}"]
    # the negative map is not inverted: its zero/negative pixels sit at the bottom of the colour map, only
    # its one positive pixel is lit
    values = paper_values(negative[0])
    assert values[1, 1] == 1.0 and np.count_nonzero(values) == 1


def test_paper_style_keeps_zero_at_the_bottom():
    from learnroot.figures.style import paper_rgb, paper_values

    # hand-computed: positive part [0, 0, 2, 4] / 4 = [0, 0, .5, 1], mean .375: nothing cropped
    assert np.allclose(paper_values(np.array([[0.0, -3.0], [2.0, 4.0]])), [[0, 0], [0.5, 1.0]])
    # [1, 1, 1, 9] / 9: mean 1/3, the three ninths are cropped
    assert np.allclose(paper_values(np.array([[1.0, 1.0], [1.0, 9.0]])), [[0, 0], [0, 1.0]])
    assert not paper_values(-np.ones((3, 3))).any()  # nothing positive: all at the bottom
    # two gradient-like maps with different balances of sign: the zero background has one colour in both
    # (the paper's min-max scaling would give it min/(min-max): 0.5 and 0.9 here)
    first, second = np.zeros((4, 4)), np.zeros((4, 4))
    first[0, :2], second[0, :2] = (-1.0, 1.0), (-9.0, 1.0)
    assert np.array_equal(paper_rgb(first)[3, 3], paper_rgb(second)[3, 3])
    assert np.array_equal(paper_rgb(first)[3, 3], paper_rgb(np.zeros((2, 2)))[0, 0])


def test_details_crop_keeps_the_full_maps_colours(tmp_path):
    from learnroot.figures.readers import runs_with
    from learnroot.figures.scenarios import crop_box, scenario_grid
    from learnroot.figures.style import map_rgb

    relevance = np.zeros((1, 8, 8))
    relevance[0, 0, 0] = 10.0  # the largest value lies outside the crop
    relevance[0, 3:5, 3:5] = [[1.0, 2.0], [3.0, -1.0]]
    _npz_run(tmp_path / "0", "ours", {"img_a": {"relevance": relevance}})
    runs = runs_with(tmp_path, ["method"])
    assert crop_box((8, 8), (0.25, 0.25, 0.75, 0.75)) == (2, 2, 6, 6)
    for style in ("signed", "paper"):
        crop = scenario_grid("details", runs, ["img_a"], style).rows[0][2]
        assert crop.scale == 10.0  # the full map's scale
        assert np.array_equal(crop.image, map_rgb(relevance[0], style)[2:6, 2:6])
        assert not np.array_equal(crop.image, map_rgb(relevance[0, 2:6, 2:6], style))  # not re-normalised


def test_background_overlay_shows_the_image_in_grey_where_the_map_is_off():
    from learnroot.figures.style import overlay_rgb, paper_values

    rng = np.random.default_rng(0)
    image = rng.uniform(size=(6, 6, 3))  # a textured, coloured input
    relevance = np.zeros((6, 6))
    relevance[2:4, 2:4] = [[1.0, 2.0], [3.0, 4.0]]
    shown = overlay_rgb(relevance, image, "paper")
    off = paper_values(relevance) == 0
    grey = 0.3 + 0.4 * image.mean(-1)
    assert np.allclose(shown[off], np.repeat(grey[off][:, None], 3, axis=1))  # grey, reduced contrast
    assert (np.ptp(shown[~off], axis=1) > 0.1).all()  # coloured where the map is on


def test_grid_figure_has_a_colour_bar_and_readable_ids(runs):
    from learnroot.figures.grid import LABEL_FONT, draw_grid
    from learnroot.figures.heatmaps import heatmap_grid
    from learnroot.figures.readers import runs_with

    columns = runs_with(runs, ["method"])
    grid = heatmap_grid(columns, ["img_a", "img_b"], "row")
    assert grid.row_labels == ["img_a", "img_b"] and grid.titles == ["input", "dtd_zplus", "ours"]
    assert grid.rows[0][1].scale == grid.rows[0][2].scale  # one scale per row
    figure = draw_grid(grid)
    texts = [text for axes in figure.axes for text in axes.texts]
    assert {text.get_text() for text in texts} >= {"img_a", "img_b"}
    assert min(text.get_fontsize() for text in texts if text.get_text().startswith("img_")) >= LABEL_FONT >= 7
    bars = [axes for axes in figure.axes if axes.get_xlabel() == grid.scaling]
    assert len(bars) == 1 and grid.scaling == "the maps of one row share the largest |R| of that row"
    assert [label.get_text() for label in bars[0].get_xticklabels()] == ["−max|R|", "0", "+max|R|"]


def test_labels_leave_out_keys_that_do_not_apply(tmp_path):
    from learnroot.figures.readers import labelled_runs

    plain = np.ones((1, 4, 4))
    _npz_run(tmp_path / "0", "dtd_zplus", {"a": {"relevance": plain}}, ["method=dtd_zplus"], pixel_layer="zb")
    for job, layer in enumerate(("learned", "zb"), start=1):
        _npz_run(tmp_path / str(job), "ours", {"a": {"relevance": plain}},
                 ["method=ours", f"root_opt.pixel_layer={layer}"], pixel_layer=layer)
    labels = [label for label, _ in labelled_runs(tmp_path, ["method"])]
    assert labels == ["dtd_zplus", "ours root_opt.pixel_layer=learned", "ours root_opt.pixel_layer=zb"]


def test_layer_grid_is_at_most_eight_rows_with_labelled_rows(tmp_path):
    from learnroot.figures.layers import default_images, layer_grid
    from learnroot.figures.readers import choose_ids, runs_with

    assert [default_images(n) for n in (1, 2, 3, 4, 8, 16)] == [4, 4, 2, 2, 1, 1]
    maps = {f"img_{i}": {"relevance": np.ones((1, 4, 4)), "layer_features.0": np.ones((2, 2))} for i in range(6)}
    for job, method in enumerate(("dtd_zplus", "ours", "lrp_0", "lrp_epsilon")):
        _npz_run(tmp_path / str(job), method, maps)
    runs = runs_with(tmp_path, ["method"], "layer_")
    ids = choose_ids([path for _, path in runs], None, default_images(len(runs)))
    grid = layer_grid(runs, ids)
    assert len(grid.rows) == 8 and grid.titles == ["input", "pixels", "features.0"]
    assert grid.row_labels[0] == f"{runs[0][0]}:\n{ids[0]}" and runs[0][0] in ("lrp_0", "dtd_zplus")


def test_randomisation_ticks_count_layers():
    from learnroot.figures.randomisation import randomisation_plot

    curve = {"x": [0.0, 1.0, 2.0, 3.0], "value": [1.0, 0.8, 0.5, 0.2]}
    figure = randomisation_plot({"ours": {"randomisation": curve, "randomisation_ssim": curve}})
    for axes in figure.axes:
        ticks = [tick for tick in axes.get_xticks() if -0.5 <= tick <= 3.5]
        assert ticks and all(float(tick).is_integer() for tick in ticks), ticks


def test_unreadable_config_is_listed_not_drawn(runs, tmp_path):
    config_file = runs / "1" / ".hydra" / "config.yaml"
    config_file.write_text("model:\n  name: small_cnn\n")  # parses, but is no complete config
    result = run_figures("heatmaps", runs, "-o", tmp_path / "f", "--format", "png")
    assert result.returncode == 0, result.stderr
    assert f"learnroot-figures: unreadable: {runs / '1'}: unreadable .hydra/config.yaml" in result.stderr
    assert "- dtd_zplus:" in (tmp_path / "f" / "heatmaps.txt").read_text()
    assert "- :" not in (tmp_path / "f" / "heatmaps.txt").read_text()
