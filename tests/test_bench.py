"""The benchmark harness (scripts/bench.py) in its tiny mode, so that it cannot rot."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from learnroot.methods import names

METHODS = names(architecture="cnn")  # the tiny benchmark's model is a CNN

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"
COLUMNS = ["device", "device_name", "threads", "malloc", "torch", "zennit", "model", "weights", "size", "batch", "images",
           "method", "preset", "steps", "measure", "s_per_image", "s_per_image_min", "cpu_s_per_image", "repeats",
           "peak_mb",
           "peak_delta_mb", "memory", "x_forward", "x_floor", "x_zennit", "x_dtd_zplus", "x_paper_code",
           "ratio_clock", "relevance_sum", "r_top", "conservation", "note"]


def test_tiny_benchmark_writes_every_row(tmp_path, test_cache):
    out = tmp_path / "bench.csv"
    process = subprocess.run([sys.executable, str(BENCH), "--tiny", "--devices", "cpu", "--threads", "1",
                              "--runner-check", "--cache-dir", str(test_cache), "--csv", str(out)],
                             capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert process.returncode == 0, process.stderr[-2000:]
    assert "torch threads: 1" in process.stdout
    with open(out, newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    assert all(row["threads"] == "1" and row["device"] == "cpu" for row in rows)
    timed = [row for row in rows if row["measure"] != "runner"]
    assert all(float(row["s_per_image"]) > 0 and float(row["peak_mb"]) > 0 and not row["note"].startswith("out of")
               for row in timed)

    def find(**match):
        return [row for row in rows if all(row[key] == value for key, value in match.items())]

    for batch in ("1", "2"):
        assert len(find(batch=batch, measure="forward")) == len(find(batch=batch, measure="floor")) == 1
        assert float(find(batch=batch, measure="floor")[0]["x_floor"]) == 1.0
        for method in METHODS:
            presets = ["default", "paper"] if method == "ours" else [""]
            for preset in presets:
                for measure in ("attribution", "attribution+metrics"):
                    found = find(batch=batch, method=method, preset=preset, measure=measure, steps="")
                    assert len(found) == 1, (batch, method, preset, measure)
                    assert float(found[0]["x_forward"]) > 0 and float(found[0]["x_floor"]) > 0
                    if method == "ours":
                        assert float(found[0]["x_dtd_zplus"]) > 0
            if method != "ours":
                assert len(find(batch=batch, method=method, measure="zennit")) == 1
                assert float(find(batch=batch, method=method, measure="attribution")[0]["x_zennit"]) > 0
    sweep = find(method="ours", note="sweep")
    assert [row["steps"] for row in sweep] == ["0", "1", "2"] and all(row["batch"] == "1" for row in sweep)
    runs = find(measure="runner")
    assert [row["images"] for row in runs] == ["2", "4"]
    assert all(float(row["s_per_image"]) > 0 and float(row["peak_mb"]) > 0 for row in runs), runs


PAPER_CODE = Path(os.environ.get("LEARNROOT_PAPER_CODE", "/work/scratch/research/XAI-RootInference"))


def bench_rows(tmp_path, *args: str) -> list[dict]:
    """Run the benchmark with ``args`` (CPU, one thread, no metrics, no zennit) and read its rows."""
    out = tmp_path / "bench.csv"
    process = subprocess.run([sys.executable, str(BENCH), "--devices", "cpu", "--threads", "1", "--warmup", "0",
                              "--repeats", "1", "--min-time", "0", "--no-metrics", "--no-zennit", "--csv", str(out),
                              *args], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert process.returncode == 0, process.stderr[-2000:]
    with open(out, newline="") as handle:
        return list(csv.DictReader(handle))


def test_sweep_overrides_set_root_opt_keys(tmp_path):
    rows = bench_rows(tmp_path, "--models", "tiny", "--batch-sizes", "1", "--methods", "ours", "--root-opt", "",
                      "--sweep-steps", "1", "--sweep-overrides", "step=relative,conv.loss=cosine,dense.loss=cosine")
    sweep = [row for row in rows if row["note"].startswith("sweep")]
    assert [row["note"] for row in sweep] == ["sweep step=relative conv.loss=cosine dense.loss=cosine"]
    assert abs(float(sweep[0]["conservation"])) < 1e-3 and float(sweep[0]["x_dtd_zplus"]) > 0
    process = subprocess.run([sys.executable, str(BENCH), "--tiny", "--sweep-overrides", "conv.speed=9"],
                             capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert process.returncode != 0 and "root_opt.conv.speed" in process.stderr


def test_paper_code_is_timed_next_to_ours(tmp_path):
    if not (PAPER_CODE / "modules" / "layers_cnn.py").is_file():
        pytest.skip(f"the paper's code is not at {PAPER_CODE} (set LEARNROOT_PAPER_CODE)")
    rows = bench_rows(tmp_path, "--models", "tiny,small_cnn", "--batch-sizes", "1", "--methods", "ours",
                      "--root-opt", "paper", "--sweep-steps", "", "--ratio-clock", "cpu", "--paper-code", str(PAPER_CODE))
    ours = [row for row in rows if row["model"] == "tiny" and row["method"] == "ours"]
    paper = [row for row in rows if row["model"] == "tiny" and row["method"] == "paper_code"]
    assert len(ours) == len(paper) == 1
    ours, paper = ours[0], paper[0]
    assert float(ours["x_paper_code"]) > 0 and float(paper["x_paper_code"]) == 1.0
    assert ours["ratio_clock"] == paper["ratio_clock"] == "cpu"
    assert float(ours["x_paper_code"]) == pytest.approx(float(ours["cpu_s_per_image"]) / float(paper["cpu_s_per_image"]),
                                                       rel=1e-4)
    assert float(paper["x_dtd_zplus"]) > 0 and "paper code takes" in ours["note"]
    # same model, input and target: the paper's code starts from |logit|, ours from the logit
    assert abs(float(paper["r_top"])) == pytest.approx(abs(float(ours["r_top"])), rel=1e-5)
    assert float(ours["conservation"]) < 1e-3
    assert float(paper["relevance_sum"]) != pytest.approx(float(paper["r_top"]), rel=1e-3)  # it does not conserve
    skipped = [row for row in rows if row["model"] == "small_cnn" and row["method"] == "paper_code"]
    assert len(skipped) == 1 and skipped[0]["note"].startswith("not run") and skipped[0]["s_per_image"] == ""


def test_vision_transformer_methods_are_timed(tmp_path):
    # transformer-only methods compose with a model they explain (a CNN default would refuse them)
    rows = bench_rows(tmp_path, "--models", "small_vit", "--batch-sizes", "1", "--methods", "chefer,attnlrp",
                      "--root-opt", "", "--sweep-steps", "", "--max-repeats", "1")
    timed = {row["method"] for row in rows if row["measure"] == "attribution"}
    assert timed == {"chefer", "attnlrp"}
    assert all(float(row["x_forward"]) > 0 for row in rows if row["measure"] == "attribution")
