"""``learnroot-table --paired``: paired differences and bootstrap intervals against slow references;
``--list-metrics``; the plain table's legend."""
from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest

from learnroot.report import paired, table
from test_table import config, make_run, run_table

IDS = ["s1", "s2", "s3", "s4", "s5", "s6"]
BASE = {"morf_auc": [0.50, 0.40, 0.60, 0.55, 0.45, 0.70], "lerf_auc": [0.80, 0.70, 0.90, 0.85, 0.75, 0.60],
        "target_logit": [5.0, 6.0, 7.0, 8.0, 9.0, 10.0]}


def ref_percentile(values: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default), written out."""
    ordered = sorted(values)
    position = q / 100 * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ref_ci(differences: list[float], resamples: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95 % percentile interval, one resample at a time (rows of the shared index matrix)."""
    indices = paired.bootstrap_indices(len(differences), resamples, seed)
    means = []
    for row in indices:
        means.append(sum(differences[i] for i in row) / len(row))
    return sum(differences) / len(differences), ref_percentile(means, 2.5), ref_percentile(means, 97.5)


# --- the statistics -----------------------------------------------------------------------------


def test_bootstrap_matches_the_loop_reference():
    values = [0.3, -0.1, 0.25, 0.05, 0.4, -0.2, 0.15]
    mean, low, high, n = paired.bootstrap_ci(values)
    ref_mean, ref_low, ref_high = ref_ci(values)
    assert n == 7
    assert mean == pytest.approx(ref_mean, abs=1e-15)
    assert (low, high) == (pytest.approx(ref_low, abs=1e-12), pytest.approx(ref_high, abs=1e-12))
    # the resamples are fixed by the seed, draw every index, and do not depend on the block size
    indices = paired.bootstrap_indices(7)
    assert indices.shape == (10_000, 7) and set(np.unique(indices)) == set(range(7))
    assert np.array_equal(indices, paired.bootstrap_indices(7))
    assert paired.bootstrap_ci(values, seed=1)[1] != low


def test_bootstrap_exact_and_asymptotic_cases():
    # three values: each extreme resample (all copies of one value) has probability 1/27 > 2.5 %, so the
    # 2.5 % and 97.5 % quantiles of the exact bootstrap distribution are the smallest and largest values
    assert paired.bootstrap_ci([0.1, 0.4, 1.0])[1:3] == (pytest.approx(0.1, abs=1e-15), 1.0)
    # many values: the interval is about mean +- 1.96 standard errors
    rng = np.random.default_rng(5)
    values = rng.normal(0.2, 1.0, size=400)
    mean, low, high, _ = paired.bootstrap_ci(values)
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))
    assert low == pytest.approx(mean - half, abs=0.1 * half) and high == pytest.approx(mean + half, abs=0.1 * half)
    assert all(math.isnan(v) for v in paired.bootstrap_ci([])[:3])


def test_marks_follow_the_direction():
    assert paired.mark(0.01, 0.05, "higher") == "better" and paired.mark(0.01, 0.05, "lower") == "worse"
    assert paired.mark(-0.05, -0.01, "lower") == "better" and paired.mark(-0.05, -0.01, "higher") == "worse"
    assert paired.mark(-0.01, 0.05, "higher") == "" and paired.mark(0.0, 0.0, "higher") == ""
    assert paired.mark(0.01, 0.05, None) == "differs" and paired.mark(math.nan, math.nan, "higher") == ""


def test_selectors():
    assert paired.parse_selector("dtd_zplus") == {"method": "dtd_zplus"}
    assert paired.parse_selector("method=ours, root_opt.conv.steps=0") == {"method": "ours",
                                                                          "root_opt.conv.steps": "0"}
    flat = {"method.name": "ours", "root_opt.conv.steps": 0, "root_opt.conv.lr": 1.0, "metrics.aopc": True,
            "model.mean": "[0.5, 0.5]"}
    assert paired.selector_matches(flat, {"method": "ours", "root_opt.conv.steps": "0"})
    assert paired.selector_matches(flat, {"root_opt.conv.lr": "1", "metrics.aopc": "true"})
    assert paired.selector_matches(flat, {"model.mean": "[0.5, 0.5]"})
    assert not paired.selector_matches(flat, {"method": "our"})
    assert not paired.selector_matches(flat, {"root_opt.conv.steps": "5"})
    with pytest.raises(ValueError):
        paired.parse_selector(" , ")


