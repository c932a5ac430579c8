"""Issue 26 item 2: ``dataset.shard=K/N`` (a deterministic, disjoint part of a run's samples) and the tables that
merge the shards of one configuration into one row."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image

from learnroot.report import build, paired
from learnroot.report.runs import TableError
from learnroot.sharding import expand_shards, interleave, parse_shard, shard_positions
from test_table import config, run_table
from conftest import image_folder


# ------------------------------------------------------------------------------------------ the selection

def test_shards_are_round_robin_disjoint_and_together_the_whole_list():
    assert list(shard_positions(10, 1, 4)) == [1, 5, 9]  # positions K, K + N, ...
    assert list(shard_positions(10, 3, 4)) == [3, 7]
    assert list(shard_positions(2, 3, 4)) == []
    for total in range(0, 23):
        for count in range(1, 7):
            shards = [list(shard_positions(total, index, count)) for index in range(count)]
            flat = [position for shard in shards for position in shard]
            assert sorted(flat) == list(range(total)) and len(set(flat)) == total
            assert max(map(len, shards)) - min(map(len, shards)) <= 1
            items = [f"s{position}" for position in range(total)]
            assert interleave({k: [items[p] for p in shard] for k, shard in enumerate(shards)}, count) == items
    # a missing shard: the others in the unsharded order
    items = [f"s{position}" for position in range(10)]
    present = {0: items[0::4], 1: items[1::4], 3: items[3::4]}
    assert interleave(present, 4) == [item for position, item in enumerate(items) if position % 4 != 2]


def test_shard_values_are_checked_in_one_line():
    from learnroot.groups import DatasetOptions
    from learnroot.params import check_options
    assert parse_shard("2/8") == (2, 8) and parse_shard(None) is None
    check_options(DatasetOptions(shard="7/8"), "dataset.")
    for value, fragment in (("8/8", "0 <= K < N"), ("3", "counted from 0"), ("a/b", "counted from 0"),
                            ("0/0", "N >= 1"), ("-1/4", "counted from 0")):
        with pytest.raises(ValueError, match=r"^dataset.shard .*" + re.escape(fragment)) as caught:
            check_options(DatasetOptions(shard=value), "dataset.")
        assert "\n" not in str(caught.value)


def test_the_shards_helper_expands_into_a_sweep():
    assert expand_shards(["method=ours", "dataset.shards=3", "dataset.limit=9"], True) == [
        "method=ours", "dataset.shard=0/3,1/3,2/3", "dataset.limit=9"]
    assert expand_shards(["method=ours"], False) == ["method=ours"]
    for overrides, multirun, fragment in ((["dataset.shards=3"], False, "add -m"),
                                          (["dataset.shards=0"], True, "positive integer"),
                                          (["dataset.shards=x"], True, "positive integer"),
                                          (["dataset.shards=2", "dataset.shard=0/2"], True, "drop dataset.shard")):
        with pytest.raises(ValueError, match=fragment):
            expand_shards(overrides, multirun)


def _folder(root: Path, count: int, classes=("circle", "ring", "square")) -> Path:
    """An ImageNet-style folder of small random PNGs."""
    return image_folder(root, count, classes)


def _ids(dataset) -> list[str]:
    from learnroot.data import sample_list
    return [item["id"] for item in sample_list(dataset)]


def test_a_shard_is_every_nth_sample_after_part_and_limit(tmp_path, test_cache):
    from learnroot.data import DataError, Preprocess, build_dataset, take_shard
    from learnroot.options import DatasetOptions
    preprocess = Preprocess()
    for options in (DatasetOptions(limit=10), DatasetOptions(part="test", limit=13, seed=4),
                    DatasetOptions(name="toy_points", limit=None)):
        whole = _ids(build_dataset(options, preprocess, 6, str(test_cache)))
        shards = [_ids(take_shard(build_dataset(options, preprocess, 6, str(test_cache)), f"{k}/4")) for k in range(4)]
        assert shards == [whole[k::4] for k in range(4)]  # written out: the K-th, (K+N)-th, ... sample
        assert sorted(sum(shards, [])) == sorted(whole) and len(set(sum(shards, []))) == len(whole)
    # the whole list's length and digest go into the manifest (SHA-256 of the ids, one a line)
    options = DatasetOptions(limit=10)
    whole = _ids(build_dataset(options, preprocess, 6, str(test_cache)))
    shard = take_shard(build_dataset(options, preprocess, 6, str(test_cache)), "1/3")
    assert shard.selection == {"n": 10, "digest": hashlib.sha256("\n".join(whole).encode()).hexdigest()}
    assert shard.has_masks and take_shard(shard, None) is shard
    with pytest.raises(DataError, match=r"dataset.shard=5/8 holds no sample: the run selects 4 sample"):
        take_shard(build_dataset(replace(options, limit=4), preprocess, 6, str(test_cache)), "5/8")
    # a folder: the shard of the images keeps what the scan set aside
    root = _folder(tmp_path / "data", 7)
    (root / "circle" / "gone.png").symlink_to(tmp_path / "missing.png")
    scanned = build_dataset(DatasetOptions(name="imagenet", root=str(root), limit=None), preprocess, 3,
                            str(test_cache))
    shard = take_shard(scanned, "0/2")
    assert _ids(shard) == _ids(scanned)[0::2] and [item["id"] for item in shard.excluded] == ["circle__gone_png"]


def _weights(test_cache: Path) -> Path:
    from learnroot.models.small_cnn import small_cnn_file
    from learnroot.options import DatasetOptions, ModelOptions
    return small_cnn_file(ModelOptions(), DatasetOptions(), str(test_cache))


def _options(root: Path, test_cache: Path, *extra: str):
    from learnroot.config import compose_options
    index = root.parent / "index.json"
    index.write_text(json.dumps({str(i): [name, name] for i, name in enumerate(
        ["circle", "cross", "diamond", "ring", "square", "triangle"])}))
    return compose_options("dataset=imagenet", f"dataset.root={root}", f"dataset.class_index={index}",
                           "dataset.limit=null", f"model.weights={_weights(test_cache)}", "model.resize=32",
                           "model.crop=32", "method=gradient", "metrics=fast", "metrics.pf_steps=4", "batch_size=2",
                           f"paths.cache_dir={test_cache}", *extra)


def _rows(run_dir: Path) -> pd.DataFrame:
    frame = pd.read_csv(run_dir / "per_sample.csv")
    return frame.drop(columns=[c for c in frame.columns if c.startswith("seconds_")])


def test_a_shard_resumes_even_when_files_were_added(tmp_path, test_cache):
    from learnroot import runner
    root = _folder(tmp_path / "data", 9)
    options = _options(root, test_cache, "dataset.shard=1/2")
    runner.run(options, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "manifest.json").read_text())
    every = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    assert saved["config"]["dataset"]["shard"] == "1/2" and saved["selection"]["n"] == 9
    assert [Path(item["path"]).relative_to(root).as_posix() for item in saved["samples"]] == every[1::2]
    whole = _rows(tmp_path / "run")
    (tmp_path / "run" / "metrics.json").unlink()  # interrupted after the first batch
    for part in sorted((tmp_path / "run" / "parts").glob("batch-*.json"))[1:]:
        part.unlink()
    Image.new("RGB", (20, 24)).save(root / "circle" / "img_000a.png")  # shifts today's shard 1/2
    runner.run(options, tmp_path / "run")
    pd.testing.assert_frame_equal(_rows(tmp_path / "run"), whole)


# ------------------------------------------------------------------------------------------------- tables

SCORES = {"morf_auc": "lower", "lerf_auc": "higher"}


def _values(method: str, count: int) -> dict[str, list[float]]:
    rng = np.random.default_rng(zlib.crc32(method.encode()))
    return {name: list(np.round(rng.uniform(0, 1, count), 6)) for name in SCORES}


def make_shard(folder: Path, method: str, ids: list[str], values: dict, shard: str | None, whole: list[str],
               mtime: float = 1_000_000.0, overrides: tuple = ()) -> Path:
    """A complete run folder of ``method`` on the samples ``ids`` with per-sample ``values`` (as a run writes it:
    config, overrides, manifest with the whole list's selection, per_sample.csv, metrics.json from numpy)."""
    cfg = config(method)
    cfg["dataset"]["shard"] = shard
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(cfg), folder / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create([f"method={method}", *([f"dataset.shard={shard}"] if shard else []),
                                     *overrides]), folder / ".hydra" / "overrides.yaml")
    manifest = {"samples": [{"id": sample} for sample in ids], "batches": [ids]}
    if shard:
        manifest["selection"] = {"n": len(whole), "digest": hashlib.sha256("\n".join(whole).encode()).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    frame = pd.DataFrame({"id": ids, "label": 0, "prediction": 0, "status": "ok", **values})
    frame.to_csv(folder / "per_sample.csv", index=False)
    stats = {name: {"mean": float(np.mean(column)), "std": float(np.std(column, ddof=1)) if len(column) > 1
                    else None, "n": len(column)} for name, column in values.items()}
    stats["accuracy"] = {"mean": 1.0, "std": None, "n": len(ids)}
    curve = {"x": [0.0, 0.5, 1.0], "prob": [1.0, float(np.mean(values["morf_auc"])), 0.0]}
    (folder / "metrics.json").write_text(json.dumps({
        "status": "complete", "n_samples": len(ids), "n_ok": len(ids), "flagged": [], "skipped": [],
        "runtime_s": 1.0, "method": method, "metrics": stats, "curves": {"morf": curve},
        "layer_conservation_error": {"fc": float(np.mean(values["lerf_auc"]))}}))
    os.utime(folder / "metrics.json", (mtime, mtime))
    return folder


WHOLE = [f"img{index:02d}" for index in range(10)]


def sharded(root: Path, method: str, count: int = 4, skip=(), whole=WHOLE, mtime: float = 1_000_000.0) -> dict:
    """The shards of one configuration in ``root/<job>``; returns every sample's values (in the whole order)."""
    values = _values(method, len(whole))
    for index in range(count):
        if index in skip:
            continue
        positions = list(shard_positions(len(whole), index, count))
        make_shard(root / f"{method}-{index}", method, [whole[p] for p in positions],
                   {name: [column[p] for p in positions] for name, column in values.items()}, f"{index}/{count}",
                   whole, mtime + index)
    return values


def _row(result, method: str) -> pd.Series:
    rows = result.pivot[result.pivot["method"] == method]
    assert len(rows) == 1
    return rows.iloc[0]


def test_shards_merge_into_the_row_of_their_samples(tmp_path):
    values = {method: sharded(tmp_path / "sweep", method) for method in ("dtd_zplus", "ours")}
    result = build.aggregate(tmp_path / "sweep", metrics=list(SCORES) + ["accuracy"])
    assert len(result.used) == 2 and len(result.runs) == 8 and not result.notes
    assert [title for title, _ in result.columns] == ["method", "model", "shards"]  # dataset.shard is no column
    for method in ("dtd_zplus", "ours"):
        row = _row(result, method)
        assert row["shards"] == "4/4" and row["n"] == 10
        for name in SCORES:  # the pooled numbers equal numpy over all the samples
            assert row[f"{name}_mean"] == pytest.approx(np.mean(values[method][name]), rel=1e-12)
            assert row[f"{name}_std"] == pytest.approx(np.std(values[method][name], ddof=1), rel=1e-12)
            assert row[f"{name}_n"] == 10
        assert row["accuracy_mean"] == 1.0 and np.isnan(row["accuracy_std"])
    merged = next(run for run in result.used if run.config["method.name"] == "ours")
    assert str(merged.path) == str(tmp_path / "sweep" / "{ours-0,ours-1,ours-2,ours-3}")
    assert merged.order == WHOLE and "dataset.shard" not in merged.config
    curve = merged.summary["curves"]["morf"]["prob"]  # weighted by each shard's samples
    assert curve[1] == pytest.approx(np.mean(values["ours"]["morf_auc"]), rel=1e-12)
    assert merged.summary["layer_conservation_error"]["fc"] == pytest.approx(np.mean(values["ours"]["lerf_auc"]),
                                                                             rel=1e-12)
    assert merged.summary["n_samples"] == 10 and merged.summary["runtime_s"] == 4.0
    # every shard stays listed in runs.csv, with the row it belongs to
    members = result.tidy[result.tidy["run"].str.contains("ours-")].drop_duplicates("run")
    assert len(members) == 4 and members["note"].str.startswith("shard ").all()


def test_paired_differences_of_shards_are_those_of_one_run(tmp_path):
    values = {method: sharded(tmp_path / "shards", method) for method in ("dtd_zplus", "ours")}
    result = build.aggregate(tmp_path / "shards", metrics=list(SCORES), paired="dtd_zplus", resamples=2000)
    (comparison,) = result.comparisons
    differences = np.array(values["ours"]["morf_auc"]) - np.array(values["dtd_zplus"]["morf_auc"])  # whole order
    assert comparison.n == 10
    assert comparison.cells["morf_auc"][:4] == paired.bootstrap_ci(differences, 2000, 0)
    # the same samples as two unsharded runs: the same paired table
    for method in ("dtd_zplus", "ours"):
        make_shard(tmp_path / "whole" / method, method, WHOLE, values[method], None, WHOLE)
    whole = build.aggregate(tmp_path / "whole", metrics=list(SCORES), paired="dtd_zplus", resamples=2000)
    assert whole.comparisons[0].cells == comparison.cells


def test_a_missing_shard_is_incomplete_coverage_never_dropped(tmp_path):
    values = sharded(tmp_path / "sweep", "ours", skip=(2,))
    failed = tmp_path / "sweep" / "ours-2"
    (failed / ".hydra").mkdir(parents=True)
    cfg = config("ours")
    cfg["dataset"]["shard"] = "2/4"
    OmegaConf.save(OmegaConf.create(cfg), failed / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(["method=ours", "dataset.shard=2/4"]), failed / ".hydra" / "overrides.yaml")
    (failed / "failed.json").write_text(json.dumps({"status": "failed", "error": "out of memory"}))
    result = build.aggregate(tmp_path / "sweep", metrics=list(SCORES))
    row = _row(result, "ours")
    kept = [p for p in range(10) if p % 4 != 2]
    assert row["shards"] == "3/4" and row["n"] == len(kept) == 8
    assert row["morf_auc_mean"] == pytest.approx(np.mean([values["morf_auc"][p] for p in kept]), rel=1e-12)
    assert result.notes == [f"incomplete shards 3/4 for {tmp_path / 'sweep'}/{{ours-0,ours-1,ours-3}}: no complete run "
                            "of shard(s) 2/4; its row covers 8 of 10 samples"]
    assert [run.path.name for run in result.problems] == ["ours-2"]
    done = run_table(tmp_path / "sweep", "--strict", "-q")
    assert done.returncode == 1 and "incomplete shards 3/4" in done.stderr and "failed: " in done.stderr
    markdown = (tmp_path / "sweep" / "table.md").read_text()
    assert "| ours | small_cnn | 3/4 | 8 |" in markdown and "incomplete shards 3/4" in markdown
    shutil.rmtree(failed)  # a shard never launched: the same row and note, nothing to list as failed
    again = build.aggregate(tmp_path / "sweep", metrics=list(SCORES))
    assert _row(again, "ours")["shards"] == "3/4" and again.notes == result.notes and not again.problems


def test_a_repeated_shard_and_a_whole_run_follow_the_duplicate_rule(tmp_path):
    values = sharded(tmp_path / "sweep", "ours", count=2)
    positions = list(shard_positions(10, 1, 2))
    newer = {name: [v + 1.0 for v in (column[p] for p in positions)] for name, column in values.items()}
    make_shard(tmp_path / "sweep" / "again-1", "ours", [WHOLE[p] for p in positions], newer, "1/2", WHOLE,
               mtime=2_000_000.0)
    result = build.aggregate(tmp_path / "sweep", metrics=list(SCORES))
    row = _row(result, "ours")
    expected = [values["morf_auc"][p] for p in range(0, 10, 2)] + newer["morf_auc"]
    assert row["shards"] == "2/2" and row["morf_auc_mean"] == pytest.approx(np.mean(expected), rel=1e-12)
    assert any("2 complete runs of one config: using the newest" in note and "again-1" in note for note in result.notes)
    assert {run.path.name: run.status for run in result.runs}["ours-1"] == "superseded"
    # an unsharded run of the same configuration, newer than the shards: one configuration, the newer is used
    make_shard(tmp_path / "sweep" / "whole", "ours", WHOLE, values, None, WHOLE, mtime=3_000_000.0)
    result = build.aggregate(tmp_path / "sweep", metrics=list(SCORES))
    assert len(result.used) == 1 and result.used[0].path.name == "whole" and "shards" not in result.pivot
    assert any("superseded: " in note and "{ours-0,again-1}" in note for note in result.notes)


@pytest.mark.parametrize("case, fragment", [
    ("overlap", "overlapping shards: sample 'img04' is in shard 0/2"),
    ("counts", "shards of one configuration with different shard counts"),
    ("lists", "were cut from different sample lists"),
])
def test_shards_that_do_not_fit_are_refused_in_one_line(tmp_path, case, fragment):
    values = _values("ours", 10)
    take = lambda positions: {name: [column[p] for p in positions] for name, column in values.items()}
    make_shard(tmp_path / "s" / "a", "ours", WHOLE[0::2], take(range(0, 10, 2)), "0/2", WHOLE)
    if case == "overlap":  # shard 1/2 of a run that also holds img04
        make_shard(tmp_path / "s" / "b", "ours", WHOLE[1::2] + ["img04"], take([1, 3, 5, 7, 9, 4]), "1/2", WHOLE)
    elif case == "counts":
        make_shard(tmp_path / "s" / "b", "ours", WHOLE[1::4], take(range(1, 10, 4)), "1/4", WHOLE)
    else:  # the data changed between the starts of the two shards
        other = WHOLE[:-1] + ["img99"]
        make_shard(tmp_path / "s" / "b", "ours", other[1::2], take(range(1, 10, 2)), "1/2", other)
    with pytest.raises(TableError, match=re.escape(fragment)):
        build.aggregate(tmp_path / "s")
    done = run_table(tmp_path / "s")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and fragment in done.stderr


# ---------------------------------------------------------------------------- end to end (installed scripts)

def _one_line(result, prog: str = "learnroot-run") -> str:
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), result.stderr
    return lines[0]


