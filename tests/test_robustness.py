"""Bad inputs, bad configuration, numerical trouble, interruption and resume, determinism."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from badimages import write_bad, write_good
from conftest import script
from learnroot.data.images import load_rgb
from learnroot.options import DatasetOptions, MethodOptions, MetricsOptions, RunOptions, PathsOptions

SHAPES = ("circle", "cross", "diamond", "ring", "square", "triangle")


def _class_index(path: Path) -> Path:
    path.write_text(json.dumps({str(i): [name, name] for i, name in enumerate(SHAPES)}))
    return path


def _small_cnn_weights(test_cache: Path) -> Path:
    from learnroot.models.small_cnn import small_cnn_file
    from learnroot.options import ModelOptions
    return small_cnn_file(ModelOptions(), DatasetOptions(), str(test_cache))


def _folder_args(root: Path, index: Path, weights: Path) -> list[str]:
    return ["dataset=imagenet", f"dataset.root={root}", f"dataset.class_index={index}", "dataset.limit=null",
            f"model.weights={weights}", "model.resize=64", "model.crop=64", "method=dtd_zplus", "metrics=fast",
            "batch_size=4"]


def test_converted_images_keep_their_content(tmp_path):
    write_good(tmp_path, 0)
    grey = np.asarray(load_rgb(str(tmp_path / "grey.png")))
    assert np.array_equal(np.asarray(load_rgb(str(tmp_path / "deep16.png"))), grey)
    assert np.array_equal(np.asarray(load_rgb(str(tmp_path / "alpha.png"))),
                          np.asarray(load_rgb(str(tmp_path / "plain.png"))))
    cmyk = np.asarray(load_rgb(str(tmp_path / "cmyk.jpg")), dtype=float)
    assert np.abs(cmyk - np.asarray(load_rgb(str(tmp_path / "plain.png")), dtype=float)).mean() < 20
    assert load_rgb(str(tmp_path / "huge.jpg"), draft=64).size[0] < 3000  # decoded at reduced size


def test_bad_files_are_skipped_without_shifting_labels(run_cli, tmp_path, test_cache):
    mixed, clean = tmp_path / "mixed", tmp_path / "clean"
    good = {}
    for i, name in enumerate(("circle", "ring")):
        good[name] = write_good(mixed / name, i)
        write_good(clean / name, i)
    bad = write_bad(mixed / "circle", 7)
    index = _class_index(tmp_path / "index.json")
    weights = _small_cnn_weights(test_cache)

    result = run_cli(*_folder_args(mixed, index, weights), "paths.output_root=out_mixed")
    assert result.returncode == 0, result.stderr
    reference = run_cli(*_folder_args(clean, index, weights), "paths.output_root=out_clean")
    assert reference.returncode == 0, reference.stderr

    mixed_dir = next((tmp_path / "out_mixed" / "runs").iterdir())
    clean_dir = next((tmp_path / "out_clean" / "runs").iterdir())
    summary = json.loads((mixed_dir / "metrics.json").read_text())
    skipped = {Path(item["path"]).name: item["reason"] for item in summary["skipped"]}
    assert set(skipped) == set(bad)
    for name, fragment in bad.items():
        assert fragment in skipped[name]
    log = (mixed_dir / "learnroot.log").read_text()
    assert all(f"skipped {mixed / 'circle' / name}" in log for name in bad)

    rows = pd.read_csv(mixed_dir / "per_sample.csv").set_index("id")
    expected = pd.read_csv(clean_dir / "per_sample.csv").set_index("id")
    assert sorted(rows.index) == sorted(expected.index) and len(rows) == 2 * len(good["circle"])
    assert (rows.loc[[i for i in rows.index if i.startswith("circle")], "label"] == 0).all()
    assert (rows.loc[[i for i in rows.index if i.startswith("ring")], "label"] == 3).all()
    for column in ("label", "prediction", "target"):
        assert (rows[column] == expected.loc[rows.index, column]).all()
    assert np.allclose(rows["target_logit"], expected.loc[rows.index, "target_logit"], rtol=1e-5)
    for sample_id in rows.index:
        ours, theirs = (np.load(d / "relevance" / f"{sample_id}.npz") for d in (mixed_dir, clean_dir))
        assert np.array_equal(ours["input"], theirs["input"])
        assert np.allclose(ours["relevance"], theirs["relevance"], rtol=1e-4, atol=1e-6)


def test_on_error_fail_stops_at_the_first_bad_file(run_cli, tmp_path, test_cache):
    write_good(tmp_path / "data" / "circle", 0)
    write_bad(tmp_path / "data" / "circle", 1)
    args = _folder_args(tmp_path / "data", _class_index(tmp_path / "index.json"), _small_cnn_weights(test_cache))
    result = run_cli(*args, "dataset.on_error=fail")
    assert result.returncode == 2
    assert "unreadable image" in result.stderr and "dataset.on_error=fail" in result.stderr


def _bad_config_cases(tmp_path: Path, test_cache: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    images = tmp_path / "images"
    write_good(images / "circle", 0)
    masks = tmp_path / "masks" / "circle"
    masks.mkdir(parents=True)
    index = _class_index(tmp_path / "index.json")
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"0": ["ring", "ring"]}))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint")
    import torchvision
    resnet = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet)
    model = ["model.resize=64", "model.crop=64", f"model.weights={_small_cnn_weights(test_cache)}"]
    folder = ["dataset=imagenet", f"dataset.root={images}", f"dataset.class_index={index}"] + model
    return [
        (["method=lrp_alpha"], "no option 'lrp_alpha' in group method"),
        (["model=alexnet"], "no option 'alexnet' in group model"),
        (["dataset=coco"], "no option 'coco' in group dataset"),
        (["dataset.limt=3"], "no config key 'dataset.limt' (did you mean dataset.limit?)"),
        (["batch_size=many"], "could not be converted to Integer"),
        (["dataset=imagenet", f"dataset.root={tmp_path / 'missing'}"] + model, "dataset root not found"),
        (["dataset=imagenet", f"dataset.root={empty}"] + model, "has no class folders"),
        (folder + [f"dataset.masks={tmp_path / 'masks'}"], "does not match the images"),
        (folder[:2] + [f"dataset.class_index={partial}"] + folder[3:], "not in class index"),
        (["model=resnet18", f"model.weights={tmp_path / 'nope.pth'}"], "weights file not found"),
        (["model=resnet18", f"model.weights={garbage}"], "cannot read weights file"),
        (["model=vgg16", f"model.weights={resnet}"], "does not fit vgg16: missing keys"),
        (["metrics.localisation=on", "model=toy_sigmoid"], "metrics.localisation=on needs masks"),
    ] + ([] if torch.cuda.is_available() else [(["device=cuda"], "no CUDA GPU is available")])


def test_bad_configuration_gives_one_line_errors(run_cli, tmp_path, test_cache):
    for overrides, fragment in _bad_config_cases(tmp_path, test_cache):
        result = run_cli(*overrides)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (overrides, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("learnroot-run: error:"), (overrides, result.stderr)
        assert fragment in lines[0], (overrides, lines[0])
        assert "metrics.json" not in {p.name for p in tmp_path.rglob("metrics.json")}


def _run_options(test_cache: Path, out: Path, **method) -> RunOptions:
    return RunOptions(dataset=DatasetOptions(limit=6), method=MethodOptions(**method),
                      metrics=MetricsOptions(pf_steps=5, perturbation=False),
                      paths=PathsOptions(output_root=str(out), cache_dir=str(test_cache)), batch_size=3)


def test_nan_in_one_sample_is_flagged_and_excluded(tmp_path, test_cache, monkeypatch):
    from learnroot import explainer, runner

    options = _run_options(test_cache, tmp_path, name="dtd_zplus")
    clean = runner.run(options, tmp_path / "clean")
    make = explainer.make_attributor

    def poisoned(*args, **kwargs):
        attributor = make(*args, **kwargs)

        def attribute(x, target):
            result = attributor(x, target)
            if x.shape[0] == 3 and not poisoned.done:
                result.relevance[1, 0, 5, 5] = float("nan")
                poisoned.done = True
            return result
        return attribute
    poisoned.done = False
    monkeypatch.setattr(explainer, "make_attributor", poisoned)
    summary = runner.run(options, tmp_path / "poisoned")

    rows = pd.read_csv(tmp_path / "poisoned" / "per_sample.csv")
    reference = pd.read_csv(tmp_path / "clean" / "per_sample.csv")
    flagged = rows[rows["status"] != "ok"]
    assert list(flagged["id"]) == [reference["id"][1]]
    assert flagged["reason"].iloc[0] == "non-finite relevance"
    assert np.isnan(flagged["morf_auc"].iloc[0]) and np.isnan(flagged["conservation_error"].iloc[0])
    assert summary["n_ok"] == 5 and summary["flagged"] == [{"id": reference["id"][1], "reason": "non-finite relevance"}]
    others = rows["status"] == "ok"
    assert np.allclose(rows.loc[others, "morf_auc"], reference.loc[others, "morf_auc"])
    assert summary["metrics"]["morf_auc"]["n"] == 5
    assert summary["metrics"]["morf_auc"]["mean"] == pytest.approx(reference.loc[others, "morf_auc"].mean())
    assert clean["metrics"]["morf_auc"]["n"] == 6


def test_diverging_root_optimisation_is_flagged(tmp_path, test_cache):
    from learnroot import runner
    options = _run_options(test_cache, tmp_path, name="ours")
    # additive MSE steps (the relative step clamps its fraction to [0, 1] and cannot diverge)
    options = replace(options, root_opt=replace(options.root_opt, project=False, step="additive",
                                                conv=replace(options.root_opt.conv, loss="mse", lr=1e38, clip=0.0)))
    summary = runner.run(options, tmp_path / "run")
    rows = pd.read_csv(tmp_path / "run" / "per_sample.csv")
    assert (rows["status"] == "flagged").all()
    assert rows["reason"].str.contains("root optimisation").all()
    assert summary["n_ok"] == 0 and summary["metrics"]["morf_auc"]["n"] == 0
    assert np.isfinite(rows["relevance_sum"]).all()  # the z+ fallback is still a valid explanation


def test_same_config_same_heatmaps_bit_for_bit(tmp_path, test_cache):
    from learnroot import runner
    options = _run_options(test_cache, tmp_path, name="ours")
    runner.run(options, tmp_path / "a")
    runner.run(options, tmp_path / "b")
    files = sorted((tmp_path / "a" / "relevance").glob("*.npz"))
    assert len(files) == 6
    for file in files:
        first, second = np.load(file), np.load(tmp_path / "b" / "relevance" / file.name)
        assert first["relevance"].tobytes() == second["relevance"].tobytes()
        assert (tmp_path / "a" / "heatmaps" / f"{file.stem}.png").read_bytes() == \
               (tmp_path / "b" / "heatmaps" / f"{file.stem}.png").read_bytes()


def _start(args, cwd, env):
    # a background shell may have set SIGINT to "ignore", which children inherit: restore the default
    return subprocess.Popen([script("learnroot-run"), *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_resumes_to_the_same_result(tmp_path, learnroot_env, sig):
    args = ["dataset.limit=30", "batch_size=1", "method=dtd_zplus", "metrics.pf_steps=10"]
    process = _start(args + ["paths.output_root=interrupted"], tmp_path, learnroot_env)
    deadline = time.time() + 120
    parts = []
    while time.time() < deadline and process.poll() is None:
        runs = list((tmp_path / "interrupted" / "runs").glob("*/parts/batch-*.json"))
        if len(runs) >= 2:
            parts = runs
            break
        time.sleep(0.005)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert parts, "the run finished or failed before it could be interrupted"
    run_dir = parts[0].parents[1]
    assert not (run_dir / "metrics.json").exists()
    done_before = len(list((run_dir / "parts").glob("batch-*.json")))
    assert 2 <= done_before < 30
    if sig != signal.SIGKILL:  # issue 22: SIGTERM as Ctrl-C: one line, exit 128 + signal, segment closed
        word = "terminated" if sig == signal.SIGTERM else "interrupted"
        assert process.returncode == 128 + sig and "Traceback" not in stderr, stderr[-2000:]
        assert stderr.strip().splitlines()[-1] == (f"learnroot-run: {word}: {done_before} of 30 batches done; "
                                                   f"resume with: learnroot-run resume={run_dir}")
        segments = json.loads((run_dir / "segments.json").read_text())
        assert [item["status"] for item in segments] == ["interrupted"]
        assert segments[0]["batches"] == done_before

    resumed = subprocess.run([script("learnroot-run"), f"resume={run_dir}"], cwd=tmp_path, env=learnroot_env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {done_before} of 30 batches already done" in (run_dir / "learnroot.log").read_text()
    whole = subprocess.run([script("learnroot-run"), *args, "paths.output_root=whole"], cwd=tmp_path,
                           env=learnroot_env, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    whole_dir = next((tmp_path / "whole" / "runs").iterdir())

    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["status"] == "complete" and summary["n_samples"] == 30
    timing = [c for c in pd.read_csv(run_dir / "per_sample.csv").columns if c.startswith("seconds_")]
    resumed_rows = pd.read_csv(run_dir / "per_sample.csv").drop(columns=timing)
    whole_rows = pd.read_csv(whole_dir / "per_sample.csv").drop(columns=timing)
    assert resumed_rows["id"].is_unique and len(resumed_rows) == 30
    pd.testing.assert_frame_equal(resumed_rows, whole_rows)
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "curves.csv"), pd.read_csv(whole_dir / "curves.csv"))
    again = subprocess.run([script("learnroot-run"), f"resume={run_dir}"], cwd=tmp_path, env=learnroot_env,
                           capture_output=True, text=True)
    assert again.returncode == 0 and "already complete" in again.stdout


def test_runs_started_together_get_distinct_folders(tmp_path, learnroot_env):
    args = ["dataset.limit=2", "batch_size=2", "method=gradient", "metrics=none", "paths.output_root=out"]
    processes = [_start(args, tmp_path, learnroot_env) for _ in range(2)]
    for process in processes:
        process.communicate(timeout=300)
        assert process.returncode == 0
    runs = list((tmp_path / "out" / "runs").iterdir())
    assert len(runs) == 2 and all((run / "metrics.json").is_file() for run in runs)


def test_warnings_are_log_lines_not_source_lines(run_cli, tmp_path, test_cache):
    """Issue 22: a RuntimeWarning (here: a mask without foreground) printed its source line in the middle of
    the progress bar; now it is one log line, on the console and in learnroot.log."""
    images, masks = tmp_path / "images" / "circle", tmp_path / "masks" / "circle"
    masks.mkdir(parents=True)
    write_good(images, 0)
    for index, image in enumerate(sorted(images.iterdir())):
        with Image.open(image) as opened:
            size = opened.size
        value = 0 if index == 0 else 255  # the first mask has no foreground
        Image.new("L", size, value).save(masks / f"{image.stem}.png")
    args = _folder_args(tmp_path / "images", _class_index(tmp_path / "index.json"), _small_cnn_weights(test_cache))
    result = run_cli(*args, f"dataset.masks={tmp_path / 'masks'}", "batch_size=64")
    assert result.returncode == 0, result.stderr
    assert "RuntimeWarning" not in result.stderr and "compute=" not in result.stdout + result.stderr
    warned = [line for line in result.stdout.splitlines() if "RuntimeWarning: 1 of" in line]
    assert len(warned) == 1 and "masks have no labelled foreground" in warned[0], result.stdout
    run_dir = next((tmp_path / "outputs" / "runs").iterdir())
    assert "RuntimeWarning: 1 of" in (run_dir / "learnroot.log").read_text()
