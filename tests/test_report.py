"""``learnroot-report``: the structure of the report of a damaged sweep (every configuration and image
present, links resolve, no external URL), and the page in a real browser (headless Chromium)."""
from __future__ import annotations

import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from browser import CHROMIUM, Browser
from conftest import script
from test_table import config, make_run

IDS = ("circle__c_01_png", "circle__c_02_png", "square__s_01_png", "square__s_02_png")
LABELS = {"circle": 0, "square": 1}
CURVE_X = [0.0, 0.5, 1.0]


def _samples(folder: Path, scores: dict, predictions: dict) -> None:
    rows = []
    for sample in IDS:
        name = sample.split("__")[0]
        rows.append({"id": sample, "path": f"/data/val/{name}/{sample}.png", "label": LABELS[name],
                     "prediction": predictions.get(sample, LABELS[name]), "target": LABELS[name], "status": "ok",
                     "reason": "", **{key: values[sample] for key, values in scores.items()}})
    pd.DataFrame(rows).to_csv(folder / "per_sample.csv", index=False)
    curves = [{"id": sample, "kind": kind, "step": step, "x": x, "prob": 0.9 - 0.5 * x * (kind == "morf") + 0.01 * i,
               "logit": 3.0 - x, "correct": True}
              for i, sample in enumerate(IDS) for kind in ("morf", "lerf") for step, x in enumerate(CURVE_X)]
    pd.DataFrame(curves).to_csv(folder / "curves.csv", index=False)


def _complete(folder: Path, method: str, morf: dict, relevance: bool = True, predictions: dict = None) -> Path:
    make_run(folder, config(method), [f"method={method}"],
             metrics={"morf_auc": (float(np.mean(list(morf.values()))), 0.1, 4), "lerf_auc": (0.7, 0.1, 4)})
    data = json.loads((folder / "metrics.json").read_text())
    data.update(curves={"morf": {"x": CURVE_X, "prob": [0.9, 0.6, 0.4]}}, device="cpu", runtime_s=1.5,
                memory={"peak_rss_mb": 100.0}, skipped=[{"path": "/data/val/x/broken.png", "reason": "truncated"}],
                layer_conservation_error={"classifier.2": 1e-7, "features.0": 2e-6})
    (folder / "metrics.json").write_text(json.dumps(data))
    (folder / "manifest.json").write_text(json.dumps({"learnroot_version": "0.1.0", "created": "2026-01-01"}))
    _samples(folder, {"morf_auc": morf, "lerf_auc": dict.fromkeys(IDS, 0.7)}, predictions or {})
    if relevance:
        (folder / "relevance").mkdir()
        rng = np.random.default_rng(len(method))
        for sample in IDS:
            np.savez(folder / "relevance" / f"{sample}.npz", relevance=rng.normal(size=(3, 8, 8)).astype(np.float32),
                     input=rng.normal(size=(3, 8, 8)).astype(np.float32), target=np.int64(0), logit=np.float64(1.0))
    return folder


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """dtd_zplus and ours (one damaged relevance file, one wrong prediction) with maps; lrp_0 without maps;
    a failed, an unfinished and an unreadable run folder."""
    root = tmp_path_factory.mktemp("report") / "sweep"
    base = {sample: 0.30 for sample in IDS}
    _complete(root / "0", "dtd_zplus", base)
    ours = _complete(root / "1", "ours", {IDS[0]: 0.10, IDS[1]: 0.29, IDS[2]: 0.28, IDS[3]: 0.31},
                     predictions={IDS[3]: 0})
    npz = ours / "relevance" / f"{IDS[1]}.npz"
    npz.write_bytes(npz.read_bytes()[:100])
    _complete(root / "2", "lrp_0", {sample: 0.5 for sample in IDS}, relevance=False)
    make_run(root / "3", config("gradient"), ["method=gradient"], failed="the dataset selection is empty")
    make_run(root / "4", config("lrp_epsilon"), ["method=lrp_epsilon"])
    make_run(root / "5", config("dtd_zb"), ["method=dtd_zb"], metrics={"morf_auc": (0.1, 0.0, 4)})
    (root / "5" / ".hydra" / "config.yaml").write_text("dataset:\n  name: shapes\n")
    return root


