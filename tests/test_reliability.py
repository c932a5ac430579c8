"""Issue 13: run-folder integrity (manifest, resume, parts), unique sample ids, bounded memory and
one-line errors. Each test reproduces one reported failure."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from learnroot.data.folder import file_sample_id, scan

SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _image(path: Path, size=(8, 8), colour=(10, 20, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


# ------------------------------------------------------------------------------------ item 3: ids

def test_sample_ids_of_colliding_names_are_distinct():
    names = ["n01440764/a b.JPEG", "n01440764/a.b.JPEG", "n01440764/a_b.JPEG", "x/y__z.JPEG", "x__y/z.JPEG",
             "n01440764/é.JPEG", "n01440764/ü.JPEG", "n01440764/日本.JPEG", "n01440764/A_b.JPEG",
             "n01440764/a_b.jpeg", "n01440764/a_b_JPEG.JPEG", "n01440764/_a_b.JPEG"]
    ids = [file_sample_id(name) for name in names]
    assert len(set(ids)) == len(ids), ids
    assert all(SAFE.fullmatch(sample_id) and len(sample_id) <= 100 for sample_id in ids), ids
    assert ids == [file_sample_id(name) for name in names]  # stable
    assert file_sample_id("n01440764/é.JPEG").startswith("n01440764__e_JPEG.")  # readable part kept


def test_plain_sample_ids_are_unchanged():
    """Ids that were already unique keep their old form (shapes, ImageNet and CIFAR-10 folders)."""
    assert file_sample_id("circle/circle_00044.png") == "circle__circle_00044_png"
    assert file_sample_id("n01440764/ILSVRC2012_val_00000293.JPEG") == "n01440764__ILSVRC2012_val_00000293_JPEG"
    assert file_sample_id("airplane/0001.jpg") == "airplane__0001_jpg"


def test_long_file_names_give_bounded_ids(tmp_path):
    long_name = "x" * 230 + ".JPEG"
    sample_id = file_sample_id(f"n01440764/{long_name}")
    assert len(sample_id) <= 100 and SAFE.fullmatch(sample_id)
    assert sample_id != file_sample_id(f"n01440764/{'x' * 229}.JPEG")
    # file names built from it (heatmap overlay, npz) stay far below the 255-byte limit
    assert len(f"{sample_id}_overlay.png".encode()) < 128


def test_scan_gives_unique_ids_and_keeps_paths(tmp_path):
    for name in ("a b.JPEG", "a.b.JPEG", "a_b.JPEG"):
        _image(tmp_path / "n01440764" / name)
    samples = scan(str(tmp_path), 0)
    assert len({sample.id for sample in samples}) == 3
    assert sorted(Path(sample.path).name for sample in samples) == ["a b.JPEG", "a.b.JPEG", "a_b.JPEG"]


# ------------------------------------------------------------------------------------ helpers

import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from conftest import script  # noqa: E402

SHAPES = ("circle", "cross", "diamond", "ring", "square", "triangle")


def _folder(root: Path, count: int = 6, classes=("circle", "ring")) -> Path:
    """An ImageNet-style folder of small random PNGs in shape-class folders."""
    rng = np.random.default_rng(0)
    for index in range(count):
        path = root / classes[index % len(classes)] / f"img_{index:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
    return root


def _weights(test_cache: Path) -> Path:
    from learnroot.models.small_cnn import small_cnn_file
    from learnroot.options import DatasetOptions, ModelOptions
    return small_cnn_file(ModelOptions(), DatasetOptions(), str(test_cache))


def _args(root: Path, test_cache: Path, *extra: str) -> list[str]:
    index = root.parent / "index.json"
    if not index.exists():
        index.write_text(json.dumps({str(i): [name, name] for i, name in enumerate(SHAPES)}))
    return ["dataset=imagenet", f"dataset.root={root}", f"dataset.class_index={index}", "dataset.limit=null",
            f"model.weights={_weights(test_cache)}", "model.resize=32", "model.crop=32", "method=gradient",
            "metrics=fast", "metrics.pf_steps=4", "batch_size=2", *extra]


def _options(root: Path, test_cache: Path, *extra: str):
    from learnroot.config import compose_options
    return compose_options(*_args(root, test_cache, *extra), f"paths.cache_dir={test_cache}")


def _one_line(result, code: int = 2) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("learnroot-run: error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


def _only_run(root: Path) -> Path:
    runs = sorted((root / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def _interrupt_after(run_dir: Path, keep: int) -> None:
    """Make a complete run folder look interrupted after ``keep`` batches."""
    (run_dir / "metrics.json").unlink()
    for part in sorted((run_dir / "parts").glob("batch-*.json"))[keep:]:
        part.unlink()


def _rows(run_dir: Path) -> pd.DataFrame:
    frame = pd.read_csv(run_dir / "per_sample.csv")
    return frame.drop(columns=[c for c in frame.columns if c.startswith("seconds_")])


# --------------------------------------------------------------------- items 1, 2, 5: manifest and resume

def test_manifest_records_config_version_samples_and_batches(tmp_path, test_cache):
    from learnroot import __version__, runner
    root = _folder(tmp_path / "data", 5)
    runner.run(_options(root, test_cache), tmp_path / "run", overrides=["method=gradient", "hydra.verbose=true"])
    saved = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert saved["learnroot_version"] == __version__ and saved["config"]["method"]["name"] == "gradient"
    assert saved["overrides"] == ["method=gradient"]  # hydra.* is never recorded
    files = sorted(root.rglob("*.png"))
    assert [Path(item["path"]) for item in saved["samples"]] == files
    assert [item["size"] for item in saved["samples"]] == [file.stat().st_size for file in files]
    assert saved["batches"] == [[s["id"] for s in saved["samples"]][i:i + 2] for i in (0, 2, 4)]


def test_resume_refuses_an_edited_config_and_keeps_the_saved_one(run_cli, tmp_path, test_cache):
    root = _folder(tmp_path / "data", 6)
    assert run_cli(*_args(root, test_cache)).returncode == 0
    run_dir = _only_run(tmp_path / "outputs")
    _interrupt_after(run_dir, 1)
    hydra_config = (run_dir / ".hydra" / "config.yaml").read_bytes()
    saved = json.loads((run_dir / "manifest.json").read_text())
    edited = dict(saved, overrides=[item.replace("metrics.pf_steps=4", "metrics.pf_steps=5")
                                    for item in saved["overrides"]])
    (run_dir / "manifest.json").write_text(json.dumps(edited))
    line = _one_line(run_cli(f"resume={run_dir}"))
    assert "configuration differs from the run's manifest" in line and "metrics.pf_steps: 4 -> 5" in line
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "failed.json").exists()
    assert (run_dir / ".hydra" / "config.yaml").read_bytes() == hydra_config
    assert len(list((run_dir / "parts").glob("*.json"))) == 1


def test_resume_refuses_changed_defaults_and_another_version(tmp_path, test_cache):
    from learnroot import runner
    root = _folder(tmp_path / "data", 4)
    options = _options(root, test_cache)
    runner.run(options, tmp_path / "run")
    _interrupt_after(tmp_path / "run", 1)
    path = tmp_path / "run" / "manifest.json"
    saved = json.loads(path.read_text())
    older = json.loads(json.dumps(saved))
    older["config"]["metrics"]["pf_baseline"] = "black"  # a package whose default differed
    path.write_text(json.dumps(older))
    with pytest.raises(runner.RunFolderError, match=r"metrics.pf_baseline: \"black\" -> \"zero\""):
        runner.run(options, tmp_path / "run")
    path.write_text(json.dumps(dict(saved, learnroot_version="0.0.1")))
    with pytest.raises(runner.RunFolderError, match="started by learnroot 0.0.1"):
        runner.run(options, tmp_path / "run")
    path.write_text(json.dumps(saved))
    assert runner.run(options, tmp_path / "run")["n_samples"] == 4


def test_resume_uses_the_manifest_sample_list(run_cli, tmp_path, test_cache):
    """A file added after the start shifts nothing; a removed or modified one refuses the resume."""
    root = _folder(tmp_path / "data", 7)
    assert run_cli(*_args(root, test_cache)).returncode == 0
    run_dir = _only_run(tmp_path / "outputs")
    whole = _rows(run_dir)
    _interrupt_after(run_dir, 2)
    _image(root / "circle" / "img_000a.png", (20, 24), (200, 0, 0))  # sorts into the first batch
    resumed = run_cli(f"resume={run_dir}")
    assert resumed.returncode == 0, resumed.stderr
    rows = _rows(run_dir)
    assert rows["id"].is_unique and len(rows) == 7
    pd.testing.assert_frame_equal(rows, whole)

    _interrupt_after(run_dir, 2)
    (root / "ring" / "img_005.png").unlink()
    line = _one_line(run_cli(f"resume={run_dir}"))
    assert "1 file(s) of the run changed since it started" in line and "img_005.png is gone" in line
    _image(root / "ring" / "img_005.png", (20, 24), (0, 0, 0))
    assert "img_005.png changed size" in _one_line(run_cli(f"resume={run_dir}"))


def test_resume_ignores_hydra_keys_in_the_run_folder(run_cli, tmp_path, test_cache):
    """Neither .hydra/overrides.yaml nor the manifest can make a resume run a Hydra callback."""
    root = _folder(tmp_path / "data", 4)
    assert run_cli(*_args(root, test_cache)).returncode == 0
    run_dir = _only_run(tmp_path / "outputs")
    _interrupt_after(run_dir, 1)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    evil = [f"+hydra.callbacks.evil._target_=builtins.open", f"+hydra.callbacks.evil.file={victim}",
            "+hydra.callbacks.evil.mode=w"]
    overrides = run_dir / ".hydra" / "overrides.yaml"
    overrides.write_text(overrides.read_text() + "".join(f"- {item}\n" for item in evil))
    result = run_cli(f"resume={run_dir}")
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == "precious"

    _interrupt_after(run_dir, 1)
    saved = json.loads((run_dir / "manifest.json").read_text())
    for bad, fragment in ((evil, "Hydra override '+hydra.callbacks.evil._target_=builtins.open'"),
                          (["hydra/launcher=basic"], "not a plain key=value"),
                          (["method.nope=1"], "no config key 'method.nope'"),
                          (["method=../../evil"], "method has no option '../../evil'")):
        (run_dir / "manifest.json").write_text(json.dumps(dict(saved, overrides=saved["overrides"] + bad)))
        assert fragment in _one_line(run_cli(f"resume={run_dir}"))
        assert victim.read_text() == "precious"


# ------------------------------------------------------------------------------- item 3: ids in a run

def test_colliding_and_long_file_names_all_get_their_own_outputs(tmp_path, test_cache):
    from learnroot import runner
    root = tmp_path / "data"
    names = ["a b.png", "a.b.png", "a_b.png", "x" * 231 + ".png"]
    for index, name in enumerate(names):
        _image(root / "circle" / name, (20, 24), (index * 60, 0, 0))
    summary = runner.run(_options(root, test_cache), tmp_path / "run")
    assert summary["n_samples"] == 4
    rows = pd.read_csv(tmp_path / "run" / "per_sample.csv")
    assert rows["id"].is_unique and sorted(Path(path).name for path in rows["path"]) == sorted(names)
    assert len(list((tmp_path / "run" / "relevance").glob("*.npz"))) == 4
    assert len(list((tmp_path / "run" / "heatmaps").glob("*_overlay.png"))) == 4


# --------------------------------------------------------------------------------- item 4: parts

@pytest.mark.parametrize("damage", ["truncate", "empty_object", "drop_row", "other_batch"])
def test_bad_parts_are_recomputed(tmp_path, test_cache, damage, caplog):
    from learnroot import runner
    root = _folder(tmp_path / "data", 6)
    options = _options(root, test_cache)
    runner.run(options, tmp_path / "run")
    whole = _rows(tmp_path / "run")
    (tmp_path / "run" / "metrics.json").unlink()
    part = tmp_path / "run" / "parts" / "batch-000001.json"
    data = json.loads(part.read_text())
    if damage == "truncate":
        part.write_text(part.read_text()[:100])
    elif damage == "empty_object":
        part.write_text("{}")
    elif damage == "drop_row":
        data["samples"] = data["samples"][:1]
        part.write_text(json.dumps(data))
    else:
        part.write_text((tmp_path / "run" / "parts" / "batch-000000.json").read_text())
    with caplog.at_level("WARNING"):
        summary = runner.run(options, tmp_path / "run")
    assert "batch-000001.json is invalid" in caplog.text and "computing batch 1 again" in caplog.text
    assert summary["n_samples"] == 6
    pd.testing.assert_frame_equal(_rows(tmp_path / "run"), whole)


# -------------------------------------------------------------------------------- item 6: thin images

def test_thin_images_are_rejected_before_resizing(tmp_path):
    from learnroot.data.images import BadImage, Preprocess
    Image.new("RGB", (1, 8000), "white").save(tmp_path / "thin.jpg")
    preprocess = Preprocess(resize=256, crop=224)
    with Image.open(tmp_path / "thin.jpg") as image:
        with pytest.raises(BadImage, match="aspect ratio"):
            preprocess.image(image.convert("RGB"))
        with pytest.raises(BadImage, match="aspect ratio"):
            preprocess.mask(image.convert("L"))
    wide = Image.new("RGB", (1000, 300), "white")  # ordinary shapes still pass
    assert preprocess.image(wide).shape == (3, 224, 224)


def test_thin_image_in_a_folder_is_skipped(tmp_path, test_cache):
    from learnroot import runner
    root = _folder(tmp_path / "data", 2)
    Image.new("RGB", (1, 8000), "white").save(root / "circle" / "thin.jpg")
    summary = runner.run(_options(root, test_cache, "model.resize=256", "model.crop=32"), tmp_path / "run")
    assert summary["n_samples"] == 2
    assert [Path(item["path"]).name for item in summary["skipped"]] == ["thin.jpg"]
    assert "aspect ratio" in summary["skipped"][0]["reason"]
