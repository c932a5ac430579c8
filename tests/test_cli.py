"""The installed ``learnroot-run`` as a user runs it: subprocess, temporary cwd, the output contract."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import REPO, SHARED_SAMPLES

pytestmark = pytest.mark.slow
TINY = ["dataset.limit=4", "batch_size=2", "metrics=fast"]


def only_run_dir(root: Path) -> Path:
    runs = sorted((root / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def test_default_run_writes_the_output_contract(run_cli, tmp_path, test_cache):
    result = run_cli(*TINY)
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(tmp_path / "outputs")
    assert f"run folder: {run_dir}" in result.stdout
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "learnroot.log", "per_sample.csv", "layers.csv",
                 "curves.csv", "curves.png", "metrics.json"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["status"] == "complete" and summary["n_samples"] == 4 and summary["method"] == "ours"
    assert summary["model"] == "small_cnn" and summary["dataset"] == "shapes"
    samples = pd.read_csv(run_dir / "per_sample.csv")
    assert len(samples) == 4 and samples["id"].is_unique
    for column in ("id", "path", "label", "prediction", "target_logit", "relevance_sum", "conservation_error",
                   "morf_auc", "lerf_auc", "miou", "seconds_attribution"):
        assert column in samples.columns, column
    assert set(pd.read_csv(run_dir / "layers.csv")["id"]) == set(samples["id"])

    # the saved input is the image file as the model sees it; the saved logit is the model's
    from learnroot.models import build_model
    from learnroot.options import DatasetOptions, ModelOptions
    model = build_model(ModelOptions(), DatasetOptions(), str(test_cache))
    for row in samples.itertuples():
        arrays = np.load(run_dir / "relevance" / f"{row.id}.npz")
        pixels = np.asarray(Image.open(row.path).convert("RGB"), dtype=np.float32) / 255.0
        assert np.allclose(arrays["input"], (pixels.transpose(2, 0, 1) - 0.5) / 0.25, atol=1e-6)
        assert arrays["relevance"].shape == (3, 64, 64) and np.isfinite(arrays["relevance"]).all()
        with torch.no_grad():
            logit = model(torch.from_numpy(arrays["input"])[None])[0, int(arrays["target"])].item()
        assert float(arrays["logit"]) == pytest.approx(logit, rel=1e-5) == pytest.approx(row.target_logit, rel=1e-5)
        assert int(arrays["target"]) == row.label  # target defaults to the label
        heatmap = Image.open(run_dir / "heatmaps" / f"{row.id}.png")
        assert heatmap.size == (64, 64) and heatmap.mode == "RGB"
        assert Image.open(run_dir / "heatmaps" / f"{row.id}_overlay.png").size == (64, 64)


def test_multirun_sweep_makes_one_folder_per_job(run_cli, tmp_path):
    result = run_cli("-m", "method=gradient,dtd_zplus", *TINY, "save_heatmaps=false")
    assert result.returncode == 0, result.stderr
    sweeps = list((tmp_path / "outputs" / "sweeps").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(path for path in sweeps[0].iterdir() if path.is_dir() and path.name.isdigit())
    assert [job.name for job in jobs] == ["0", "1"]
    methods = [json.loads((job / "metrics.json").read_text())["method"] for job in jobs]
    assert methods == ["gradient", "dtd_zplus"]


def test_output_root_from_environment(run_cli, learnroot_env, tmp_path):
    env = dict(learnroot_env, LEARNROOT_OUTPUT_ROOT=str(tmp_path / "elsewhere"))
    result = run_cli("dataset.limit=2", "batch_size=2", "metrics=none", "method=gradient", env=env)
    assert result.returncode == 0, result.stderr
    assert (only_run_dir(tmp_path / "elsewhere") / "metrics.json").is_file()
    assert not (tmp_path / "outputs").exists()


def _one_line_error(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("learnroot-run: error: ")
    return lines[0]


def test_missing_weights_say_where_to_put_them(run_cli, learnroot_env, tmp_path):
    folder = tmp_path / "val" / "n01440764"
    folder.mkdir(parents=True)
    Image.new("RGB", (32, 32), "white").save(folder / "fish.png")
    (tmp_path / "index.json").write_text(json.dumps({"0": ["n01440764", "tench"]}))
    env = dict(learnroot_env, TORCH_HOME=str(tmp_path / "torch"))
    result = run_cli("model=vgg16", "dataset=imagenet", f"dataset.root={tmp_path / 'val'}",
                     f"dataset.class_index={tmp_path / 'index.json'}", env=env)
    line = _one_line_error(result)
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth") in line
    assert "model.weights=PATH" in line


def test_wrong_dataset_path(run_cli, tmp_path):
    line = _one_line_error(run_cli("dataset=imagenet", f"dataset.root={tmp_path / 'nowhere'}", "model=resnet18",
                                   "model.weights=random"))
    assert f"dataset root not found: {tmp_path / 'nowhere'}" in line


def test_typo_fails_before_any_folder_is_made(run_cli, tmp_path):
    line = _one_line_error(run_cli("method.epslon=0.3"))
    assert "no config key 'method.epslon' (did you mean method.epsilon?)" in line
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("overrides, fragment", [
    (["batchsize=4"], "(did you mean batch_size?)"),
    (["+method.epslon=0.1"], "(did you mean method.epsilon?)"),
    (["method=dtd_zplsu"], "(did you mean dtd_zplus?"),
    (["method=ours,dtd_zplus"], "to sweep over the values add -m"),
    (["device=tpu"], "device must be auto, cpu, cuda, cuda:<index> or mps, got 'tpu'"),
    (["dataset.root={tmp}/nowhere"], "dataset root not found: {tmp}/nowhere"),
    (["model.weights={tmp}/missing.pt"], "weights file not found"),
])
def test_invalid_input_makes_no_run_folder(run_cli, tmp_path, overrides, fragment):
    line = _one_line_error(run_cli(*[item.format(tmp=tmp_path) for item in overrides]))
    assert fragment.format(tmp=tmp_path) in line
    assert not (tmp_path / "outputs").exists()
    assert not (tmp_path / "nowhere").exists()


def test_build_error_is_reported_once_and_marked(run_cli, tmp_path):
    """An error found while building the run (weights of another architecture): one line on the console,
    failed.json with stage build, and learnroot-table lists the folder as failed before start."""
    weights = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, weights)
    result = run_cli(f"model.weights={weights}", "dataset.limit=2", "method=gradient", "metrics=none")
    line = _one_line_error(result)
    assert "does not fit small_cnn" in line
    assert (result.stdout + result.stderr).count("does not fit small_cnn") == 1, (result.stdout, result.stderr)
    run_dir = only_run_dir(tmp_path / "outputs")
    failed = json.loads((run_dir / "failed.json").read_text())
    assert failed["stage"] == "build" and "does not fit small_cnn" in failed["error"]
    assert "does not fit small_cnn" in (run_dir / "learnroot.log").read_text()
    table = run_cli(str(tmp_path / "outputs"), "-o", str(tmp_path / "tables"), name="learnroot-table")
    assert "failed before start: " in table.stderr and "0 failed or unfinished, 1 failed before start" in table.stderr
    assert "run folder(s) that failed before starting" in (tmp_path / "tables" / "table.md").read_text()


def test_progress_bar_reaches_the_end(run_cli):
    result = run_cli("dataset.limit=6", "batch_size=2", "method=gradient", "metrics=none", "save_heatmaps=false")
    assert result.returncode == 0, result.stderr
    assert "3/3" in result.stderr and "100%" in result.stderr, result.stderr


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job"], ["--cfg", "job", "method=dtd_zb"]])
def test_help_and_cfg_do_not_import_torch(args, tmp_path):
    code = ("import sys; from learnroot.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
            "print('TORCH', 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "TORCH False" in result.stdout, result.stdout[-500:]
    assert not (tmp_path / "outputs").exists()


def test_cfg_checks_the_composition(run_cli, tmp_path):
    line = _one_line_error(run_cli("--cfg", "job", "batchsize=4"))
    assert "(did you mean batch_size?)" in line


def test_home_tilde_in_a_value_names_the_fix(run_cli, tmp_path):
    line = _one_line_error(run_cli("model.weights=~/weights.pt"))
    assert "does not expand ~; write model.weights=$HOME/weights.pt" in line


def test_cfg_with_multirun_is_one_line(run_cli, tmp_path):
    line = _one_line_error(run_cli("-m", "method=ours,dtd_zplus", "--cfg", "job"))
    assert "--cfg prints one configuration: drop -m" in line
    assert not (tmp_path / "outputs").exists()


def test_wheel_ships_the_config_tree(tmp_path):
    """A non-editable install carries conf/ and the small CNN's weights inside the package and composes
    from any cwd."""
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                            str(REPO)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    wheel = next(wheels.glob("learnroot-*.whl"))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    yamls = sorted(str(p.relative_to(REPO / "conf")) for p in (REPO / "conf").rglob("*.yaml"))
    shipped = sorted(str(p.relative_to(target / "learnroot" / "conf")) for p in (target / "learnroot" / "conf").rglob("*.yaml"))
    assert shipped == yamls
    weights = target / "learnroot" / "weights" / "small_cnn.pt"  # the embedded model's weights are package data
    assert weights.is_file() and weights.read_bytes() == (REPO / "learnroot" / "weights" / "small_cnn.pt").read_bytes()
    code = ("import learnroot, sys; assert learnroot.__file__.startswith(sys.argv[1]), learnroot.__file__; "
            "from learnroot.cli import main; main(['--cfg', 'job', 'method=dtd_zb'])")
    result = subprocess.run([sys.executable, "-c", code, str(target)], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "name: dtd_zb" in result.stdout


@pytest.mark.skipif(not SHARED_SAMPLES.is_dir(), reason="../shared/data/imagenet-samples not present")
def test_imagenet_folder_through_the_cli(run_cli, tmp_path):
    """A torchvision ResNet (random weights) on real JPEGs of a partial ImageNet folder, end to end."""
    index = SHARED_SAMPLES / "imagenet_class_index.json"
    result = run_cli("model=resnet18", "model.weights=random", "dataset=imagenet",
                     f"dataset.root={SHARED_SAMPLES / 'val'}", f"dataset.class_index={index}", "dataset.limit=2",
                     "batch_size=2", "method=ours", "metrics=fast")
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(tmp_path / "outputs")
    samples = pd.read_csv(run_dir / "per_sample.csv")
    wnid_to_index = {entry[0]: int(key) for key, entry in json.loads(index.read_text()).items()}
    assert [wnid_to_index[Path(path).parent.name] for path in samples["path"]] == samples["label"].tolist()
    arrays = np.load(run_dir / "relevance" / f"{samples['id'][0]}.npz")
    assert arrays["relevance"].shape == arrays["input"].shape == (3, 224, 224)
    assert "RANDOM weights" in (run_dir / "learnroot.log").read_text()
    layers = pd.read_csv(run_dir / "layers.csv")
    assert layers["error"].max() < 1e-3  # ours conserves layer by layer on a residual network too
