"""report.html in a real headless browser (Playwright driving the distribution's Chromium): it
loads without console errors and every thumbnail and the histogram decode (naturalWidth > 0).

Needs the `playwright` package and /usr/bin/chromium (CI installs both); skips, saying which is
missing, otherwise. The screenshot lands in the test's tmp folder for review
(docs/audit_report.png in the repository is one of them).
"""

import os
import shutil
from pathlib import Path

import pytest

from planted import register_thumbnail_backbone, write_planted

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -r requirements-dev.txt)")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install -y chromium)")
    return sync_playwright


def test_report_opens_without_console_errors_and_shows_its_images(tmp_path):
    sync_playwright = _browser_or_skip()
    from pipeline.audit.run import run_audit
    from pipeline.extract.run import run_extraction

    write_planted(tmp_path / "data", per_class=16, n_test=4, n_leaks=4, n_flips=3)
    clip_src = tmp_path / "data" / "train" / "red" / "red_000.png"
    # A GIF clip row: the report shows its first frame through the clip reader.
    from PIL import Image

    frames = [Image.open(clip_src).convert("RGB").rotate(a) for a in (0, 10, 20)]
    frames[0].save(tmp_path / "clip.gif", save_all=True, append_images=frames[1:], duration=100)
    register_thumbnail_backbone()
    store = run_extraction({"data": str(tmp_path / "data"), "backbone": "thumbnail_trunk",
                            "weights": "none", "layer": "grid", "pooling": "avg",
                            "input_size": 32, "resize": "squash", "batch_size": 32,
                            "dtype": "float32", "cache_dir": str(tmp_path / "cache")},
                           progress=False, echo=lambda *_: None).path
    (tmp_path / "data" / "train" / "blue" / "blue_001.png").unlink()  # a file gone since
    folder = run_audit(store, {"shown": 8}, echo=lambda *_: None)
    from pipeline.audit.report import _jpeg_data_uri, _placeholder, thumbnail

    placeholders = {_jpeg_data_uri(_placeholder(t)) for t in ("file not found", "unreadable")}
    assert thumbnail(str(tmp_path), "gone.png") in placeholders
    assert thumbnail(str(tmp_path), "clip.gif#clip0") not in placeholders  # its first frame
    page_file = folder / "report.html"
    assert "file://" not in page_file.read_text() and "http" not in page_file.read_text()

    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_file.as_uri())
        page.wait_for_load_state("load")
        widths = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? "
                                                  "e.naturalWidth : 0)")
        # The map: hovering a dot that carries a thumbnail shows it, decoded.
        first = page.evaluate("Object.keys(JSON.parse(document.getElementById('map-thumbs')"
                              ".textContent))[0]")
        page.hover(f"#map circle[data-i='{first}']")
        page.wait_for_selector("#map-pop img", state="visible")
        hovered = page.eval_on_selector("#map-pop img", "e => e.complete ? e.naturalWidth : 0")
        heading = page.inner_text("h1")
        cards = page.inner_text(".cards")
        caveats = page.eval_on_selector_all(".caveat", "els => els.map(e => e.innerText)")
        random_box = page.inner_text(".caveat.bad")
        sources = page.eval_on_selector_all(".source", "els => els.map(e => e.innerText)")
        body_width = page.evaluate("document.body.getBoundingClientRect().width")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=False)
        browser.close()
    assert not errors, errors
    assert heading == "Dataset audit" and "cross-split pairs" in cards
    # The caveats are on the page itself: random weights, the threshold and its rule.
    assert "RANDOM weights" in random_box
    assert any(c.startswith("Near-duplicate threshold") for c in caveats)
    assert any(c.startswith("Label issues:") for c in caveats)
    # Leaking pairs come grouped by source, and the page uses the window's width.
    assert sources and all("leaking pair(s)" in text for text in sources)
    assert body_width > 1400
    assert len(widths) >= 2 * len(sources) + 1 and all(w > 0 for w in widths), widths
    assert hovered > 0
    if os.environ.get("AUDIT_REPORT_SCREENSHOT"):  # keep a copy to look at in review
        shutil.copy(tmp_path / "report.png", os.environ["AUDIT_REPORT_SCREENSHOT"])
    assert (tmp_path / "report.png").stat().st_size > 10_000