@pytest.mark.slow
def test_bad_shards_on_the_command_line_are_one_line(run_cli):
    assert "dataset.shard must be K/N with 0 <= K < N" in _one_line(run_cli("dataset.shard=4/4"))
    assert "dataset.shards=4 launches 4 jobs, one per shard: add -m" in _one_line(run_cli("dataset.shards=4"))


TINY = ["method=dtd_zplus,ours", "dataset.limit=8", "metrics=fast", "batch_size=1"]


def _merged_rows(folders: list[Path]) -> pd.DataFrame:
    rows = pd.concat([_rows(folder) for folder in folders])
    return rows.sort_values("id").reset_index(drop=True)


@pytest.mark.slow
def test_four_shards_merge_into_the_rows_of_one_run(run_cli, tmp_path):
    """The acceptance test of issue 26 item 2: 4 shards launched with -m, merged by the tables, equal one
    unsharded run of the same configuration (per-sample scores identical; means within rounding)."""
    shards = run_cli("-m", "dataset.shards=4", *TINY, f"paths.output_root={tmp_path / 'shards'}")
    assert shards.returncode == 0, shards.stderr
    whole = run_cli("-m", *TINY, f"paths.output_root={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr
    (shard_sweep,) = (tmp_path / "shards" / "sweeps").iterdir()
    (whole_sweep,) = (tmp_path / "whole" / "sweeps").iterdir()
    for method, jobs in (("dtd_zplus", (0, 2, 4, 6)), ("ours", (1, 3, 5, 7))):  # -m: the methods, then the shards
        assert [json.loads((shard_sweep / str(job) / "manifest.json").read_text())["config"]["dataset"]["shard"]
                for job in jobs] == ["0/4", "1/4", "2/4", "3/4"]
        single = whole_sweep / ("0" if method == "dtd_zplus" else "1")
        # every sample once, and the same scores as the single run (batch_size=1: the same computation)
        pd.testing.assert_frame_equal(_merged_rows([shard_sweep / str(job) for job in jobs]),
                                      _rows(single).sort_values("id").reset_index(drop=True))

    tables = {}
    for name, folder in (("shards", shard_sweep), ("whole", whole_sweep)):
        done = run_cli(str(folder), "--metrics", "all", "--paired", "dtd_zplus", "--resamples", "2000", "-q",
                       name="learnroot-table")
        assert done.returncode == 0, done.stderr
        tables[name] = (pd.read_csv(folder / "table.csv"), pd.read_csv(folder / "table_paired.csv"))
    (pivot, pairs), (single, single_pairs) = tables["shards"], tables["whole"]
    assert list(pivot["shards"]) == ["4/4", "4/4"] and "shards" not in single
    assert list(pivot["method"]) == list(single["method"]) == ["dtd_zplus", "ours"]
    assert list(pivot["n"]) == list(single["n"]) == [8, 8]
    numbers = [column for column in single.columns if column.endswith(("_mean", "_std", "_n"))
               and not column.startswith("seconds_")]
    assert len(numbers) > 30
    for column in numbers:  # pooled from the shards' summaries: equal up to rounding
        np.testing.assert_allclose(pivot[column].astype(float), single[column].astype(float), rtol=1e-9, atol=1e-12,
                                   err_msg=column)
    differences = [column for column in single_pairs.columns if column.endswith(("_diff", "_low", "_high", "_n"))
                   and not column.startswith("seconds_")]
    pd.testing.assert_frame_equal(pairs[differences], single_pairs[differences])  # the same samples, the same order

    report = run_cli(str(shard_sweep), "-o", str(tmp_path / "report"), name="learnroot-report")
    assert report.returncode == 0, report.stderr
    script = (tmp_path / "report" / "report_assets" / "data.js").read_text()
    data = json.loads(script.split("=", 1)[1].strip().rstrip(";"))
    gallery = data["gallery"]
    assert len(gallery["columns"]) == 2 and len(gallery["images"]) == 8
    assert all(cell and cell.get("src") for image in gallery["images"] for cell in image["cells"])
    assert "2 configuration(s) from 8 run folder(s)" in (tmp_path / "report" / "report.html").read_text()
