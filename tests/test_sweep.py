"""Real ``-m`` sweeps with the installed scripts: basic launcher, joblib, submitit (local), then the
table and the figures on the sweep folder."""
from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

pytestmark = pytest.mark.slow
TINY = ["dataset.limit=4", "batch_size=4", "metrics=fast"]
BAD_SPLIT = "dataset.split must be train or val"


def only_sweep(output_root: Path) -> Path:
    sweeps = [path for path in (output_root / "sweeps").iterdir() if path.is_dir()]
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def job_status(sweep: Path) -> dict[str, str]:
    status = {}
    for job in sorted(path for path in sweep.iterdir() if path.is_dir() and not path.name.startswith(".")):
        metrics = job / "metrics.json"
        status[job.name] = ("complete" if metrics.is_file() and json.loads(metrics.read_text())["status"] == "complete"
                            else "failed" if (job / "failed.json").is_file() else "unfinished")
    return status


def test_sweep_table_and_figures(run_cli, tmp_path):
    out = tmp_path / "out"
    # 2 methods x 2 root_opt values x 2 splits: the 4 jobs on the nonexistent split pass config
    # validation and fail while the run is built (before any batch)
    result = run_cli("-m", "method=dtd_zplus,ours", "root_opt.conv.steps=0,1", "dataset.split=val,nonexistent",
                     *TINY, f"paths.output_root={out}")
    assert result.returncode == 1, result.stderr  # the sweep finishes the others, then reports the failures
    sweep = only_sweep(out)
    status = job_status(sweep)
    assert sorted(status.values()) == ["complete"] * 4 + ["failed"] * 4
    assert "4 job(s) failed" in result.stderr

    tables = tmp_path / "tables"
    table = run_cli(str(sweep), "-o", str(tables), name="learnroot-table")
    assert table.returncode == 0, table.stderr
    pivot = pd.read_csv(tables / "table.csv", dtype={"root_opt.conv.steps": str})
    # dtd_zplus ignores root_opt: its two complete runs are one configuration (the newer one is used)
    assert list(zip(pivot["method"], pivot["root_opt.conv.steps"])) == [("dtd_zplus", "-"), ("ours", "0"), ("ours", "1")]
    assert list(pivot["n"]) == [4] * 3 and list(pivot["morf_auc_n"]) == [4] * 3
    assert "dataset.split" not in pivot.columns  # the complete runs all used val

    # each row's numbers are its run's per-sample values averaged (read independently here)
    runs = pd.read_csv(tables / "runs.csv", dtype={"root_opt.conv.steps": str})
    for _, row in pivot.iterrows():
        folder = runs[(runs["status"] == "complete") & (runs["method"] == row["method"])
                      & (runs["root_opt.conv.steps"] == row["root_opt.conv.steps"])]["run"].unique()
        assert len(folder) == 1
        samples = pd.read_csv(Path(folder[0]) / "per_sample.csv")
        assert len(samples) == 4
        assert row["morf_auc_mean"] == pytest.approx(samples["morf_auc"].mean(), rel=1e-9)
        assert row["morf_auc_std"] == pytest.approx(samples["morf_auc"].std(ddof=1), rel=1e-9)
        assert row["lerf_auc_mean"] == pytest.approx(samples["lerf_auc"].mean(), rel=1e-9)

    failed = runs[runs["status"] == "failed before start"].drop_duplicates("run")
    assert len(failed) == 4 and failed["error"].str.contains(BAD_SPLIT).all()
    markdown = (tables / "table.md").read_text()
    assert len([line for line in markdown.splitlines() if line.startswith("| ")]) == 1 + 3
    assert "**4 run folder(s) that failed before starting" in markdown
    assert markdown.count(f"- failed before start: `{sweep}") == 4
    assert markdown.count("dataset.split=nonexistent") == 4 and "paths.output_root" not in markdown
    assert table.stderr.count("learnroot-table: failed before start:") == 4

    figures = tmp_path / "figures"
    drawn = run_cli("all", str(sweep), "-o", str(figures), name="learnroot-figures")
    assert drawn.returncode == 0, drawn.stderr
    for name, size in (("heatmaps", ((1 + 3) * 160, 4 * 160 + 40 + 50)), ("curves", (550, 400)), ("toy", (1000, 450))):
        path = figures / f"{name}.png"
        assert path.stat().st_size > 1000 and (figures / f"{name}.pdf").is_file()
        with Image.open(path) as image:
            assert image.size == size, name
    assert "root_opt.conv.steps=1" in (figures / "heatmaps.txt").read_text()


@pytest.mark.skipif(find_spec("hydra_plugins.hydra_joblib_launcher") is None,
                    reason="hydra-joblib-launcher not installed (pip install 'learnroot[parallel]')")
def test_local_parallel_preset_runs_jobs_in_processes(run_cli, tmp_path):
    out = tmp_path / "out"
    result = run_cli("-m", "cluster=local_parallel", "method=dtd_zplus,ours", "dataset.split=val,nonexistent",
                     *TINY, f"paths.output_root={out}")
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    assert result.returncode == 1, result.stderr  # a failure in a worker process still fails the sweep
    status = job_status(only_sweep(out))
    assert sorted(status.values()) == ["complete", "complete", "failed", "failed"]


@pytest.mark.skipif(find_spec("hydra_plugins.hydra_submitit_launcher") is None,
                    reason="hydra-submitit-launcher not installed (pip install 'learnroot[slurm]')")
