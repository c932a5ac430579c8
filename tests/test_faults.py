"""Fault injection (issue 22): kill -9 at chosen and random moments, SIGTERM / Ctrl-C, a full disk at every
stage, tampered parts and manifests. Each case ends in a correct, complete run (after the command the
program printed) or in one line with exit status 2 (130 / 143 for signals), never a traceback, and never
a mixed, duplicated or lost row reported as complete.

The command-line cases run in a warm server (tests/faultserver.py) that forks one child per command, so
the module runs in about a minute on 2 cores; a real small file system (tmpfs in a user namespace) is
tried once and skipped where it cannot be mounted.
"""
from __future__ import annotations

import json
import random
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, script

ARGS = ["dataset.limit=6", "batch_size=2", "method=dtd_zplus", "metrics=fast", "metrics.pf_steps=4"]
TABLES = ("per_sample.csv", "layers.csv", "curves.csv")
PROGRESS = re.compile(r".*\d+%\|.*\|")  # tqdm's progress bar


class Warm:
    """The fault server: ``run(*argv, cwd=..., fault=..., kill_after_s=...)`` -> ``{"code", "stdout", "stderr"}``."""

    def __init__(self, env: dict):
        self.process = subprocess.Popen([sys.executable, str(REPO / "tests" / "faultserver.py")], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
        assert json.loads(self.process.stdout.readline()) == {"ready": True}

    def run(self, *argv: str, cwd: Path, fault: dict | None = None, kill_after_s: float | None = None,
            env: dict | None = None) -> dict:
        request = {"argv": list(argv), "cwd": str(cwd), "fault": fault, "env": env or {}, "timeout_s": 300}
        if kill_after_s is not None:
            request["kill_after_s"] = kill_after_s
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def warm(learnroot_env):
    server = Warm(learnroot_env)
    yield server
    server.close()


@pytest.fixture(scope="module")
def reference(warm, tmp_path_factory) -> dict:
    """The tables of the uninterrupted run (``ARGS``), without the timing columns."""
    cwd = tmp_path_factory.mktemp("reference")
    started = time.monotonic()
    result = warm.run(*ARGS, cwd=cwd)
    assert result["code"] == 0, result["stderr"]
    return {**tables(only_run(cwd)), "seconds": time.monotonic() - started}


def only_run(cwd: Path) -> Path:
    runs = sorted((cwd / "outputs" / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def tables(run_dir: Path) -> dict:
    frames = {name: pd.read_csv(run_dir / name) for name in TABLES}
    samples = frames["per_sample.csv"]
    frames["per_sample.csv"] = samples.drop(columns=[c for c in samples.columns if c.startswith("seconds_")])
    return frames


def one_line(result: dict, code: int = 2) -> str:
    """The single line on stderr (progress bars aside), checked: exit status ``code``, no traceback."""
    assert result["code"] == code, (result["code"], result["stderr"][-3000:])
    assert "Traceback" not in result["stderr"] + result["stdout"], result["stderr"][-3000:]
    lines = [line for line in result["stderr"].splitlines() if line.strip() and not PROGRESS.match(line)]
    assert len(lines) == 1, lines
    return lines[0]


def printed_command(line: str) -> list[str]:
    """The arguments of the ``learnroot-run ...`` command a message ends with."""
    match = re.search(r"(?:resume with|start it again with): learnroot-run (.*?)\)?$", line)
    assert match, line
    return shlex.split(match.group(1))


def assert_complete(run_dir: Path, reference: dict) -> None:
    """A complete run with exactly the reference's rows, no leftovers, its last segment complete."""
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["status"] == "complete" and summary["n_samples"] == 6
    for name, frame in tables(run_dir).items():
        pd.testing.assert_frame_equal(frame, reference[name], obj=name)  # the same rows, none mixed, lost or twice
    assert not list(run_dir.rglob("*.tmp")) and not (run_dir / "failed.json").exists()
    segments = json.loads((run_dir / "segments.json").read_text())
    assert segments[-1]["status"] == "complete"


def finish(warm, cwd: Path, reference: dict) -> Path:
    """Go on from whatever state the run folder is in, as a user would: ``resume=`` when it has a manifest
    (else ``resume=`` refuses in one line and the same command starts it again); returns the complete folder."""
    run_dir = only_run(cwd)
    resumed = warm.run(f"resume={run_dir}", cwd=cwd)
    if (run_dir / "manifest.json").is_file():
        assert resumed["code"] == 0, resumed["stderr"][-3000:]
    else:
        assert "no manifest.json" in one_line(resumed)  # nothing computed: the same command starts it again
        again = warm.run(*ARGS, cwd=cwd)
        assert again["code"] == 0, again["stderr"][-3000:]
        run_dir = max((cwd / "outputs" / "runs").iterdir())
    assert_complete(run_dir, reference)
    return run_dir


# ----------------------------------------------------------------------------------- kill -9 at eight moments

KILLS = {
    "writing .hydra": {"where": "hydra", "match": r"config\.yaml$", "action": "kill"},
    "writing the manifest": {"match": r"manifest\.json$", "action": "kill-mid"},
    "after the manifest": {"match": r"segments\.json$", "action": "kill"},
    "writing a relevance file": {"match": r"relevance/.*\.npz$", "nth": 3, "action": "kill-mid"},
    "writing a part": {"match": r"batch-000001\.json$", "action": "kill-mid"},
    "after a part": {"match": r"batch-000001\.json$", "action": "kill-after"},
    "merging the tables": {"match": r"layers\.csv$", "action": "kill"},
    "writing metrics.json": {"match": r"metrics\.json$", "action": "kill-mid"},
    "after metrics.json": {"match": r"metrics\.json$", "action": "kill-after"},
}


@pytest.mark.parametrize("moment", list(KILLS))
def test_kill_at_a_moment_then_go_on(warm, reference, tmp_path, moment):
    killed = warm.run(*ARGS, cwd=tmp_path, fault=KILLS[moment])
    assert killed["code"] == -9, killed["stderr"][-3000:]
    if moment == "after metrics.json":  # nothing left to do: resume says so
        run_dir = only_run(tmp_path)
        again = warm.run(f"resume={run_dir}", cwd=tmp_path)
        assert again["code"] == 0 and "already complete" in again["stdout"]
        assert_complete(run_dir, reference)
        return
    finish(warm, tmp_path, reference)


def test_kill_at_random_moments_then_go_on(warm, reference, tmp_path):
    seed = random.randrange(10 ** 6)
    rng = random.Random(seed)
    for attempt in range(3):  # anywhere within the time an uninterrupted run takes
        cwd = tmp_path / str(attempt)
        cwd.mkdir()
        killed = warm.run(*ARGS, cwd=cwd, kill_after_s=rng.uniform(0.2, 1.0) * reference["seconds"])
        assert killed["code"] in (0, -9), (seed, killed["stderr"][-3000:])
        if not (cwd / "outputs" / "runs").is_dir():  # killed before Hydra made the folder
            continue
        run_dir = only_run(cwd)
        if (run_dir / "metrics.json").is_file():
            assert_complete(run_dir, reference)
        else:
            finish(warm, cwd, reference)


# ------------------------------------------------------------------------------------- SIGTERM and Ctrl-C

@pytest.mark.parametrize("action, word, code", [("term", "terminated", 143), ("int", "interrupted", 130)])
def test_signal_mid_run_says_how_to_resume(warm, reference, tmp_path, action, word, code):
    stopped = warm.run(*ARGS, cwd=tmp_path, fault={"match": r"batch-000001\.json$", "action": action})
    line = one_line(stopped, code)
    run_dir = only_run(tmp_path)
    assert line == f"learnroot-run: {word}: 1 of 3 batches done; resume with: learnroot-run resume={run_dir}"
    segments = json.loads((run_dir / "segments.json").read_text())
    assert [item["status"] for item in segments] == ["interrupted"] and segments[0]["batches"] == 1
    resumed = warm.run(*printed_command(line), cwd=tmp_path)
    assert resumed["code"] == 0, resumed["stderr"][-3000:]
    assert_complete(run_dir, reference)


def test_sigterm_before_the_manifest_says_how_to_start_again(warm, reference, tmp_path):
    stopped = warm.run(*ARGS, cwd=tmp_path, fault={"match": r"manifest\.json$", "action": "term"})
    line = one_line(stopped, 143)
    assert line.startswith("learnroot-run: terminated: nothing was computed; start it again with: learnroot-run ")
    assert printed_command(line) == ARGS
    again = warm.run(*printed_command(line), cwd=tmp_path)
    assert again["code"] == 0, again["stderr"][-3000:]
    assert_complete(max((tmp_path / "outputs" / "runs").iterdir()), reference)


def test_sigterm_while_hydra_starts_is_one_line(warm, tmp_path):
    stopped = warm.run(*ARGS, cwd=tmp_path, fault={"where": "hydra", "match": r"config\.yaml$", "action": "term"})
    assert one_line(stopped, 143) == "learnroot-run: terminated before the run started; nothing was computed"


# ------------------------------------------------------------------------------------------- a full disk

def test_full_disk_at_the_start_is_one_line_before_any_folder(warm, tmp_path):
    line = one_line(warm.run(*ARGS, cwd=tmp_path, fault={"where": "fsync", "action": "enospc"}))
    assert line == ("learnroot-run: error: paths.output_root=outputs has no room left (No space left on device): "
                    "make room or choose another folder")
    assert not (tmp_path / "outputs" / "runs").exists()


@pytest.mark.parametrize("stage, fault", [
    ("hydra", {"where": "hydra", "match": r"config\.yaml$", "action": "enospc"}),
    ("manifest", {"match": r"manifest\.json$", "action": "enospc"}),
    ("part", {"match": r"relevance/.*\.npz$", "nth": 3, "action": "enospc"}),
    ("tables", {"match": r"curves\.csv$", "action": "enospc"}),
    ("metrics", {"match": r"metrics\.json$", "action": "enospc"}),
])
def test_full_disk_at_any_stage_is_one_line_and_the_printed_command_finishes(warm, reference, tmp_path, stage,
                                                                             fault):
    line = one_line(warm.run(*ARGS, cwd=tmp_path, fault=fault))
    assert "No space left on device" in line
    started = stage in ("part", "tables", "metrics")
    assert ("make room, then resume with: learnroot-run resume=" in line) == started, line
    assert ("nothing was computed; make room, then start it again with: learnroot-run " in line) != started, line
    done = warm.run(*printed_command(line), cwd=tmp_path)
    assert done["code"] == 0, done["stderr"][-3000:]
    run_dir = only_run(tmp_path) if started else max((tmp_path / "outputs" / "runs").iterdir())
    assert_complete(run_dir, reference)


def _can_mount_tmpfs(where: Path) -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {where}"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


def test_real_small_file_system(learnroot_env, reference, tmp_path):
    """A tmpfs of 4 KB refuses the run at once; of 300 KB it fills up mid-run; grown to 64 MB (made room),
    the printed command completes the run."""
    small = tmp_path / "small"
    small.mkdir()
    if not _can_mount_tmpfs(small):
        pytest.skip("cannot mount a tmpfs here (needs user namespaces: unshare -rm)")
    run = shlex.join([script("learnroot-run"), *ARGS, f"paths.output_root={small}"])
    steps = f"""
        mount -t tmpfs -o size=4k tmpfs {small}
        {run} 2> {tmp_path}/full.err; echo $? > {tmp_path}/full.code
        mount -o remount,size=300k {small}
        {run} 2> {tmp_path}/small.err; echo $? > {tmp_path}/small.code
        mount -o remount,size=64m {small}
        resume=$(sed -n 's/.*resume with: learnroot-run \\(.*\\))$/\\1/p' {tmp_path}/small.err)
        {script("learnroot-run")} $resume 2> {tmp_path}/resume.err; echo $? > {tmp_path}/resume.code
        cp -r {small}/runs {tmp_path}/runs
    """
    subprocess.run(["unshare", "-rm", "sh", "-c", steps], cwd=tmp_path, env=learnroot_env, timeout=600)
    read = lambda name: (tmp_path / name).read_text()
    full = [line for line in read("full.err").splitlines() if line.strip()]
    assert read("full.code").strip() == "2" and len(full) == 1 and "has no room left" in full[0], full
    small_lines = [line for line in read("small.err").splitlines() if line.strip() and not PROGRESS.match(line)]
    assert read("small.code").strip() == "2" and len(small_lines) == 1, small_lines
    assert "No space left on device" in small_lines[0] and "resume with" in small_lines[0], small_lines
    assert read("resume.code").strip() == "0", read("resume.err")[-3000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, runs
    assert_complete(runs[0], reference)


# ------------------------------------------------------------------------------------ tampered run folders

@pytest.fixture(scope="module")
def stopped(warm, tmp_path_factory) -> Path:
    """A run folder stopped after its first batch (SIGKILL); tests work on copies (:func:`_interrupted`)."""
    cwd = tmp_path_factory.mktemp("stopped")
    killed = warm.run(*ARGS, cwd=cwd, fault={"match": r"batch-000001\.json$", "action": "kill"})
    assert killed["code"] == -9
    return only_run(cwd)


def _interrupted(stopped: Path, cwd: Path) -> Path:
    """A copy of the run folder ``stopped`` under ``cwd``."""
    run_dir = cwd / "outputs" / "runs" / stopped.name
    shutil.copytree(stopped, run_dir)
    return run_dir


def test_a_part_of_another_run_is_recomputed(warm, reference, stopped, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    done = warm.run(*[item.replace("dtd_zplus", "gradient") for item in ARGS], cwd=other)
    assert done["code"] == 0
    run_dir = _interrupted(stopped, tmp_path / "run")
    stranger = only_run(other) / "parts" / "batch-000001.json"
    shutil.copy(stranger, run_dir / "parts" / "batch-000001.json")  # a valid part, of method=gradient
    resumed = warm.run(f"resume={run_dir}", cwd=tmp_path / "run")
    assert resumed["code"] == 0, resumed["stderr"][-3000:]
    warnings = [line for line in resumed["stdout"].splitlines() if "batch-000001.json is invalid" in line]
    assert len(warnings) == 1 and "written by another run" in warnings[0], resumed["stdout"][-3000:]
    assert_complete(run_dir, reference)


@pytest.mark.parametrize("edit, fragment", [
    ("config_and_overrides", "manifest.json was changed after the run started"),
    ("drop_from_batch", "manifest.json was changed after the run started"),
    ("sealed_drop_from_batch", "is in none of its batches"),
    ("sealed_repeat_in_batch", "is in batch 0 and in batch 2"),
    ("sealed_drop_sample", "which is not in its samples"),
])
def test_a_tampered_manifest_is_refused_in_one_line(warm, stopped, tmp_path, edit, fragment):
    from learnroot.manifest import seal
    run_dir = _interrupted(stopped, tmp_path)
    path = run_dir / "manifest.json"
    saved = json.loads(path.read_text())
    ids = [item["id"] for item in saved["samples"]]
    if edit == "config_and_overrides":  # the case: curves of 4 and 6 steps in one run
        saved["config"]["metrics"]["pf_steps"] = 6
        saved["overrides"] = [item.replace("pf_steps=4", "pf_steps=6") for item in saved["overrides"]]
    elif edit.endswith("drop_from_batch"):
        saved["batches"][2] = saved["batches"][2][:1]
    elif edit == "sealed_repeat_in_batch":
        saved["batches"][2] = saved["batches"][2] + [ids[0]]
    else:
        saved["samples"] = saved["samples"][1:]
    path.write_text(json.dumps(seal(saved) if edit.startswith("sealed") else saved))
    line = one_line(warm.run(f"resume={run_dir}", cwd=tmp_path))
    assert line.startswith(f"learnroot-run: error: resume={run_dir}: ") and fragment in line, line
    assert not (run_dir / "metrics.json").exists()


def test_merged_rows_must_match_the_batches(tmp_path, test_cache, monkeypatch):
    """The last guard: a duplicated row that passed every part check is never reported as complete."""
    from learnroot import outputs, runner
    from learnroot.config import compose_options
    options = compose_options(*ARGS, f"paths.cache_dir={test_cache}")
    original = outputs.RunFolder.read_parts

    def duplicating(self, indices=None):
        rows = original(self, indices)
        rows["samples"].append(dict(rows["samples"][0]))
        return rows
    monkeypatch.setattr(outputs.RunFolder, "read_parts", duplicating)
    with pytest.raises(runner.RunError, match=r"parts hold 7 rows for 6 samples"):
        runner.run(options, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_what_hydra_refuses_in_a_sweep_is_one_line(warm, tmp_path):
    """A sweep function is composed by Hydra itself (after learnroot's own checks): still one line."""
    line = one_line(warm.run("-m", "method=choice(nope,gradient)", *ARGS[:2], cwd=tmp_path))
    assert line.startswith("learnroot-run: error: Could not find 'method/nope' (available: ")
