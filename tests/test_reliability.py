"""Issue 13: run-folder integrity (manifest, resume, parts), unique sample ids, bounded memory and
one-line errors. Each test reproduces one reported failure."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _image(path: Path, size=(8, 8), colour=(10, 20, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


# ------------------------------------------------------------------------------------ item 3: ids

def test_sample_ids_of_colliding_names_are_distinct():
    from learnroot.data.folder import file_sample_id
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
    from learnroot.data.folder import file_sample_id
    assert file_sample_id("circle/circle_00044.png") == "circle__circle_00044_png"
    assert file_sample_id("n01440764/ILSVRC2012_val_00000293.JPEG") == "n01440764__ILSVRC2012_val_00000293_JPEG"
    assert file_sample_id("airplane/0001.jpg") == "airplane__0001_jpg"


def test_long_file_names_give_bounded_ids(tmp_path):
    from learnroot.data.folder import file_sample_id
    long_name = "x" * 230 + ".JPEG"
    sample_id = file_sample_id(f"n01440764/{long_name}")
    assert len(sample_id) <= 100 and SAFE.fullmatch(sample_id)
    assert sample_id != file_sample_id(f"n01440764/{'x' * 229}.JPEG")
    # file names built from it (heatmap overlay, npz) stay far below the 255-byte limit
    assert len(f"{sample_id}_overlay.png".encode()) < 128


def test_scan_gives_unique_ids_and_keeps_paths(tmp_path):
    from learnroot.data.folder import scan
    for name in ("a b.JPEG", "a.b.JPEG", "a_b.JPEG"):
        _image(tmp_path / "n01440764" / name)
    samples = scan(str(tmp_path), 0)
    assert len({sample.id for sample in samples}) == 3
    assert sorted(Path(sample.path).name for sample in samples) == ["a b.JPEG", "a.b.JPEG", "a_b.JPEG"]


# ------------------------------------------------------------------------------------ helpers

import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from conftest import image_folder, script  # noqa: E402

SHAPES = ("circle", "cross", "diamond", "ring", "square", "triangle")


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
    progress = re.compile(r".*\d+%\|.*\|")  # tqdm's progress bar on stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip() and not progress.match(line)]
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
    root = image_folder(tmp_path / "data", 5)
    runner.run(_options(root, test_cache), tmp_path / "run", overrides=["method=gradient", "hydra.verbose=true"])
    saved = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert saved["learnroot_version"] == __version__ and saved["config"]["method"]["name"] == "gradient"
    assert saved["overrides"] == ["method=gradient"]  # hydra.* is never recorded
    files = sorted(root.rglob("*.png"))
    assert [Path(item["path"]) for item in saved["samples"]] == files
    assert [item["size"] for item in saved["samples"]] == [file.stat().st_size for file in files]
    assert saved["batches"] == [[s["id"] for s in saved["samples"]][i:i + 2] for i in (0, 2, 4)]


@pytest.mark.slow  # installed scripts in subprocesses
def test_resume_refuses_an_edited_config_and_keeps_the_saved_one(run_cli, tmp_path, test_cache):
    root = image_folder(tmp_path / "data", 6)
    assert run_cli(*_args(root, test_cache)).returncode == 0
    run_dir = _only_run(tmp_path / "outputs")
    _interrupt_after(run_dir, 1)
    hydra_config = (run_dir / ".hydra" / "config.yaml").read_bytes()
    saved = json.loads((run_dir / "manifest.json").read_text())
    edited = dict(saved, overrides=[item.replace("metrics.pf_steps=4", "metrics.pf_steps=5")
                                    for item in saved["overrides"]])
    (run_dir / "manifest.json").write_text(json.dumps(edited))
    line = _one_line(run_cli(f"resume={run_dir}"))  # issue 22: an edited manifest is refused as such
    assert "manifest.json was changed after the run started" in line and "start a new run instead" in line
    from learnroot.manifest import seal
    (run_dir / "manifest.json").write_text(json.dumps(seal(edited)))  # as if written so: the config differs
    line = _one_line(run_cli(f"resume={run_dir}"))
    assert "configuration differs from the run's manifest" in line and "metrics.pf_steps: 4 -> 5" in line
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "failed.json").exists()
    assert (run_dir / ".hydra" / "config.yaml").read_bytes() == hydra_config
    assert len(list((run_dir / "parts").glob("*.json"))) == 1


def test_resume_refuses_changed_defaults_and_another_version(tmp_path, test_cache):
    from learnroot import runner
    from learnroot.manifest import seal
    root = image_folder(tmp_path / "data", 4)
    options = _options(root, test_cache)
    runner.run(options, tmp_path / "run")
    _interrupt_after(tmp_path / "run", 1)
    path = tmp_path / "run" / "manifest.json"
    saved = json.loads(path.read_text())
    older = json.loads(json.dumps(saved))
    older["config"]["metrics"]["pf_baseline"] = "black"  # a package whose default differed
    path.write_text(json.dumps(seal(older)))
    with pytest.raises(runner.RunFolderError, match=r"metrics.pf_baseline: \"black\" -> \"zero\""):
        runner.run(options, tmp_path / "run")
    path.write_text(json.dumps(seal(dict(saved, learnroot_version="0.0.1"))))
    with pytest.raises(runner.RunFolderError, match="started by learnroot 0.0.1"):
        runner.run(options, tmp_path / "run")
    path.write_text(json.dumps(saved))
    assert runner.run(options, tmp_path / "run")["n_samples"] == 4


@pytest.mark.slow  # installed scripts in subprocesses
def test_resume_uses_the_manifest_sample_list(run_cli, tmp_path, test_cache):
    """A file added after the start shifts nothing; a removed or modified one refuses the resume."""
    root = image_folder(tmp_path / "data", 7)
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


@pytest.mark.slow  # installed scripts in subprocesses
def test_resume_ignores_hydra_keys_in_the_runimage_folder(run_cli, tmp_path, test_cache):
    """Neither .hydra/overrides.yaml nor the manifest can make a resume run a Hydra callback."""
    root = image_folder(tmp_path / "data", 4)
    assert run_cli(*_args(root, test_cache)).returncode == 0
    run_dir = _only_run(tmp_path / "outputs")
    _interrupt_after(run_dir, 1)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    evil = ["+hydra.callbacks.evil._target_=builtins.open", f"+hydra.callbacks.evil.file={victim}",
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
        from learnroot.manifest import seal  # a manifest written so (its digest matches), not edited
        (run_dir / "manifest.json").write_text(json.dumps(seal(dict(saved, overrides=saved["overrides"] + bad))))
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

@pytest.mark.parametrize("damage", ["truncate", "empty_object", "drop_row", "other_batch", "malformed"])
def test_bad_parts_are_recomputed(tmp_path, test_cache, damage, caplog):
    from learnroot import runner
    root = image_folder(tmp_path / "data", 6)
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
    elif damage == "other_batch":
        part.write_text((tmp_path / "run" / "parts" / "batch-000000.json").read_text())
    else:  # rows that are not records, with a checksum that matches them
        from learnroot.outputs import part_checksum
        data["samples"] = [None, 3]
        data["checksum"] = part_checksum(data)
        part.write_text(json.dumps(data))
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
    root = image_folder(tmp_path / "data", 2)
    Image.new("RGB", (1, 8000), "white").save(root / "circle" / "thin.jpg")
    summary = runner.run(_options(root, test_cache, "model.resize=256", "model.crop=32"), tmp_path / "run")
    assert summary["n_samples"] == 2
    assert [Path(item["path"]).name for item in summary["skipped"]] == ["thin.jpg"]
    assert "aspect ratio" in summary["skipped"][0]["reason"]


# ------------------------------------------------------------------------ items 7, 8: one-line errors

@pytest.mark.parametrize("overrides, fragment", [
    (["dataset.limit=0"], "dataset.limit must be >= 1, got 0 (or null)"),
    (["dataset.limit=-3"], "dataset.limit must be >= 1"),
    (["+method.epslon=0.1"], "no config key 'method.epslon' (did you mean method.epsilon?)"),
    (["root_opt.conv.lr=inf"], "root_opt.conv.lr must be finite, got inf"),
    (["root_opt.dense.lr=nan"], "root_opt.dense.lr must be finite, got nan"),
    (["device=mps"], "device=mps but MPS is not available here"),
    (["model.weights={tmp}/empty.pt"], "model.weights={tmp}/empty.pt: the file is empty (0 bytes)"),
    (["paths.output_root={tmp}/a_file"], "paths.output_root={tmp}/a_file is a file, not a folder"),
    (["paths.output_root={tmp}/a_file/below"], "cannot be created: {tmp}/a_file is a file"),
    (["-m", "method=gradient,dtd_zplus", "paths.output_root={tmp}/a_file"], "a_file is a file, not a folder"),
])
def test_bad_values_give_one_line_before_anyimage_folder(tmp_path, monkeypatch, capsys, overrides, fragment):
    """Checked by ``learnroot-run`` before Hydra starts (in-process here: the checks end in SystemExit(2)
    before any run; tests/test_cli.py runs the installed script for the same path)."""
    from learnroot.cli import main
    if "mps" in overrides[0] and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        main([*[item.format(tmp=tmp_path) for item in overrides], "batch_size=2"])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("learnroot-run: error: "), lines
    assert fragment.format(tmp=tmp_path) in lines[0]
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow  # installed scripts in subprocesses
def test_unwritable_output_root_gives_one_line(run_cli, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    target = locked if os.geteuid() != 0 else Path("/sys/learnroot-output")  # root writes anywhere but /sys
    try:
        target.mkdir()
    except OSError:
        pass
    else:
        target.rmdir()
        pytest.skip(f"{target} is writable here")
    line = _one_line(run_cli(f"paths.output_root={target}", "dataset.limit=2"))
    assert f"paths.output_root={target} is not writable" in line


def test_empty_weights_file_is_one_line_from_the_loader(tmp_path):
    from learnroot.models.weights import ModelError, read_state_dict
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "zeros.pt").write_bytes(b"\x80")
    with pytest.raises(ModelError, match="is empty"):
        read_state_dict(str(tmp_path / "empty.pt"))
    with pytest.raises(ModelError, match="cannot read weights file .*zeros.pt: "):
        read_state_dict(str(tmp_path / "zeros.pt"))


FULL_DISK = """
import errno, sys
from learnroot import outputs
original = outputs._atomic_bytes
def full(path, data):
    if len(data) > 2000 and 'relevance' in str(path) and sum(1 for _ in path.parent.glob('*.npz')) >= 2:
        raise OSError(errno.ENOSPC, 'No space left on device', str(path))
    return original(path, data)