# --- the table ----------------------------------------------------------------------------------


def write_samples(folder, values: dict, status=None, ids=IDS):
    frame = pd.DataFrame({"id": ids, "status": status or ["ok"] * len(ids), **values})
    frame.to_csv(folder / "per_sample.csv", index=False)


def shifted(deltas: dict) -> dict:
    return {name: [b + d for b, d in zip(BASE[name], deltas[name])] for name in BASE}


OURS = {"morf_auc": [-0.10, -0.12, -0.08, -0.11, math.nan, -0.20], "lerf_auc": [0.05, -0.04, 0.02, -0.03, 0.01, 0.0],
        "target_logit": [1.0, 1.5, 0.5, 2.0, 1.0, 0.0]}
LRP = {"morf_auc": [0.05, 0.07, 0.06, 0.05, 0.08, 0.06], "lerf_auc": [0.02, -0.02, 0.01, -0.01, 0.0, 0.03],
       "target_logit": [0.0] * 6}


@pytest.fixture
def runs(tmp_path):
    """Baseline dtd_zplus, ours (s5's morf NaN, s6 flagged, an extra s7), lrp_0, and ours on another model."""
    root = tmp_path / "sweep"
    means = {"morf_auc": (0.5, 0.1, 6), "lerf_auc": (0.8, 0.1, 6), "target_logit": (7.0, 1.0, 6)}
    base = make_run(root / "0", config("dtd_zplus"), ["method=dtd_zplus"], metrics=means, n=6)
    write_samples(base, BASE)
    ours = make_run(root / "1", config("ours"), ["method=ours"], metrics=means, n=6)
    values = shifted(OURS)
    values = {name: column + [0.0] for name, column in values.items()}
    write_samples(ours, values, status=["ok"] * 5 + ["flagged", "ok"], ids=IDS + ["s7"])
    lrp = make_run(root / "2", config("lrp_0"), ["method=lrp_0"], metrics=means, n=6)
    write_samples(lrp, shifted(LRP))
    other = copy.deepcopy(config("ours"))
    other["model"]["name"] = "vgg16"
    elsewhere = make_run(root / "3", other, ["method=ours", "model=vgg16"], metrics=means, n=6)
    write_samples(elsewhere, BASE)
    return root


def expected(deltas: dict, name: str, keep: list[int]) -> tuple[float, float, float]:
    mine = shifted(deltas)[name]
    return ref_ci([mine[i] - BASE[name][i] for i in keep])


