"""Review page at scale: build a 2,000-lesion review of mined lesions and time it in Chromium.

    OMP_NUM_THREADS=1 python benchmarks/bench_review.py [--out /tmp/bench_review] [--lesions 2000]

Writes a synthetic dataset (128 x 128 slices), a run folder whose ``mined_lesions.json`` holds
``--lesions`` of its unlabeled boxes (as a perfect teacher would mine them), builds the review
(``uld.review.build_review``, 3 slices either side), and opens it in headless Chromium: the time
until the first cards are in the page and until the first card's picture has loaded, from
navigation start (``window.uldFirstCardsMs``, ``window.uldFirstImageMs``).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from uld.data.dataset import DatasetFolder
from uld.data.slice_boxes import SliceBox, write_slice_boxes
from uld.data.synth import SynthConfig, write_synthetic_dataset
from uld.review import build_review


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="/tmp/bench_review")
    parser.add_argument("--lesions", type=int, default=2000)
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    data, run = out / "data", out / "run"
    write_synthetic_dataset(data, SynthConfig(n_train=120, n_val=1, n_test=1, n_negatives=0, seed=0),
                            progress=False)
    folder = DatasetFolder(data)
    full, labels = folder.annotations("annotations_full.csv"), folder.annotations()
    labelled = {(str(v), int(z), tuple(b)) for v, z, b in zip(labels.volume, labels.z, labels.boxes)}
    boxes = [SliceBox(str(v), int(z), tuple(float(x) for x in b), 0.9)
             for v, z, b in zip(full.volume, full.z, full.boxes)
             if (str(v), int(z), tuple(b)) not in labelled][: args.lesions]
    run.mkdir()
    (run / "config.yaml").write_text(f"data:\n  root: {data}\n")
    write_slice_boxes(boxes, run / "MinedLesions.pkl", run / "mined_lesions.json", "mined_lesions")
    start = time.perf_counter()
    page = build_review(run, None, out / "review", neighbours=3)
    build_s = time.perf_counter() - start
    files = [p for p in (out / "review").rglob("*") if p.is_file()]
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    print(f"{len(boxes)} lesions: review built in {build_s:.1f} s, {len(files)} files, {size_mb:.0f} MB "
          f"(index.html {page.stat().st_size / 1e6:.2f} MB)")

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        for attempt in range(3):
            driver.get("about:blank")
            driver.get(page.as_uri())
            end = time.monotonic() + 30
            while driver.execute_script("return window.uldFirstImageMs") is None and time.monotonic() < end:
                time.sleep(0.02)
            cards, image = driver.execute_script("return [window.uldFirstCardsMs, window.uldFirstImageMs]")
            print(f"open {attempt + 1}: first cards {cards:.0f} ms, first picture {image:.0f} ms")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