outputs._atomic_bytes = full
from learnroot.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow  # installed scripts in subprocesses
def test_disk_full_mid_run_is_one_line_with_failed_json_and_resumes(run_cli, learnroot_env, tmp_path, test_cache):
    root = image_folder(tmp_path / "data", 6)
    result = subprocess.run([sys.executable, "-c", FULL_DISK, *_args(root, test_cache)], cwd=tmp_path,
                            env=learnroot_env, capture_output=True, text=True, timeout=600)
    line = _one_line(result)
    run_dir = _only_run(tmp_path / "outputs")
    assert "No space left on device" in line
    assert line.endswith(f"(1 of 3 batches done; make room, then resume with: learnroot-run resume={run_dir})")
    failed = json.loads((run_dir / "failed.json").read_text())
    assert failed["stage"] == "run" and "No space left" in failed["error"]
    assert not list(run_dir.rglob(".*.tmp"))
    resumed = run_cli(f"resume={run_dir}")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["n_samples"] == 6 and not (run_dir / "failed.json").exists()  # item 11: no stale failure
    assert "No space left" in summary["earlier_failure"]["error"]
    assert [segment["status"] for segment in summary["segments"]] == ["failed", "complete"]  # issue 22: closed
    assert summary["runtime_s"] == pytest.approx(sum(segment["seconds"] for segment in summary["segments"]))