def test_paired_table_against_the_reference(runs, tmp_path):
    out = tmp_path / "tables"
    result = run_table(runs, "--paired", "dtd_zplus", "--metrics", "morf_auc,lerf_auc,target_logit", "-o", out)
    assert result.returncode == 0, result.stderr
    names = sorted(path.name for path in out.iterdir())
    assert names == ["runs.csv", "table.csv", "table.md", "table.tex", "table_paired.csv", "table_paired.md",
                     "table_paired.tex"]
    frame = pd.read_csv(out / "table_paired.csv").set_index("method")
    assert list(frame.index) == ["lrp_0", "ours"]  # the baseline and the other model's run are not rows
    assert set(frame["baseline"]) == {"method=dtd_zplus model=small_cnn"}
    # ours: s1..s5 ok in both (s6 flagged, s7 not in the baseline); morf of s5 is NaN
    assert frame.loc["ours", "n"] == 5 and frame.loc["lrp_0", "n"] == 6
    checks = [("ours", OURS, "morf_auc", [0, 1, 2, 3], "better"), ("ours", OURS, "lerf_auc", [0, 1, 2, 3, 4], ""),
              ("ours", OURS, "target_logit", [0, 1, 2, 3, 4], "differs"),
              ("lrp_0", LRP, "morf_auc", list(range(6)), "worse"), ("lrp_0", LRP, "target_logit", list(range(6)), "")]
    for method, deltas, name, keep, sign in checks:
        mean, low, high = expected(deltas, name, keep)
        row = frame.loc[method]
        assert row[f"{name}_n"] == len(keep), (method, name)
        assert row[f"{name}_diff"] == pytest.approx(mean, abs=1e-12), (method, name)
        assert row[f"{name}_low"] == pytest.approx(low, abs=1e-12), (method, name)
        assert row[f"{name}_high"] == pytest.approx(high, abs=1e-12), (method, name)
        assert (row[f"{name}_mark"] if isinstance(row[f"{name}_mark"], str) else "") == sign, (method, name)
    assert frame.loc["ours", "morf_auc_diff"] == pytest.approx(-0.1025, abs=1e-12)  # (-.10 - .12 - .08 - .11) / 4

    markdown = (out / "table_paired.md").read_text()
    mean, low, high = expected(OURS, "morf_auc", [0, 1, 2, 3])
    cell = f"**{mean:+.3f} [{low:+.3f}, {high:+.3f}] (n=4)**"
    assert cell in markdown and cell in result.stdout
    mean, low, high = expected(LRP, "morf_auc", list(range(6)))
    assert f"| {mean:+.3f} [{low:+.3f}, {high:+.3f}] † |" in markdown
    assert "+0.000 [+0.000, +0.000] |" in markdown  # lrp_0's logit: identical, not marked
    assert " * |" in markdown  # ours' logit: differs, no better side
    assert "percentile-bootstrap" in markdown and "10,000 resamples" in markdown
    assert "no baseline configuration" in markdown and str(runs / "3") in result.stderr
    tex = (out / "table_paired.tex").read_text()
    assert r"\textbf{" in tex and r"$^{\dagger}$" in tex and r"\begin{tabular}{lllrrrr}" in tex


def main(*args) -> tuple[int, str, str]:
    """``learnroot-table`` in this process (a subprocess costs seconds of imports): exit code, stdout, stderr."""
    import contextlib
    import io
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            table.main([str(arg) for arg in args])
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def test_paired_selectors_and_errors(runs, tmp_path):
    code, _, err = main(runs, "--paired", "method=dtd_zplus", "-o", tmp_path / "a", "--format", "csv", "-q")
    assert code == 0, err
    main(runs, "--paired", "dtd_zplus", "-o", tmp_path / "b", "--format", "csv", "-q")
    assert (tmp_path / "a" / "table_paired.csv").read_text() == (tmp_path / "b" / "table_paired.csv").read_text()
    code, _, err = main(runs, "--paired", "nope", "-o", tmp_path / "c")
    assert code == 2 and "learnroot-table: error: --paired" in err
    code, _, err = main(runs, "--paired", "model.name=small_cnn", "-o", tmp_path / "c")
    assert code == 2 and "more than one configuration" in err
    assert "method.name" in err  # says what tells them apart
    code, _, err = main(runs, "--paired", "dtd_zplus", "--resamples", "0", "-o", tmp_path / "c")
    assert code == 2 and "--resamples" in err


def test_plain_table_says_bold_is_not_significance(runs, tmp_path):
    code, _, err = main(runs, "-o", tmp_path / "t", "--format", "md,tex")
    assert code == 0, err
    assert "Bold marks the best mean, not a significant difference" in (tmp_path / "t" / "table.md").read_text()
    assert "not a significance test" in (tmp_path / "t" / "table.tex").read_text()
    assert not (tmp_path / "t" / "table_paired.md").exists()


def test_list_metrics():
    code, stdout, err = main("--list-metrics")
    assert code == 0, err
    lines = stdout.splitlines()
    assert "| aopc_morf_logit | aopc | faithfulness | ↑ higher | yes |" in stdout
    assert any(line.startswith("| aopc_lerf | aopc | faithfulness | ↓ lower |") for line in lines)
    assert any(line.startswith("| aopc_random | aopc | faithfulness | – |") for line in lines)
    assert any(line.startswith("| miou | localisation | plausibility | ↑ higher | yes |") for line in lines)
    assert any("at most 0.8" in line for line in lines if line.startswith("| positive_auc |"))
    assert any(line.startswith("| aopc | 3 x aopc_steps forward passes") for line in lines)
    assert main()[0] == 2  # a path is needed otherwise