def run_report(*args) -> subprocess.CompletedProcess:
    return subprocess.run([script("learnroot-report"), *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def report(sweep, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out")
    result = run_report(sweep, "-o", out, "--paired", "dtd_zplus", "--resamples", "500")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and result.stdout.strip() == str(out / "report.html")
    return out


class Links(HTMLParser):
    """Every ``href`` and ``src`` of a page, and the text of the tables' header cells."""

    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        self.links += [value for key, value in attrs if key in ("href", "src") and value]


def gallery_data(out: Path) -> dict:
    text = (out / "report_assets" / "data.js").read_text()
    return json.loads(text[text.index("=") + 1:].rstrip().rstrip(";"))


def test_report_lists_every_configuration_image_and_problem(report, sweep):
    page = (report / "report.html").read_text()
    for label in ("dtd_zplus", "ours", "lrp_0"):
        assert f"{label}</td>" in page
    for job, status in ((3, "failed"), (4, "unfinished"), (5, "unreadable")):
        assert f'data-status="{status}"><b>{status}</b>: <code>{sweep / str(job)}</code>' in page
    assert "morf_auc ↓" in page and "lerf_auc ↑" in page  # directions from the metric registry
    assert "Paired differences against dtd_zplus" in page and "95 % percentile-bootstrap interval" in page
    data = gallery_data(report)["gallery"]
    from learnroot.methods import names
    assert data["columns"] == sorted(["dtd_zplus", "ours", "lrp_0"], key=list(names()).index)  # canonical order
    zplus, ours, lrp = (data["columns"].index(label) for label in ("dtd_zplus", "ours", "lrp_0"))
    assert [image["id"] for image in data["images"]] == list(IDS)
    assert data["classes"] == ["0 circle", "1 square"]
    by_id = {image["id"]: image for image in data["images"]}
    assert not by_id[IDS[3]]["correct"] and by_id[IDS[0]]["correct"]
    assert by_id[IDS[1]]["cells"][ours]["note"].startswith("damaged relevance file")
    assert by_id[IDS[0]]["cells"][lrp]["note"] == "no relevance saved" and "src" not in by_id[IDS[0]]["cells"][lrp]
    assert by_id[IDS[0]]["cells"][ours]["scores"]["morf_auc"] == pytest.approx(0.10)
    maps = [cell for image in data["images"] for cell in image["cells"] if cell and "src" in cell]
    assert len(maps) == 2 * len(IDS) - 1  # two columns with maps, one damaged file
    with np.load(sweep / "0" / "relevance" / f"{IDS[0]}.npz") as arrays:  # the scale is the map's max |R|
        assert by_id[IDS[0]]["cells"][zplus]["scale"] == pytest.approx(float(np.abs(arrays["relevance"].sum(0)).max()),
                                                                   rel=1e-6)


def test_marks_only_where_the_interval_excludes_zero(report):
    page = (report / "report.html").read_text()
    paired = page[page.index("<h3>Paired differences"):page.index("Runs without results")]
    rows = re.findall(r"<tr>(<td.*?)</tr>", paired)
    assert len(rows) == 2  # lrp_0 and ours against dtd_zplus
    cells = {row.split("</td>")[0].split(">")[-1]: re.findall(r'<td data-sort="[^"]*" class="num">(.*?)</td>', row)
             for row in rows}
    # lrp_0 - dtd_zplus: +0.2 on every image (interval [0.2, 0.2]: excludes 0, worse on morf_auc (lower is
    # better)); lerf_auc identical: +0 [0, 0], not marked
    assert cells["lrp_0"][1] == '<span class="worse">+0.200 [+0.200, +0.200] †</span>'
    assert cells["lrp_0"][2] == "+0.000 [+0.000, +0.000]"
    # ours - dtd_zplus on morf_auc: -0.20, -0.01, -0.02, +0.01 (the damaged map does not matter here): the
    # bootstrap interval of the mean includes 0 -> no mark
    assert "<span" not in cells["ours"][1] and cells["ours"][1].startswith("-0.055 [")


def test_links_resolve_and_nothing_is_external(report):
    parser = Links()
    parser.feed((report / "report.html").read_text())
    local = [link for link in parser.links if not link.startswith("#")]
    assert "report_assets/report.js" in local and "report_assets/data.js" in local
    for link in local:
        assert (report / link).is_file(), link
    data = gallery_data(report)["gallery"]
    thumbnails = [image["input"] for image in data["images"] if image["input"]]
    thumbnails += [cell["src"] for image in data["images"] for cell in image["cells"] if cell and "src" in cell]
    for name in thumbnails:
        assert (report / "report_assets" / name).is_file(), name
    external = re.compile(r"(?i)\b(?:https?|ftp|wss?):|(?<![\w:])//[\w-]+\.[\w.-]+|@import|url\(")
    for file in [report / "report.html", *sorted((report / "report_assets").glob("*.*"))]:
        assert not external.search(file.read_text()), file


def test_a_rerun_replaces_the_report_and_foreign_folders_are_kept(sweep, tmp_path):
    assert run_report(sweep, "-o", tmp_path, "--metrics", "morf_auc").returncode == 0
    stale = tmp_path / "report_assets" / "img" / "in" / "99.png"
    stale.write_bytes(b"old")
    assert run_report(sweep, "-o", tmp_path, "--metrics", "morf_auc").returncode == 0
    assert not stale.exists()
    foreign = tmp_path / "mine"
    (foreign / "report_assets").mkdir(parents=True)
    (foreign / "report_assets" / "notes.txt").write_text("keep")
    result = run_report(sweep, "-o", foreign)
    assert result.returncode == 2 and result.stderr.startswith("learnroot-report: error:")
    assert (foreign / "report_assets" / "notes.txt").read_text() == "keep"
    missing = run_report(tmp_path / "nowhere")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no such folder" in missing.stderr


# ----------------------------------------------------------------------------------- in a real browser

needs_chromium = pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} not found: the browser test needs "
                                    "Chromium (Debian: apt-get install chromium; or set LEARNROOT_CHROMIUM)")


@needs_chromium
def test_the_page_in_headless_chromium(report):
    with Browser(height=2400) as browser:
        browser.open(report / "report.html")
        assert browser.evaluate("document.body.getAttribute('data-ready')") == "1"
        # the gallery: one row per image, the input and every map that exists
        assert browser.evaluate("document.querySelectorAll('#gallery-table tbody tr').length") == len(IDS)
        assert browser.evaluate("document.querySelectorAll('#gallery-table tbody img').length") == len(IDS) * 3 - 1
        assert browser.evaluate("document.getElementById('gallery-count').textContent").startswith("4 image(s)")
        loaded = browser.evaluate("Promise.all(Array.from(document.querySelectorAll('#gallery-table img')).map("
                                  "i => i.decode().then(() => i.naturalWidth, () => 0)))")
        assert len(loaded) == len(IDS) * 3 - 1 and all(width == 8 for width in loaded)  # 8 x 8, shown enlarged
        assert browser.evaluate("document.querySelectorAll('#gallery-table img.pixelated').length") == len(loaded)
        # filters: a class, an incorrect prediction, the largest spread first
        browser.evaluate("var s = document.getElementById('filter-class'); s.value = '1 square';"
                         "s.dispatchEvent(new Event('change')); 1")
        rows = "Array.from(document.querySelectorAll('#gallery-table tbody tr')).map(r => r.dataset.id)"
        assert browser.evaluate(rows) == [IDS[2], IDS[3]]
        browser.evaluate("var s = document.getElementById('filter-correct'); s.value = 'incorrect';"
                         "s.dispatchEvent(new Event('change')); 1")
        assert browser.evaluate(rows) == [IDS[3]]
        browser.evaluate("for (const id of ['filter-class', 'filter-correct']) { const s = document.getElementById(id);"
                         " s.value = ''; s.dispatchEvent(new Event('change')); }"
                         "var o = document.getElementById('order'); o.value = 'spread';"
                         "o.dispatchEvent(new Event('change')); 1")
        # morf_auc spread over dtd_zplus, ours, lrp_0: 0.40, 0.21, 0.22, 0.20
        assert browser.evaluate(rows) == [IDS[0], IDS[2], IDS[1], IDS[3]]
        # the score table sorts by a clicked column, both ways
        table = "document.querySelectorAll('table.sortable')[1]"
        column = browser.evaluate(f"Array.from({table}.tHead.rows[0].cells).findIndex(c => c.textContent.startsWith("
                                  "'morf_auc'))")
        values = f"Array.from({table}.tBodies[0].rows).map(r => r.cells[0].textContent)"
        browser.evaluate(f"{table}.tHead.rows[0].cells[{column}].click(); 1")
        assert browser.evaluate(values) == ["ours", "dtd_zplus", "lrp_0"]  # morf_auc 0.245, 0.30, 0.50
        assert browser.evaluate(f"{table}.tHead.rows[0].cells[{column}].getAttribute('aria-sort')") == "ascending"
        browser.evaluate(f"{table}.tHead.rows[0].cells[{column}].click(); 1")
        assert browser.evaluate(f"{table}.tHead.rows[0].cells[{column}].getAttribute('aria-sort')") == "descending"
        assert browser.evaluate(values) == ["lrp_0", "dtd_zplus", "ours"]
        assert browser.errors == []


@needs_chromium
def test_the_browser_check_sees_errors(tmp_path):
    """The check above can fail: a script error and a missing file are reported."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><img src="missing.png"><script>nope();</script></body></html>')
    with Browser() as browser:
        browser.open(page)
        browser.evaluate("new Promise(done => setTimeout(done, 200))")
    assert any("nope" in error for error in browser.errors), browser.errors
    assert any("missing.png" in error or "ERR_FILE_NOT_FOUND" in error for error in browser.errors), browser.errors


def test_thumbnails_keep_small_inputs_and_reduce_large_ones(tmp_path):
    from PIL import Image

    from learnroot.report.gallery import MAX_SIDE, build_gallery
    from learnroot.report.runs import read_run

    folder = _complete(tmp_path / "run", "ours", {sample: 0.1 for sample in IDS}, relevance=False)
    (folder / "relevance").mkdir()
    for sample, side in zip(IDS, (8, 64, 300, 300)):
        np.savez(folder / "relevance" / f"{sample}.npz", relevance=np.ones((3, side, side // 2), np.float32),
                 input=np.zeros((3, side, side // 2), np.float32))
    gallery = build_gallery([("ours", read_run(folder))], ["morf_auc"], tmp_path / "assets")
    inputs = [image["input"] for image in gallery["images"]]
    assert [name.rsplit(".", 1)[1] for name in inputs] == ["png", "png", "jpg", "jpg"]
    sizes = [(image["w"], image["h"]) for image in gallery["images"]]
    assert sizes == [(4, 8), (32, 64), (MAX_SIDE // 2, MAX_SIDE), (MAX_SIDE // 2, MAX_SIDE)]
    for name, size in zip(inputs, sizes):
        with Image.open(tmp_path / "assets" / name) as image:
            assert image.size == size and image.format == ("JPEG" if name.endswith(".jpg") else "PNG")