@pytest.mark.slow  # installed scripts in subprocesses
def test_resume_with_a_corrupt_metrics_json_writes_it_again(run_cli, tmp_path, test_cache):
    root = image_folder(tmp_path / "data", 4)
    assert run_cli(*_args(root, test_cache)).returncode == 0
    run_dir = _only_run(tmp_path / "outputs")
    before = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text('{"status": "compl')
    result = run_cli(f"resume={run_dir}")
    assert result.returncode == 0, result.stderr
    assert "metrics.json is unreadable" in result.stderr and "Traceback" not in result.stderr
    after = json.loads((run_dir / "metrics.json").read_text())
    assert after["status"] == "complete" and after["metrics"]["morf_auc"] == before["metrics"]["morf_auc"]


def _start(args, cwd, env):
    return subprocess.Popen([script("learnroot-run"), *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.slow  # installed scripts in subprocesses
def test_ctrl_c_says_where_the_run_is_and_how_to_resume(tmp_path, learnroot_env):
    process = _start(["dataset.limit=40", "batch_size=1", "method=dtd_zplus", "metrics=fast",
                      "save_heatmaps=false"], tmp_path, learnroot_env)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if len(list((tmp_path / "outputs" / "runs").glob("*/parts/batch-*.json"))) >= 2:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    run_dir = _only_run(tmp_path / "outputs")
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"learnroot-run: interrupted: \d+ of 40 batches done; resume with: learnroot-run "
                        rf"resume={re.escape(str(run_dir))}", last), last
    assert "KeyboardInterrupt" in (run_dir / "learnroot.log").read_text()  # the traceback is in the log


# ----------------------------------------------------------------------------- item 9: overflowing logits

def test_overflowing_logits_are_flagged_and_every_metric_has_n(tmp_path, test_cache, monkeypatch):
    from learnroot import runner
    from learnroot.models import build_model
    root = image_folder(tmp_path / "data", 4)

    def overflowing(*args, **kwargs):
        model = build_model(*args, **kwargs)
        last = [module for module in model.modules() if isinstance(module, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.weight.mul_(1e38)
        return model
    monkeypatch.setattr(runner, "build_model", overflowing)
    summary = runner.run(_options(root, test_cache), tmp_path / "run")
    assert summary["n_ok"] == 0
    assert all("non-finite logits" in item["reason"] for item in summary["flagged"])
    for name in ("morf_auc", "lerf_auc", "target_prob", "target_logit", "accuracy", "relevance_sum"):
        assert summary["metrics"][name]["n"] == 0, name
    reloaded = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert reloaded["metrics"]["morf_auc"] == {"mean": None, "std": None, "n": 0}


# ------------------------------------------------------------------- item 10: what the scan leaves out

def test_broken_links_are_skipped_and_other_files_counted(tmp_path, test_cache, caplog):
    from learnroot import runner
    root = image_folder(tmp_path / "data", 4)
    (root / "circle" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (root / "circle" / "loop.png").symlink_to(root / "circle" / "loop.png")
    Image.new("RGB", (8, 8)).save(root / "circle" / "anim.gif")
    (root / "ring" / "notes.txt").write_text("notes")
    (root / "ring" / "more.GIF").write_bytes((root / "circle" / "anim.gif").read_bytes())
    with caplog.at_level("INFO"):
        summary = runner.run(_options(root, test_cache), tmp_path / "run")
    assert summary["n_samples"] == 4
    skipped = {Path(item["path"]).name: item["reason"] for item in summary["skipped"]}
    assert skipped == {"gone.png": f"dangling symbolic link (target {tmp_path / 'nowhere.png'} not found)",
                       "loop.png": "symbolic link loop"}
    assert summary["ignored"] == {".gif": 2, ".txt": 1}
    assert "ignored 3 entries" in caplog.text and "2 .gif, 1 .txt" in caplog.text


def test_huge_jpeg_is_decoded_at_reduced_size(tmp_path, monkeypatch):
    """README: huge JPEGs are read at reduced size; other huge images are skipped (the limit is lowered
    here so that a small file stands for a 12000 x 12000 photo)."""
    from learnroot.data.images import BadImage, load_rgb
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    Image.new("RGB", (1500, 1200), "red").save(tmp_path / "huge.jpg")
    Image.new("RGB", (1500, 1200), "red").save(tmp_path / "huge.png")
    assert load_rgb(str(tmp_path / "huge.jpg"), draft=64).size == (188, 150)
    with pytest.raises(BadImage, match="1500 x 1200 pixels exceed the limit"):
        load_rgb(str(tmp_path / "huge.png"), draft=64)
    with pytest.raises(BadImage, match="image too large"):
        load_rgb(str(tmp_path / "huge.jpg"))  # without reduction (datasets with masks)


def test_exif_orientation_is_not_applied(tmp_path):
    """Documented: pixels are used as stored, like torchvision's image folders."""
    from learnroot.data.images import load_rgb
    image = Image.new("RGB", (40, 20), "red")
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    assert load_rgb(str(tmp_path / "rotated.jpg")).size == (40, 20)


# ------------------------------------------------------------------------------------- item 11: leftovers

def test_resume_removes_leftovers_and_records_every_segment(tmp_path, test_cache):
    from learnroot import runner
    root = image_folder(tmp_path / "data", 6)
    options = _options(root, test_cache)
    runner.run(options, tmp_path / "run")
    run_dir = tmp_path / "run"
    _interrupt_after(run_dir, 1)
    leftovers = [run_dir / "relevance" / ".circle__img_002_png.npz.x1y2.tmp", run_dir / "parts" / ".batch-000001.json.ab.tmp",
                 run_dir / ".metrics.json.zz.tmp"]
    for path in leftovers:
        path.write_bytes(b"half")
    (run_dir / "failed.json").write_text(json.dumps({"status": "failed", "stage": "run", "error": "killed"}))
    first = json.loads((run_dir / "segments.json").read_text())
    summary = runner.run(options, run_dir)
    assert not any(path.exists() for path in leftovers) and not list(run_dir.rglob("*.tmp"))
    assert not (run_dir / "failed.json").exists() and summary["earlier_failure"]["error"] == "killed"
    assert len(summary["segments"]) == 2 and summary["segments"][0] == first[0]
    assert [segment["batches"] for segment in summary["segments"]] == [3, 2]
    assert summary["runtime_s"] == pytest.approx(sum(segment["seconds"] for segment in summary["segments"]))
    assert summary["runtime_s"] > summary["segments"][1]["seconds"]


def test_a_folder_in_use_is_refused(tmp_path, test_cache):
    from learnroot import runner
    from learnroot.outputs import RunFolder
    root = image_folder(tmp_path / "data", 2)
    with RunFolder(tmp_path / "run").lock():
        with pytest.raises(runner.RunFolderError, match=f"in use by another learnroot process \\(pid {os.getpid()}\\)"):
            runner.run(_options(root, test_cache), tmp_path / "run")
    assert not (tmp_path / "run" / "manifest.json").exists()


# ---------------------------------------------------------------------------- item 12: bounded memory

def test_chunk_is_sized_from_the_available_memory():
    from learnroot.memory import bytes_per_image, chunk_size
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(16 * 32 * 32, 10)).eval()
    image = torch.zeros(1, 3, 32, 32)
    # largest input + output of one layer: the ReLU, 2 x 16 x 32 x 32 x 4 bytes; plus 3 copies of the input
    per_image = 2 * (2 * 16 * 32 * 32 * 4) + 3 * (3 * 32 * 32 * 4)
    assert bytes_per_image(model, image) == per_image
    budget_for_100 = per_image * 100 / 0.25  # the CPU may use a quarter of what is available
    assert chunk_size(model, image, 256, available=budget_for_100)[0] == 64  # power of two below 100
    assert chunk_size(model, image, 16, available=budget_for_100)[0] == 16  # metrics.pf_chunk bounds it
    assert chunk_size(model, image, 256, available=per_image)[0] == 1
    assert chunk_size(model, image, 256, available=10 ** 15)[0] == 256


def test_run_uses_and_reports_the_sized_chunk(tmp_path, test_cache, monkeypatch):
    from learnroot import memory, runner
    root = image_folder(tmp_path / "data", 4)
    options = _options(root, test_cache, "metrics.pf_steps=10")
    plenty = runner.run(options, tmp_path / "plenty")
    assert plenty["memory"]["pf_chunk"] == 256 and plenty["memory"]["peak_rss_mb"] > 0
    calls = []
    original = runner.evaluate

    def spy(*args, **kwargs):
        calls.append(args[6].pf_chunk)
        return original(*args, **kwargs)
    monkeypatch.setattr(runner, "evaluate", spy)
    per_image = plenty["memory"]["per_image_mb"] * 2 ** 20
    monkeypatch.setattr(memory, "available_bytes", lambda device: 3.5 * per_image / memory.CPU_SHARE)  # 3 images
    tight = runner.run(options, tmp_path / "tight")
    assert tight["memory"]["pf_chunk"] == calls[0] == 2
    assert tight["memory"]["budget_mb"] == pytest.approx(3.5 * plenty["memory"]["per_image_mb"])
    for name in ("morf_auc", "lerf_auc"):
        assert tight["metrics"][name]["mean"] == pytest.approx(plenty["metrics"][name]["mean"], rel=1e-5)


# ------------------------------------------------------------------ item 7: damaged folders in tables

def _damaged_sweep(root: Path) -> Path:
    from test_table import config, make_run
    rng = np.random.default_rng(0)
    for job, method in enumerate(("dtd_zplus", "ours", "lrp_0", "gradient")):
        folder = make_run(root / str(job), config(method), [f"method={method}"], metrics={"morf_auc": (0.2, 0.1, 3)})
        (folder / "relevance").mkdir()
        for sample in ("img_a", "img_b", "img_c"):
            np.savez(folder / "relevance" / f"{sample}.npz", relevance=rng.normal(size=(3, 8, 8)).astype(np.float32),
                     input=rng.normal(size=(3, 8, 8)).astype(np.float32), target=np.int64(1), logit=np.float64(2.0))
    (root / "2" / "metrics.json").write_text('{"status": "complete", "metr')  # corrupt metrics.json
    config_file = root / "3" / ".hydra" / "config.yaml"
    config_file.write_text(config_file.read_text()[:40] + "\n  - [unclosed")  # truncated config
    npz = root / "1" / "relevance" / "img_a.npz"
    npz.write_bytes(npz.read_bytes()[:200])  # truncated npz
    return root


@pytest.mark.slow  # installed scripts in subprocesses
def test_table_lists_damaged_run_folders_and_aggregates_the_rest(tmp_path):
    root = _damaged_sweep(tmp_path / "sweep")
    result = subprocess.run([script("learnroot-table"), str(root), "-o", str(tmp_path / "tables")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"learnroot-table: unreadable: {root / '2'}: unreadable metrics.json" in result.stderr
    assert f"learnroot-table: unreadable: {root / '3'}: unreadable .hydra/config.yaml" in result.stderr
    table = (tmp_path / "tables" / "table.md").read_text()
    assert "| dtd_zplus |" in table and "| ours |" in table and "unreadable" in table


@pytest.mark.slow  # installed scripts in subprocesses
def test_figures_leave_out_damaged_relevance_files(tmp_path):
    root = _damaged_sweep(tmp_path / "sweep")
    run = lambda *args: subprocess.run([script("learnroot-figures"), "heatmaps", str(root), "-o", str(tmp_path / "f"),
                                        *args], capture_output=True, text=True, timeout=300)
    result = run("-n", "2")
    assert result.returncode == 0, result.stderr
    assert "img_a: a damaged relevance file (.npz) in one of the runs; left out" in result.stderr
    assert "Images: img_b, img_c" in (tmp_path / "f" / "heatmaps.txt").read_text()
    chosen = run("--ids", "img_a")
    assert chosen.returncode == 2 and chosen.stderr.startswith("learnroot-figures: error: --ids: img_a: a damaged")


# ============================================================================ issue 22: names, cells, paths

def _unicode_and_dashimage_folder(root: Path) -> Path:
    """``-x/a.png`` (a leading dash), NFC and NFD ``é.png`` side by side, and a name that is not UTF-8."""
    import unicodedata
    _image(root / "-x" / "a.png", (20, 24), (0, 90, 0))
    _image(root / "circle" / unicodedata.normalize("NFC", "é.png"), (20, 24), (200, 0, 0))
    _image(root / "circle" / unicodedata.normalize("NFD", "é.png"), (20, 24), (0, 0, 200))
    _image(root / "circle" / os.fsdecode(b"\xff.png"), (20, 24), (9, 9, 9))
    return root


def test_names_that_are_not_plain_get_hashed_ids_and_run(tmp_path, test_cache):
    """Issue 22: a class folder ``-x`` and NFC/NFD twins stopped the whole run; now each gets its own id."""
    import unicodedata
    from learnroot import runner
    from learnroot.data.folder import file_sample_id, scan, unique_file_ids
    assert SAFE.fullmatch(file_sample_id("-x/a.png")) and "." in file_sample_id("-x/a.png")  # hashed
    assert file_sample_id("a/-b.png") != "a__-b_png" and "." in file_sample_id("a/-b.png")
    nfc, nfd = (unicodedata.normalize(form, "circle/é.png") for form in ("NFC", "NFD"))
    assert file_sample_id(nfd) == file_sample_id(nfc)  # a name stored decomposed (macOS) keeps its id
    twins = unique_file_ids([nfc, nfd])
    assert twins[0] == file_sample_id(nfc) and twins[1] != twins[0] and SAFE.fullmatch(twins[1])
    assert unique_file_ids([nfd]) == [file_sample_id(nfc)]  # alone, it needs no other id
    root = _unicode_and_dashimage_folder(tmp_path / "data")
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"0": ["-x", "x"], "1": ["circle", "circle"]}))
    assert len({sample.id for sample in scan(str(root), 0, str(index))}) == 4
    options = _options(root, test_cache, f"dataset.class_index={index}")
    summary = runner.run(options, tmp_path / "run")
    assert summary["n_samples"] == 4 and not summary["skipped"]
    rows = pd.read_csv(tmp_path / "run" / "per_sample.csv")
    assert rows["id"].is_unique and all(SAFE.fullmatch(sample_id) for sample_id in rows["id"])
    assert len(list((tmp_path / "run" / "relevance").glob("*.npz"))) == 4
    assert any(path.endswith("\\udcff.png") for path in rows["path"])  # written, readable as UTF-8


def test_a_fifo_named_like_an_image_is_skipped_as_such(tmp_path, caplog):
    from learnroot.data.folder import scan
    root = image_folder(tmp_path / "data", 2)
    os.mkfifo(root / "circle" / "pipe.JPEG")  # opening it would block forever: never opened
    with caplog.at_level("INFO"):
        samples = scan(str(root), 0)
    assert len(samples) == 2 and not samples.ignored
    assert [(Path(item["path"]).name, item["reason"]) for item in samples.excluded] == [
        ("pipe.JPEG", "not a regular file: a named pipe (FIFO)")]
    assert ".jpeg" not in caplog.text.split("accepted")[0]  # not "not image files (1 .jpeg ...)"


def test_csv_cells_that_would_be_formulas_are_written_safely():
    from learnroot.outputs import spreadsheet_safe
    frame = pd.DataFrame({"path": ["=HYPERLINK(1)", "+x", "-x/a.png", "@x", "\tx", "a=b", "-0.5", "1e3"],
                          "value": [-1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]})
    safe = spreadsheet_safe(frame)
    assert safe["path"].tolist() == ["'=HYPERLINK(1)", "'+x", "'-x/a.png", "'@x", "'\tx", "a=b", "-0.5", "1e3"]
    assert safe["value"].tolist() == frame["value"].tolist()


def test_a_path_cell_never_starts_a_formula(tmp_path, test_cache, monkeypatch):
    from dataclasses import replace
    from learnroot import runner
    monkeypatch.chdir(tmp_path)
    image_folder(tmp_path / "=1+1", 2)
    options = _options(image_folder(tmp_path / "data", 2), test_cache)
    runner.run(replace(options, dataset=replace(options.dataset, root="=1+1")), tmp_path / "run")
    cells = [line.split(",")[1] for line in (tmp_path / "run" / "per_sample.csv").read_text().splitlines()[1:]]
    assert cells and all(cell.startswith("'=1+1/") for cell in cells), cells


@pytest.mark.parametrize("override, fragment", [
    ("dataset.root=${oc.env:LEARNROOT_SURELY_UNSET}", "Environment variable 'LEARNROOT_SURELY_UNSET' not found"),
    ("dataset.root=${nope.x}", "Interpolation key 'nope.x' not found"),
    ("dataset.root=${oc.decode:'[1'}", "dataset.root"),
])
def test_interpolation_errors_in_overrides_are_one_line(tmp_path, monkeypatch, capsys, override, fragment):
    from learnroot.cli import main
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([override])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("learnroot-run: error: ") and fragment in lines[0], lines
    assert not (tmp_path / "outputs").exists()


def test_shared_data_defaults_to_the_folder_beside_the_checkout(tmp_path, monkeypatch):
    from conftest import REPO
    from learnroot.config import compose_options
    monkeypatch.chdir(tmp_path)  # anywhere: the default does not depend on the current folder
    monkeypatch.delenv("LEARNROOT_SHARED_DATA", raising=False)
    options = compose_options("setup=lenet5_mnist")
    assert options.paths.shared_data == os.path.normpath(REPO.parent / "shared" / "data")
    assert options.dataset.root == os.path.join(options.paths.shared_data, "mnist")
    monkeypatch.setenv("LEARNROOT_SHARED_DATA", "/data/shared")  # an explicit value is taken as written
    assert compose_options("setup=lenet5_mnist").dataset.root == "/data/shared/mnist"


def test_a_missing_shared_folder_names_the_variable_to_set(tmp_path, monkeypatch, capsys):
    from learnroot.cli import main
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEARNROOT_SHARED_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit) as exit_info:
        main(["setup=resnet20_cifar10"])
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"learnroot-run: error: the shared data folder {tmp_path / 'nowhere'} is not there")
    assert "set LEARNROOT_SHARED_DATA=" in line and "\n" not in line


