"""Measure ``learnroot-report`` on a sweep: the time to write the report, its size, and the time a
headless Chromium needs to open it (load event, and the gallery's first page drawn).

    python scripts/bench_report.py SWEEP [-o OUT] [--repeat 3] [--paired dtd_zplus] [--screenshot shot.png]

Needs Chromium (Debian: ``apt-get install chromium``); the browser is driven by ``tests/browser.py``.
The issue's reference case: a 1,000-image x 5-method sweep of the embedded default,
``learnroot-run -m method=gradient,lrp_epsilon,dtd_zplus,lrp_gamma,ours dataset.n_val=200 dataset.limit=1000
metrics=fast``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import Browser  # noqa: E402

from learnroot.report.cli import build_report  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep")
    parser.add_argument("-o", "--output", default=None, help="report folder (default: SWEEP)")
    parser.add_argument("--paired", default=None)
    parser.add_argument("--repeat", type=int, default=3, help="page loads, each in a fresh browser (3)")
    parser.add_argument("--screenshot", default=None, help="write a PNG of the page's top (1280 x 900)")
    args = parser.parse_args()
    out = Path(args.output or args.sweep)
    started = time.perf_counter()
    path, result = build_report(args.sweep, out, paired=args.paired)
    written = time.perf_counter() - started
    files = [file for file in out.joinpath("report_assets").rglob("*") if file.is_file()] + [path]
    size = sum(file.stat().st_size for file in files)
    loads, ready = [], []
    for attempt in range(args.repeat):
        with Browser() as browser:
            browser.open(path)
            timing = json.loads(browser.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])"))
            loads.append(timing["loadEventEnd"] / 1000)
            ready.append(browser.evaluate("window.LEARNROOT_READY_MS") / 1000)
            if browser.errors:
                print("console errors:", browser.errors, file=sys.stderr)
            if args.screenshot and attempt == 0:
                browser.screenshot(Path(args.screenshot))
    images = len(json.loads(out.joinpath("report_assets", "data.js").read_text().split("=", 1)[1].rstrip(";\n"))
                 ["gallery"]["images"])
    print(f"report of {len(result.used)} configurations x {images} images: written in {written:.1f} s; "
          f"{len(files)} files, {size / 2 ** 20:.1f} MiB (data.js "
          f"{out.joinpath('report_assets', 'data.js').stat().st_size / 2 ** 20:.1f} MiB, report.html "
          f"{path.stat().st_size / 1024:.0f} KiB)")
    print(f"headless Chromium, {args.repeat} loads: load event {statistics.median(loads):.2f} s (median; "
          f"max {max(loads):.2f}), gallery drawn {statistics.median(ready):.2f} s (max {max(ready):.2f})")


if __name__ == "__main__":
    main()
