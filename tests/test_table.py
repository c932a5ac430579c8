"""``learnroot-table`` on run folders written by hand: identity, duplicates, failures, formats."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import script
from learnroot.report import build, decide


def config(method: str = "ours", steps: int = 5, output_root: str = "outputs", limit: int = 4) -> dict:
    """A composed config like Hydra's ``.hydra/config.yaml`` (the keys the table looks at)."""
    return {"model": {"name": "small_cnn", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                      "value_range": [0.0, 1.0]},
            "dataset": {"name": "shapes", "limit": limit, "num_workers": 0},
            "method": {"name": method, "epsilon": 0.25},
            "root_opt": {"name": "default", "conv": {"steps": steps, "lr": 1.0, "loss": "mse"}},
            "metrics": {"pf_steps": 10, "pf_chunk": 256},
            "paths": {"output_root": output_root, "cache_dir": "~/.cache/learnroot"},
            "batch_size": 4, "device": "auto", "seed": 0, "save_heatmaps": True, "save_relevance": True,
            "resume": None}


def make_run(folder: Path, cfg: dict, overrides: list[str], metrics: dict | None = None, failed: str | None = None,
             mtime: float | None = None, n: int = 4) -> Path:
    """Write a run folder: ``.hydra/``, then ``metrics.json`` (complete) or ``failed.json`` or nothing."""
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(cfg), folder / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
    written = None
    if metrics is not None:
        written = folder / "metrics.json"
        written.write_text(json.dumps({"status": "complete", "n_samples": n, "n_ok": n, "method": cfg["method"]["name"],
                                       "metrics": {name: {"mean": mean, "std": std, "n": count}
                                                   for name, (mean, std, count) in metrics.items()},
                                       "curves": {}}))
    elif failed is not None:
        written = folder / "failed.json"
        written.write_text(json.dumps({"status": "failed", "error": failed, "type": "RunError"}))
    if written is not None and mtime is not None:
        os.utime(written, (mtime, mtime))
    return folder