def test_the_training_example_writes_where_git_does_not_look():
    """README's ``learnroot-train -o ...`` example must not leave an untracked file in the repository."""
    from conftest import REPO
    from learnroot.train import parse_args
    import argparse
    parser_epilog = []
    original = argparse.ArgumentParser.__init__

    def keep(self, *args, **kwargs):
        parser_epilog.append(kwargs.get("epilog", ""))
        original(self, *args, **kwargs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "__init__", keep)
        parse_args([])
    output = re.search(r"learnroot-train -o (\S+)", parser_epilog[0]).group(1)
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", output], cwd=REPO)
    assert ignored.returncode == 0, f"{output} would be an untracked file in the repository"


def test_toy_model_measures_conservation_only(tmp_path, test_cache):
    """Pixel flipping of a two-input function says nothing (it read 1 / 1 / 0): model=toy_sigmoid switches
    the metrics to none (conservation stays); an explicit metrics= still wins."""
    from learnroot import runner
    from learnroot.config import compose_options
    options = compose_options("model=toy_sigmoid", f"paths.cache_dir={test_cache}", "save_heatmaps=false")
    assert options.metrics.select == ["conservation", "cost"]  # metrics=none: only these run
    assert "removal" in compose_options("model=toy_sigmoid", "metrics=fast").metrics.select
    summary = runner.run(options, tmp_path / "run")
    assert "morf_auc" not in summary["metrics"] and summary["metrics"]["conservation_error"]["n"] == 39


