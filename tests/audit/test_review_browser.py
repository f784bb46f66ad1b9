"""The review loop as a user runs it: audit a store with planted flipped labels and planted
copies, review report.html from file:// in headless Chromium (filters, the mouse, the keys, a
reload), save decisions.csv, and train with `fit-head --decisions`: the run's files show exactly
the decisions taken. A hostile line added to the saved file ends in one error line.

Needs the `playwright` package and /usr/bin/chromium; skips, saying which is missing, otherwise.
With REVIEW_SCREENSHOT set, a screenshot of the review view is copied there (docs/audit_review.png
is one of them).
"""

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

from conftest import read_csv
from planted import register_thumbnail_backbone, write_planted
from test_report_browser import ARGS, CHROMIUM, _browser_or_skip


def _main(args):
    import run_pipeline

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_pipeline.main(args)
    return code, out.getvalue().strip().splitlines(), err.getvalue()


def _findings(page):
    return page.eval_on_selector_all("tr.finding", "els => els.map(e => JSON.parse(e.dataset.f))")


def _visible_kinds(page):
    return page.eval_on_selector_all(
        "tr.finding", "els => els.filter(e => e.style.display !== 'none')"
                      ".map(e => JSON.parse(e.dataset.f).k)")


def _current(page):
    return page.evaluate("JSON.parse(document.querySelector('tr.finding.cur').dataset.f)")


def test_review_in_the_browser_then_fit_head_applies_exactly_those_decisions(tmp_path):
    sync_playwright = _browser_or_skip()
    from pipeline.audit.run import run_audit
    from pipeline.extract.run import run_extraction

    planted = write_planted(tmp_path / "data", per_class=40, n_test=8, n_leaks=6, n_flips=8)
    register_thumbnail_backbone()
    store = run_extraction({"data": str(tmp_path / "data"), "backbone": "thumbnail_trunk",
                            "weights": "none", "layer": "grid", "pooling": "avg",
                            "input_size": 32, "resize": "squash", "batch_size": 32,
                            "dtype": "float32", "cache_dir": str(tmp_path / "cache")},
                           progress=False, echo=lambda *_: None).path
    folder = run_audit(store, {"shown": 20}, echo=lambda *_: None)
    identity = json.loads((folder / "summary.json").read_text())["audit_identity"]
    page_file = folder / "report.html"
    text = page_file.read_text()
    assert "http" not in text and "file://" not in text  # nothing to fetch: works offline

    flips = set(planted["flips"])
    leaks = {tuple(pair) for pair in planted["leaks"]}
    errors, downloaded = [], tmp_path / "decisions.csv"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        context = browser.new_context(accept_downloads=True, viewport={"width": 1400,
                                                                        "height": 900})
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_file.as_uri())
        findings = _findings(page)
        total = len(findings)
        assert page.inner_text("#review-progress") == f"0 of {total} reviewed"
        flipped = [f["ids"][0] for f in findings if f["k"] == "label" and f["ids"][0] in flips]
        planted_pairs = [f["ids"] for f in findings if f["k"] == "pair" and tuple(f["ids"]) in leaks]
        assert len(flipped) >= 3 and len(planted_pairs) >= 3, (findings, flips, leaks)

        # Filters: by kind, then by split, then by class.
        page.select_option("#review-kind", "label")
        assert set(_visible_kinds(page)) == {"label"}
        page.select_option("#review-kind", "")
        page.select_option("#review-split", "test")
        assert set(_visible_kinds(page)) == {"pair"}  # only the copies sit in test
        page.select_option("#review-split", "")
        page.select_option("#review-class", "blue")
        shown = page.eval_on_selector_all(
            "tr.finding", "els => els.filter(e => e.style.display !== 'none')"
                          ".map(e => JSON.parse(e.dataset.f))")
        assert shown and all("blue" in f["c"] or f.get("sug") == "blue" for f in shown)
        assert len(shown) < total
        page.select_option("#review-class", "")

        # The mouse: relabel two flips, drop the test side of two planted pairs (the pairs
        # under each source are open for the review).

        def row(ids):
            return page.locator("tr.finding").filter(has=page.locator(
                "td", has_text=ids[0])).filter(has=page.locator("td", has_text=ids[-1])).first

        for row_id in flipped[:2]:
            row([row_id]).get_by_role("button", name="relabel to suggested (r)").click()
        for ids in planted_pairs[:2]:
            row(ids).get_by_role("button", name="drop b (d)").click()
        # The keys: move to the third flip with n, relabel it with r; to a pair with p, group it.
        page.select_option("#review-kind", "label")
        page.keyboard.press("n")
        while _current(page)["ids"][0] != flipped[2]:
            page.keyboard.press("n")
        page.keyboard.press("r")
        page.select_option("#review-kind", "pair")
        for _ in range(total):
            page.keyboard.press("p")
            if _current(page)["ids"] == planted_pairs[2]:
                break
        page.keyboard.press("g")
        assert page.inner_text("#review-progress") == f"6 of {total} reviewed"

        page.reload()  # the decisions are kept in the browser under the audit's identity
        assert page.inner_text("#review-progress") == f"6 of {total} reviewed"
        assert page.locator("button.on").count() == 6
        page.select_option("#review-kind", "label")
        assert page.eval_on_selector_all(".source", "els => els.filter(e => e.style.display "
                                                    "!== 'none').length") == 0  # no pair shown
        page.keyboard.press("n")  # the first label issue, scrolled into view
        page.screenshot(path=str(tmp_path / "review.png"))
        with page.expect_download() as info:
            page.click("#review-save")
        info.value.save_as(downloaded)
        browser.close()
    assert not errors, errors
    if os.environ.get("REVIEW_SCREENSHOT"):
        shutil.copy(tmp_path / "review.png", os.environ["REVIEW_SCREENSHOT"])

    lines = downloaded.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith(f"# audit {identity} ") and lines[1] == "id,action,value"
    saved = {tuple(r.values()) for r in read_csv_lines(lines[1:])}
    expected = ({(i, "relabel", _suggested(findings, i)) for i in flipped[:3]}
                | {(ids[1], "drop", "") for ids in planted_pairs[:2]}
                | {(i, "group", planted_pairs[2][0]) for i in planted_pairs[2]})
    assert saved == expected

    code, out, err = _main(["fit-head", "--store", str(store), "--decisions", str(downloaded),
                            "--cv", "2", "--epochs", "3", "--hidden-units", "",
                            "--no-learning-curve",
                            "--out", str(tmp_path / "runs")])
    assert code == 0, err
    run = Path(out[-1])
    scored = {}
    for name in ("predictions_val.csv", "predictions_test.csv", "cv_folds.csv"):
        if (run / name).exists():
            for r in read_csv(run / name):
                scored.setdefault(r["id"], r)
    dropped = {ids[1] for ids in planted_pairs[:2]}
    assert not dropped & set(scored)  # dropped rows take no part
    for i in flipped[:3]:
        assert scored[i]["true_class"] == _suggested(findings, i)  # the new class
    a, b = planted_pairs[2]
    assert scored[a]["group"] == scored[b]["group"]  # one source, one group
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["decisions"]["applied"] == {"drop": 2, "relabel": 3, "group": 2, "keep": 0}

    hostile = tmp_path / "hostile.csv"
    hostile.write_text("\n".join(lines + ["=cmd|' /C calc'!A0,drop,"]) + "\n", encoding="utf-8")
    code, _, err = _main(["fit-head", "--store", str(store), "--decisions", str(hostile)])
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert f"line {len(lines) + 1}" in err