def run_table(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([script("learnroot-table"), *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.fixture
def sweep(tmp_path) -> Path:
    """A sweep of two methods x two root_opt.conv.steps, one failed job and one unfinished job."""
    root = tmp_path / "sweeps" / "s1"
    values = {("dtd_zplus", 0): (0.30, 0.70), ("dtd_zplus", 2): (0.25, 0.80),
              ("ours", 0): (0.20, 0.75), ("ours", 2): (0.10, 0.90)}
    for job, ((method, steps), (morf, lerf)) in enumerate(values.items()):
        make_run(root / str(job), config(method, steps),
                 [f"method={method}", f"root_opt.conv.steps={steps}", "dataset.limit=4"],
                 metrics={"morf_auc": (morf, 0.01, 4), "lerf_auc": (lerf, 0.02, 4),
                          "conservation_error": (1e-7, 2e-8, 3), "target_logit": (5.0, 1.0, 4)})
    for job in range(4):  # written in job order: job 1 is the newer dtd_zplus run
        for file in (root / str(job)).glob("metrics.json"):
            os.utime(file, (1_000_000 + job, 1_000_000 + job))
    make_run(root / "4", config("ours", 7), ["method=ours", "root_opt.conv.steps=7"], failed="the dataset selection is empty")
    make_run(root / "5", config("ours", 9), ["method=ours", "root_opt.conv.steps=9"])
    return root


def test_pivot_rows_numbers_and_best_marks(sweep, tmp_path):
    out = tmp_path / "tables"
    result = run_table(sweep, "-o", out)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in out.iterdir()) == ["runs.csv", "table.csv", "table.md", "table.tex"]

    pivot = pd.read_csv(out / "table.csv", dtype={"root_opt.conv.steps": str})
    assert list(pivot.columns[:4]) == ["method", "model", "root_opt.conv.steps", "n"]
    # dtd_zplus does not read root_opt: its two runs are one configuration (the newest is used), shown with '-'
    assert list(zip(pivot["method"], pivot["root_opt.conv.steps"])) == [("dtd_zplus", "-"), ("ours", "0"), ("ours", "2")]
    assert list(pivot["n"]) == [4, 4, 4]
    assert list(pivot["morf_auc_mean"]) == [0.25, 0.20, 0.10]
    assert list(pivot["lerf_auc_std"]) == [0.02] * 3
    # morf: lower is better -> ours/2 (0.10); lerf: higher is better -> ours/2 (0.90)
    assert list(pivot["morf_auc_best"]) == [False, False, True]
    assert list(pivot["lerf_auc_best"]) == [False, False, True]
    assert "target_logit_mean" not in pivot.columns  # not a default metric
    assert list(pivot["conservation_error_n"]) == [3, 3, 3]

    markdown = (out / "table.md").read_text()
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| method | model | root_opt.conv.steps | n | morf_auc ↓ | lerf_auc ↑")
    assert len(lines) == 1 + 3
    assert "| ours | small_cnn | 2 | 4 | **0.100 ± 0.010** | **0.900 ± 0.020** | 1.00e-07 ± 2.00e-08 (n=3) |" in markdown
    assert "| dtd_zplus | small_cnn | - | 4 | 0.250 ± 0.010 | 0.800 ± 0.020 |" in markdown
    assert f"2 complete runs of one config: using the newest {sweep / '1'}" in markdown
    # failed and unfinished runs are listed, not dropped
    assert f"- failed: `{sweep / '4'}` (method=ours root_opt.conv.steps=7): the dataset selection is empty" in markdown
    assert f"- unfinished: `{sweep / '5'}`" in markdown
    assert f"failed: {sweep / '4'}: the dataset selection is empty" in result.stderr
    assert f"unfinished: {sweep / '5'}" in result.stderr

    tex = (out / "table.tex").read_text()
    assert r"\begin{tabular}{lllrrrr}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"morf\_auc $\downarrow$" in tex and r"root\_opt.conv.steps" in tex
    assert r"ours & small\_cnn & 2 & 4 & \textbf{0.100 $\pm$ 0.010} & \textbf{0.900 $\pm$ 0.020}" in tex
    assert f"% failed: {sweep / '4'}" in tex

    runs = pd.read_csv(out / "runs.csv")
    assert set(runs["run"]) == {str(sweep / str(job)) for job in range(6)}
    status = runs.drop_duplicates("run").set_index("run")["status"]
    assert status[str(sweep / "4")] == "failed" and status[str(sweep / "5")] == "unfinished"
    assert status[str(sweep / "0")] == "superseded"
    assert (status[[str(sweep / str(job)) for job in range(1, 4)]] == "complete").all()
    ours2 = runs[(runs["run"] == str(sweep / "3")) & (runs["metric"] == "target_logit")]
    assert ours2[["mean", "std", "n"]].values.tolist() == [[5.0, 1.0, 4]]  # runs.csv keeps every metric


def test_duplicates_newest_wins_and_paths_do_not_split_configs(tmp_path):
    root = tmp_path / "outputs"
    old = make_run(root / "runs" / "a", config("ours", output_root="/somewhere"), ["method=ours"],
                   metrics={"morf_auc": (0.5, 0.1, 4)}, mtime=1_000_000)
    new = make_run(root / "sweeps" / "x" / "0", config("ours", output_root="/elsewhere"), ["method=ours"],
                   metrics={"morf_auc": (0.4, 0.1, 4)}, mtime=2_000_000)
    retry = make_run(root / "runs" / "b", config("ours"), ["method=ours"], failed="boom", mtime=3_000_000)
    other = make_run(root / "runs" / "c", config("lrp_0"), ["method=lrp_0"], metrics={"morf_auc": (0.6, 0.1, 4)})
    result = run_table(root, "-o", tmp_path / "t", "--format", "md")
    assert result.returncode == 0, result.stderr
    pivot = build.aggregate(root).pivot
    assert list(pivot["method"]) == ["lrp_0", "ours"]
    assert list(pivot["morf_auc_mean"]) == [0.6, 0.4]  # the newer duplicate
    assert f"using the newest {new}" in result.stderr and f"superseded: {old}" in result.stderr
    assert f"has a complete duplicate: using {new}" in result.stderr
    runs = pd.read_csv(tmp_path / "t" / "runs.csv").drop_duplicates("run").set_index("run")
    assert runs.loc[str(old), "status"] == "superseded" and not runs.loc[str(old), "used"]
    assert runs.loc[str(new), "status"] == "complete" and runs.loc[str(new), "used"]
    assert runs.loc[str(retry), "status"] == "failed" and str(new) in runs.loc[str(retry), "note"]
    assert runs.loc[str(other), "status"] == "complete"
    markdown = (tmp_path / "t" / "table.md").read_text()
    assert "using the newest" in markdown and "**0.400 ± 0.100**" in markdown
    # a failed run whose config has a complete run does not count for --strict
    assert run_table(root, "-o", tmp_path / "t", "--strict", "-q").returncode == 0


def test_configs_that_share_labels_get_distinguishing_columns(tmp_path):
    # the same overrides but a different composed config (e.g. a config file changed between runs)
    one = config("ours")
    two = config("ours")
    two["method"]["epsilon"] = 0.5
    make_run(tmp_path / "r1", one, ["method=ours"], metrics={"morf_auc": (0.1, 0.0, 4)})
    make_run(tmp_path / "r2", two, ["method=ours"], metrics={"morf_auc": (0.2, 0.0, 4)})
    result = build.aggregate(tmp_path)
    assert [title for title, _ in result.columns] == ["method", "model", "method.epsilon"]
    assert list(result.pivot["method.epsilon"]) == [0.25, 0.5]


def test_strict_and_errors(sweep, tmp_path):
    assert run_table(sweep, "-o", tmp_path / "t", "--strict", "-q").returncode == 1
    bad_by = run_table(sweep, "--by", "colour", "-o", tmp_path / "t")
    assert bad_by.returncode == 2 and bad_by.stderr.startswith("learnroot-table: error: --by colour")
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = run_table(empty)
    assert nothing.returncode == 2 and "no run folders" in nothing.stderr
    assert run_table(sweep, "--format", "xlsx").returncode == 2
    assert run_table(sweep, "--metrics", "nonsense", "-o", tmp_path / "t").returncode == 2


def test_metrics_selection_by_and_name(sweep, tmp_path):
    result = run_table(sweep, "--metrics", "lerf_auc,target_logit", "--by", "method", "--format", "csv",
                       "--name", "ablation", "-o", tmp_path / "t")
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in (tmp_path / "t").iterdir()) == ["ablation.csv", "ablation_runs.csv"]
    pivot = pd.read_csv(tmp_path / "t" / "ablation.csv")
    assert list(pivot.columns) == ["method", "root_opt.conv.steps", "n", "lerf_auc_mean", "lerf_auc_std", "lerf_auc_n",
                                   "target_logit_mean", "target_logit_std", "target_logit_n", "lerf_auc_best",
                                   "target_logit_best"]
    assert not pivot["target_logit_best"].any()  # no known direction: nothing marked


def test_metric_directions():
    for name in ("morf_auc", "positive_auc", "conservation_error", "seconds_attribution", "seconds_evaluation"):
        assert decide.metric_direction(name) == "lower"
    for name in ("lerf_auc", "negative_auc", "pf_auc_diff", "miou", "pixel_accuracy", "average_precision",
                 "pointing_game", "mass_inside", "accuracy"):
        assert decide.metric_direction(name) == "higher"
    assert decide.metric_direction("target_logit") is None


def test_best_marks_tie_at_the_shown_precision():
    values = pd.Series([0.1001, 0.1004, 0.2, float("nan")])
    assert list(decide.best_mask(values, "lower")) == [True, True, False, False]  # both show as 0.100
    assert list(decide.best_mask(values, "higher")) == [False, False, True, False]
    assert not decide.best_mask(pd.Series([0.5, 0.5]), "higher").any()  # all equal: nothing marked
    assert not decide.best_mask(values, None).any()


def test_folders_that_failed_before_start_are_listed_apart(tmp_path):
    make_run(tmp_path / "runs" / "a", config("ours"), ["method=ours"], metrics={"morf_auc": (0.1, 0.0, 4)})
    bad = make_run(tmp_path / "runs" / "b", config("ours", 3), ["method=ours", "root_opt.conv.steps=3"])
    (bad / "failed.json").write_text(json.dumps({"status": "failed", "stage": "build", "type": "ModelError",
                                                 "error": "weights file x.pt does not fit small_cnn"}))
    crashed = make_run(tmp_path / "runs" / "c", config("ours", 4), ["method=ours", "root_opt.conv.steps=4"],
                       failed="RuntimeError: boom")
    result = run_table(tmp_path, "-o", tmp_path / "t", "-q")
    assert result.returncode == 0, result.stderr
    assert "1 failed or unfinished, 1 failed before start" in result.stderr
    assert f"failed before start: {bad}: weights file x.pt does not fit small_cnn" in result.stderr
    markdown = (tmp_path / "t" / "table.md").read_text()
    assert "**1 run(s) without results:**" in markdown and f"- failed: `{crashed}`" in markdown
    assert "**1 run folder(s) that failed before starting (bad input, no results expected):**" in markdown
    assert f"- failed before start: `{bad}`" in markdown
    runs = pd.read_csv(tmp_path / "t" / "runs.csv").drop_duplicates("run").set_index("run")
    assert runs.loc[str(bad), "status"] == "failed before start"


def test_root_opt_columns_are_blank_for_methods_that_ignore_them(tmp_path):
    """dtd_zplus runs that differ only in root_opt are one configuration; its root_opt cells show '-'."""
    for job, (method, steps) in enumerate([("dtd_zplus", 0), ("dtd_zplus", 10), ("ours", 0), ("ours", 10)]):
        make_run(tmp_path / str(job), config(method, steps), [f"method={method}", f"root_opt.conv.steps={steps}"],
                 metrics={"morf_auc": (0.2, 0.0, 4)}, mtime=1_000_000 + job)
    result = build.aggregate(tmp_path)
    assert [(row["method"], row["root_opt.conv.steps"]) for _, row in result.pivot.iterrows()] == [
        ("dtd_zplus", "-"), ("ours", 0), ("ours", 10)]
    assert [str(run.path.name) for run in result.used] == ["1", "2", "3"]


def test_a_config_that_is_not_complete_is_listed_as_unreadable(tmp_path):
    """A truncated .hydra/config.yaml that still parses (no method, no model) is no row with blank labels."""
    make_run(tmp_path / "0", config("ours"), ["method=ours"], metrics={"morf_auc": (0.1, 0.0, 4)})
    bad = make_run(tmp_path / "1", config("dtd_zplus"), ["method=dtd_zplus"], metrics={"morf_auc": (0.2, 0.0, 4)})
    (bad / ".hydra" / "config.yaml").write_text("model:\n  name: small_cnn\n  mean: [0.5,")  # YAML error
    worse = make_run(tmp_path / "2", config("lrp_0"), ["method=lrp_0"], metrics={"morf_auc": (0.3, 0.0, 4)})
    (worse / ".hydra" / "config.yaml").write_text("dataset:\n  name: shapes\n")  # parses, but no method or model
    result = run_table(tmp_path, "-o", tmp_path / "t", "--format", "md,csv")
    assert result.returncode == 0, result.stderr
    pivot = pd.read_csv(tmp_path / "t" / "table.csv")
    assert list(pivot["method"]) == ["ours"] and pivot["model"].notna().all()
    assert f"unreadable: {worse}: unreadable .hydra/config.yaml or overrides.yaml: ValueError: not a complete " \
           "learnroot config (no method.name, model.name)" in result.stderr
    assert f"unreadable: {bad}: unreadable .hydra/config.yaml" in result.stderr
    markdown = (tmp_path / "t" / "table.md").read_text()
    assert f"- unreadable: `{worse}`" in markdown and f"- unreadable: `{bad}`" in markdown


def test_best_values_are_marked_among_rows_with_the_same_n(tmp_path):
    for job, (method, limit, n, morf) in enumerate([("dtd_zplus", 4, 4, 0.30), ("ours", 4, 4, 0.20),
                                                     ("lrp_0", 32, 32, 0.10), ("lrp_epsilon", 32, 32, 0.15)]):
        make_run(tmp_path / str(job), config(method, limit=limit), [f"method={method}", f"dataset.limit={limit}"],
                 metrics={"morf_auc": (morf, 0.01, n)}, n=n)
    result = build.aggregate(tmp_path)
    marks = dict(zip(result.pivot["method"], result.pivot["morf_auc_best"]))
    # lower is better: 0.10 is the best of the n = 32 rows, 0.20 of the n = 4 rows (not 'not best' next to 0.10)
    assert marks == {"dtd_zplus": False, "ours": True, "lrp_0": True, "lrp_epsilon": False}
    assert list(decide.best_mask(pd.Series([0.3, 0.2, 0.1]), "lower", pd.Series([4, 4, 32]))) == [False, True, False]
    run_table(tmp_path, "-o", tmp_path / "t", "--format", "md")
    assert "Rows differ in n: a best value is marked only among rows with the same n" in \
        (tmp_path / "t" / "table.md").read_text()


def test_model_names_in_tables():
    from learnroot.report.runs import model_display
    assert model_display({"model.name": "torchvision", "model.arch": "resnet18"}) == "resnet18"
    assert model_display({"model.name": "torchvision", "model.arch": "", "model.target": None}) == "torchvision"
    assert model_display({"model.name": "custom", "model.arch": "", "model.target": "pkg.mod:factory"}) == "factory"
    assert model_display({"model.name": "custom", "model.target": "pkg.models.build_net"}) == "build_net"
    assert model_display({"model.name": "small_cnn"}) == "small_cnn"  # old run folders without the keys


def test_model_column_shows_the_architecture(tmp_path):
    one, two = config("ours"), config("ours")
    one["model"].update(name="torchvision", arch="resnet18")
    two["model"].update(name="torchvision", arch="vgg16")
    make_run(tmp_path / "0", one, ["method=ours", "model=torchvision", "model.arch=resnet18"],
             metrics={"morf_auc": (0.1, 0.0, 4)})
    make_run(tmp_path / "1", two, ["method=ours", "model=torchvision", "model.arch=vgg16"],
             metrics={"morf_auc": (0.2, 0.0, 4)})
    result = build.aggregate(tmp_path)
    assert list(result.pivot["model"]) == ["resnet18", "vgg16"]