def test_manifest_digest_and_structure():
    from learnroot import manifest
    data = manifest.seal({"format": manifest.FORMAT, "config": {"a": [1, 2.5]}, "overrides": ["a=1"],
                          "learnroot_version": "x", "samples": [{"id": "s1"}, {"id": "s2"}, {"id": "s3"}],
                          "batches": [["s1", "s2"], ["s3"]]})
    assert data["digest"] == manifest.digest(json.loads(json.dumps(data)))  # survives a JSON round trip
    assert manifest.digest(dict(data, overrides=["a=2"])) != data["digest"]
    manifest.check_structure(data)
    for batches, fragment in (([["s1", "s2"]], "'s3' is in none"), ([["s1", "s2"], ["s3", "s1"]], "in batch 0 and"),
                              ([["s1", "s2"], ["s3", "s4"]], "'s4', which is not in its samples"),
                              ([["s1", "s2"], []], "not lists of sample ids")):
        with pytest.raises(manifest.ManifestError, match=fragment):
            manifest.check_structure(dict(data, batches=batches))


def test_a_valid_part_of_another_run_is_recomputed(tmp_path, test_cache, caplog):
    """Issue 22: a part with a valid checksum copied from another run (method=gradient into dtd_zplus)."""
    from learnroot import runner
    root = image_folder(tmp_path / "data", 6)
    ours = _options(root, test_cache, "method=dtd_zplus")
    runner.run(_options(root, test_cache), tmp_path / "other")  # method=gradient
    runner.run(ours, tmp_path / "run")
    whole = _rows(tmp_path / "run")
    (tmp_path / "run" / "metrics.json").unlink()
    (tmp_path / "run" / "parts" / "batch-000001.json").write_bytes(
        (tmp_path / "other" / "parts" / "batch-000001.json").read_bytes())
    with caplog.at_level("WARNING"):
        runner.run(ours, tmp_path / "run")
    warned = [record.getMessage() for record in caplog.records if "batch-000001.json" in record.getMessage()]
    assert len(warned) == 1 and "written by another run" in warned[0]
    pd.testing.assert_frame_equal(_rows(tmp_path / "run"), whole)