def test_slurm_preset_composes_and_runs_with_submitit_local(run_cli, tmp_path):
    shown = run_cli("cluster=slurm", "hydra.launcher.partition=gpu", "--cfg", "all")
    assert shown.returncode == 0, shown.stderr
    composed = yaml.safe_load(shown.stdout)
    launcher = composed["hydra"]["launcher"]
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["gpus_per_node"] == 1 and launcher["tasks_per_node"] == 1 and launcher["nodes"] == 1
    assert launcher["partition"] == "gpu" and launcher["timeout_min"] > 0 and launcher["mem_gb"] > 0
    assert composed["device"] == "cuda"

    # the same preset, its submitit launcher run locally (no SLURM, no GPU here)
    out = tmp_path / "out"
    result = run_cli("-m", "cluster=slurm", "hydra/launcher=submitit_local", "hydra.launcher.gpus_per_node=0",
                     "device=cpu", "method=dtd_zplus", *TINY, f"paths.output_root={out}")
    assert result.returncode == 0, result.stderr
    sweep = only_sweep(out)
    assert job_status(sweep) == {"0": "complete"}
    assert (sweep / ".submitit").is_dir()


SUBMITIT = pytest.mark.skipif(find_spec("hydra_plugins.hydra_submitit_launcher") is None,
                              reason="hydra-submitit-launcher not installed (pip install 'learnroot[slurm]')")


def _per_sample_means(folders: list[Path], column: str) -> float:
    """A score averaged over the rows of several run folders (read here, not by the table)."""
    return pd.concat([pd.read_csv(folder / "per_sample.csv") for folder in folders])[column].mean()


@SUBMITIT
def test_submitit_local_sweep_of_shards_and_the_table(run_cli, tmp_path):
    """Issue 26 item 1: a sweep through submitit (separate processes, submitit's job folders and logs: the
    code path of cluster=slurm without the scheduler), its shards merged by learnroot-table; a job stopped
    halfway is listed as missing a shard, and resumes from another process."""
    out = tmp_path / "out"
    result = run_cli("-m", "cluster=submitit_local", "method=dtd_zplus,ours", "dataset.shards=2", "dataset.limit=8",
                     "metrics=fast", "batch_size=2", f"paths.output_root={out}")
    assert result.returncode == 0, result.stderr
    sweep = only_sweep(out)
    assert job_status(sweep) == {str(job): "complete" for job in range(4)}
    logs = sorted((sweep / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 4 and all("Job completed successfully" in log.read_text() for log in logs)
    replayed = [json.loads((sweep / str(job) / "manifest.json").read_text())["overrides"] for job in range(4)]
    assert not [item for items in replayed for item in items if item.startswith(("cluster", "hydra"))]
    assert [[item for item in items if item.startswith(("method=", "dataset.shard="))] for items in replayed] == [
        ["method=dtd_zplus", "dataset.shard=0/2"], ["method=dtd_zplus", "dataset.shard=1/2"],
        ["method=ours", "dataset.shard=0/2"], ["method=ours", "dataset.shard=1/2"]]

    table = run_cli(str(sweep), "--strict", name="learnroot-table")
    assert table.returncode == 0, table.stderr
    pivot = pd.read_csv(sweep / "table.csv")
    assert list(pivot["method"]) == ["dtd_zplus", "ours"] and list(pivot["shards"]) == ["2/2", "2/2"]
    assert list(pivot["n"]) == [8, 8]
    for method, jobs in (("dtd_zplus", (0, 1)), ("ours", (2, 3))):
        row = pivot[pivot["method"] == method].iloc[0]
        for column in ("morf_auc", "lerf_auc"):
            assert row[f"{column}_mean"] == pytest.approx(
                _per_sample_means([sweep / str(job) for job in jobs], column), rel=1e-9)

    # a job that stopped halfway (time limit, node lost): its shard is missing from the row, never dropped ...
    job = sweep / "3"
    (job / "metrics.json").unlink()
    for part in sorted((job / "parts").glob("batch-*.json"))[1:]:
        part.unlink()
    stopped = run_cli(str(sweep), "--strict", "-q", name="learnroot-table")
    assert stopped.returncode == 1 and "incomplete shards 1/2" in stopped.stderr
    assert f"unfinished: {job}" in stopped.stderr
    assert pd.read_csv(sweep / "table.csv")["shards"].tolist() == ["2/2", "1/2"]
    # ... and its folder resumes from any process that sees it (here: not a submitit job)
    resumed = run_cli(f"resume={job}")
    assert resumed.returncode == 0, resumed.stderr
    again = run_cli(str(sweep), "--strict", name="learnroot-table")
    assert again.returncode == 0, again.stderr
    scores = [column for column in pivot.columns if not column.startswith("seconds_")]
    pd.testing.assert_frame_equal(pd.read_csv(sweep / "table.csv")[scores], pivot[scores])


@SUBMITIT
def test_a_job_that_submitit_loses_is_one_line(tmp_path, monkeypatch, capsys):
    from submitit.core.utils import UncompletedJobError

    from learnroot import cli
    for job, files in (("0", ("manifest.json", "metrics.json")), ("1", ("manifest.json",)), ("2", ())):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        for name in files:
            (tmp_path / job / name).write_text("{}")

    def lose(*args, **kwargs):
        raise UncompletedJobError("Job 42 (task: 0) with path /x/.submitit/42/42_0_result.pkl\nhas not produced "
                                  "any output (state: FINISHED)")
    monkeypatch.setattr(cli, "_hydra_main", lose)
    monkeypatch.setattr(cli, "_SWEEP_DIR", [str(tmp_path)])
    with pytest.raises(SystemExit) as stopped:
        cli._run_hydra([])
    assert stopped.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (f"learnroot-run: error: a job of the sweep ended without a result (Job 42 (task: 0) with path "
                    f"/x/.submitit/42/42_0_result.pkl); the jobs still running go on; 2 job folder(s) without a "
                    f"result: learnroot-run resume={tmp_path / '1'}; {tmp_path / '2'} computed nothing: run its job "
                    "again")
