"""The benchmark harness (scripts/bench.py) in its tiny mode, so that it cannot rot."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from learnroot.methods import names

METHODS = names(architecture="cnn")  # the tiny benchmark's model is a CNN

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"
COLUMNS = ["device", "device_name", "threads", "malloc", "torch", "zennit", "model", "size", "batch", "images",
           "method", "preset", "steps", "measure", "s_per_image", "s_per_image_min", "repeats", "peak_mb",
           "peak_delta_mb", "memory", "x_forward", "x_floor", "x_zennit", "x_dtd_zplus", "note"]


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