def _suggested(findings, row_id):
    return next(f["sug"] for f in findings if f["k"] == "label" and f["ids"][0] == row_id)


def read_csv_lines(lines):
    from pipeline.tables import parse_rows

    return parse_rows(io.StringIO("\n".join(lines) + "\n"))


HOSTILE_IDS = ["=1+1.png", "+cmd|calc.png", "a;=2+2.png", "-1", "@SUM(A1).png", "quote\",x.png"]


def test_ids_a_spreadsheet_would_run_are_saved_neutralised_and_read_back_whole(tmp_path):
    """Pairs whose ids start formulas (or hide one after a `;`): the page writes them the way
    pipeline/tables.py does, and --decisions reads back exactly the store's ids."""
    sync_playwright = _browser_or_skip()
    import numpy as np

    from pipeline.audit.run import run_audit
    from pipeline.evaluation.decisions import apply_decisions
    from pipeline.store.feature_store import open_store, write_store
    from pipeline.tables import safe_cell

    rng = np.random.default_rng(0)
    n = 60
    x = rng.normal(size=(n, 16)).astype(np.float32)
    ids = [f"img/{i:03d}.png" for i in range(n)]
    split = ["train"] * 48 + ["test"] * 12
    for k, hostile in enumerate(HOSTILE_IDS):  # each a copy, in test, of a train row
        row = 48 + k
        x[row], ids[row] = x[k], hostile
    store = write_store(tmp_path / "s.h5", x, np.arange(n) % 3, class_names=["a", "b", "c"],
                        ids=ids, split=split)
    folder = run_audit(store, {"shown": 20, "map": "none"}, echo=lambda *_: None)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_context(accept_downloads=True).new_page()
        page.goto((folder / "report.html").as_uri())
        pairs = [f for f in _findings(page) if f["k"] == "pair"]
        assert {f["ids"][1] for f in pairs} >= set(HOSTILE_IDS), pairs
        page.select_option("#review-kind", "pair")
        page.keyboard.press("n")
        for _ in pairs:  # each key decides and moves on to the next pair
            page.keyboard.press("k" if _current(page)["ids"][1] != "-1" else "d")
        with page.expect_download() as info:
            page.click("#review-save")
        info.value.save_as(tmp_path / "decisions.csv")
        browser.close()
    text = (tmp_path / "decisions.csv").read_text(encoding="utf-8")
    for hostile in HOSTILE_IDS:  # as the tool's own CSV writer neutralises a first cell
        assert safe_cell(hostile, first=True) in text.replace('""', '"'), (hostile, text)
    with open_store(store) as opened:
        decisions = apply_decisions(opened, str(tmp_path / "decisions.csv"), lambda *_: None)
        assert opened.column("ids")[decisions.dropped].tolist() == ["-1"]
        assert decisions.applied["keep"] == 2 * (len(pairs) - 1)
