"""The review page in a real browser (headless Chromium through Selenium), keyboard only.

These tests need Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them). When
the browser cannot start they FAIL saying so: a page nobody drove is not a tested page.
``ULD_REVIEW_SCREENSHOT=PATH`` saves the keyboard test's screenshot there (docs/review.png).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_review import mined_run  # tests/review is on sys.path (pytest rootdir import)

from uld.data.dataset import DatasetFolder
from uld.data.synth import SynthConfig, write_synthetic_dataset
from uld.review import apply_verdicts, build_review
from uld.review.page import page_html
from uld.review.render import CROP_PX

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def _first(paths: tuple[str, ...], what: str) -> str:
    for path in paths:
        if Path(path).is_file():
            return path
    found = shutil.which(Path(paths[0]).name)
    if found:
        return found
    pytest.fail(f"the browser cannot start: no {what} (looked in {', '.join(paths)}); install Debian's "
                "chromium and chromium-driver (.ci/run does)")


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads) -> Iterator[object]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        pytest.fail(f"the browser cannot start: selenium is not installed ({exc}); pip install -e '.[dev]'")
    options = webdriver.ChromeOptions()
    options.binary_location = _first(CHROMIUM, "chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    try:
        driver = webdriver.Chrome(service=Service(_first(DRIVER, "chromedriver")), options=options)
    except Exception as exc:  # any failure to start is the test's failure, said plainly
        pytest.fail(f"the browser cannot start: {exc.__class__.__name__}: {' '.join(str(exc).split())[:300]}")
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    yield driver
    driver.quit()


def _keys(driver, *keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    chain = ActionChains(driver)
    for key in keys:
        chain.send_keys(key)
    chain.perform()


def _wait(condition, seconds: float = 10.0, what: str = "the page"):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {seconds:g} s waiting for {what}")


def test_keyboard_review_of_50_lesions_exports_and_applies(browser, downloads, tmp_path):
    from selenium.webdriver.common.keys import Keys

    data = tmp_path / "data"
    write_synthetic_dataset(data, SynthConfig(n_train=8, n_val=1, n_test=1, n_negatives=0, size=64, seed=4),
                            progress=False)
    mined = mined_run(data, tmp_path / "run", limit=60)
    assert len(mined) >= 55
    page = build_review(tmp_path / "run", None, tmp_path / "review", neighbours=2)
    browser.get(page.as_uri())
    browser.execute_script("localStorage.clear();")
    browser.refresh()
    _wait(lambda: browser.execute_script("return window.uldFirstCardsMs !== undefined"), what="the cards")
    keys = browser.execute_script("return [...document.querySelectorAll('.card')].map(c => c.dataset.key)")
    assert len(keys) == len(mined)
    # 50 lesions, keyboard only: accept, reject, skip (arrow), in turn; every 7th marked unsure
    expected: dict[str, str] = {}
    for i, key in enumerate(keys[:50]):
        if i % 7 == 6:
            _keys(browser, "u")
            expected[key] = "unsure"
        elif i % 3 == 0:
            _keys(browser, "a")
            expected[key] = "accept"
        elif i % 3 == 1:
            _keys(browser, "r")
            expected[key] = "reject"
        else:
            _keys(browser, Keys.ARROW_RIGHT)
    current = browser.execute_script("return document.querySelector('.card.current').dataset.key")
    assert current == keys[50]
    # step through the current lesion's neighbouring slices, and back
    _keys(browser, ".", ".")
    label = browser.execute_script("return document.querySelector('.card.current .slice').textContent")
    assert "showing slice" in label and "peak" in label
    _keys(browser, ",", ",")
    done = sum(1 for v in expected.values() if v)
    counter = browser.find_element("id", "counter").text
    assert counter.startswith(f"done {done} / {len(keys)}")
    # verdicts survive a reload (localStorage). Chromium hands a page's localStorage writes to
    # the browser process asynchronously, so a reload right after the last key may still read
    # the older state (seen in CI on loaded cores): reload until the verdicts arrive.
    def reloaded_counter() -> str:
        browser.refresh()
        _wait(lambda: browser.execute_script("return window.uldFirstCardsMs !== undefined"),
              what="the reload")
        text = browser.find_element("id", "counter").text
        return text if text.startswith(f"done {done} / {len(keys)}") else ""

    _wait(reloaded_counter, seconds=20.0, what=f"{done} verdicts after a reload")
    if os.environ.get("ULD_REVIEW_SCREENSHOT"):
        _keys(browser, *([Keys.ARROW_LEFT] * 47))  # back to the top: the first cards, decided
        _wait(lambda: browser.execute_script(
            "return [...document.querySelectorAll('.card img')].slice(0, 12)"
            ".every(i => i.complete && i.naturalWidth > 0)"), what="the first pictures")
        browser.save_screenshot(os.environ["ULD_REVIEW_SCREENSHOT"])
    # export with the keyboard
    for old in downloads.glob("verdicts*.json"):
        old.unlink()
    _keys(browser, "e")
    exported = _wait(lambda: next(iter(downloads.glob("verdicts*.json")), None), what="verdicts.json")
    doc = json.loads(_wait(lambda: exported.read_text() or None, what="the download to finish"))
    manifest = json.loads((tmp_path / "review" / "manifest.json").read_text())
    assert doc["format"] == "uld-verdicts" and doc["review_id"] == manifest["review_id"]
    assert doc["verdicts"] == expected
    assert doc["counts"] == {v: list(expected.values()).count(v) for v in ("accept", "reject", "unsure")}
    # ... and the file the browser wrote turns into labels
    summary = apply_verdicts(exported, data, tmp_path / "new")
    assert summary["accepted_lesions"] == doc["counts"]["accept"]
    table = DatasetFolder(tmp_path / "new").annotations()
    assert int((table.extra["provenance"] != "label").sum()) == doc["counts"]["accept"]


def test_filters_hide_cards_and_keys_skip_hidden_ones(browser, tmp_path):
    data = tmp_path / "data"
    write_synthetic_dataset(data, SynthConfig(n_train=3, n_val=1, n_test=1, n_negatives=0, size=64, seed=5),
                            progress=False)
    mined = mined_run(data, tmp_path / "run", limit=12)
    page = build_review(tmp_path / "run", None, tmp_path / "review", neighbours=0)
    browser.get(page.as_uri())
    _wait(lambda: browser.execute_script("return window.uldFirstCardsMs !== undefined"), what="the cards")
    threshold = sorted(b.score for b in mined)[len(mined) // 2]
    browser.execute_script(f"const f = document.getElementById('f-score'); f.value = '{threshold}';"
                           "f.dispatchEvent(new Event('change'));")
    shown = browser.execute_script("return document.querySelectorAll('.card:not(.hidden)').length")
    assert shown == sum(1 for b in mined if b.score >= threshold) < len(mined)
    _keys(browser, "a")
    accepted = browser.execute_script("return document.querySelector('.card.accept').dataset.key")
    score = browser.execute_script(f"return JSON.parse(document.getElementById('review-data').textContent)"
                                   f".lesions.find(L => L.key === '{accepted}').score")
    assert score >= threshold


def test_a_2000_lesion_page_shows_its_first_cards_quickly(browser, tmp_path):
    """The page's cost at 2,000 lesions: each card has its own image files (hard links of one
    rendered crop, so the test does not spend a minute rendering 16,000 PNGs)."""
    review = tmp_path / "review"
    from PIL import Image

    sample = tmp_path / "crop.png"
    Image.new("RGB", (CROP_PX, CROP_PX), (40, 40, 40)).save(sample)
    lesions = []
    for i in range(2000):
        folder = review / "images" / f"vol{i // 10:03d}" / str(i % 10 + 1)
        folder.mkdir(parents=True)
        for name in ("z10.png", "z11.png", "z12.png", "context.png"):
            os.link(sample, folder / name)
        lesions.append({"key": f"vol{i // 10:03d}/{i % 10 + 1}", "volume": f"vol{i // 10:03d}",
                        "score": round(1 - i / 4000, 6), "z1": 10, "z2": 12, "peak": 11, "zmin": 10,
                        "zmax": 12,
                        "size_mm": 10.0 + i % 30, "dir": f"vol{i // 10:03d}/{i % 10 + 1}"})
    data = {"review_id": "perf", "review_dir": str(review), "kind": "predictions", "title": "2000",
            "lesions": lesions}
    (review / "index.html").write_text(page_html(data))
    browser.get("about:blank")
    start = time.perf_counter()
    browser.get((review / "index.html").as_uri())
    first = _wait(lambda: browser.execute_script("return window.uldFirstImageMs"), 60, "the first picture")
    wall = time.perf_counter() - start
    cards = browser.execute_script("return window.uldFirstCardsMs")
    started = time.perf_counter()
    _keys(browser, *("a" * 20))
    _wait(lambda: browser.find_element("id", "counter").text.startswith("done 20 /"), what="20 verdicts")
    per_key = (time.perf_counter() - started) / 20
    print(f"\n2,000-lesion review: first cards in the page {cards:.0f} ms, first picture {first:.0f} ms "
          f"after navigation start; driver.get to picture {wall * 1000:.0f} ms; {per_key * 1000:.0f} ms "
          "per verdict key")
    assert browser.execute_script("return document.querySelectorAll('.card').length") == 2000
    assert first < 10000  # the target is 2 s (benchmarks/RESULTS.md); CI only catches a collapse
