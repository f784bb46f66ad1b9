"""Hostile names and files the fault table cannot hold: a dataset whose class folders and file
names are spreadsheet formulas, run whole through extract -> fit-head -> grid-search -> audit ->
predict; audit report thumbnails of files outside the data folder and of a FIFO.

The CSVs must never hand a formula to a spreadsheet: every cell that starts with `= + - @`, a
tab or a carriage return is neutralised with a leading `'` (numbers excepted), and our own
readers read the names back as they were.
"""

import csv
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import read_csv, register_tiny_trunk, write_images  # noqa: E402

HOSTILE_CLASSES = ('=HYPERLINK("evil.invalid","open")', "+cmd|' -C calc'!A0",
                   "@SUM(1+1)")
HOSTILE_FILES = ("-2+3+cmd|' -C calc'!A0.png", "\tTAB.png", "=1+1.png", "\rCR.png")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@pytest.fixture(scope="module")
def hostile_runs(tmp_path_factory):
    """Every stage run once on the hostile dataset, through the CLI."""
    from run_pipeline import main

    root = tmp_path_factory.mktemp("hostile")
    data = write_images(root / "data", classes=HOSTILE_CLASSES, per_class=12, size=(24, 24))
    for i, name in enumerate(HOSTILE_FILES):  # file names that are formulas too
        folder = data / HOSTILE_CLASSES[i % len(HOSTILE_CLASSES)]
        sorted(folder.iterdir())[0].rename(folder / name)
    weights = register_tiny_trunk(root / "tiny.weights.h5")
    quiet = ["--no-progress"]

    def run(argv):
        import contextlib
        import io

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        assert code == 0, (argv[0], err.getvalue(), out.getvalue())
        return Path(out.getvalue().strip().splitlines()[-1])

    store = run(["extract", "--data", str(data), "--backbone", "tiny_trunk", "--weights",
                 str(weights), "--input-size", "32", "--cache-dir", str(root / "cache"), *quiet])
    head = run(["fit-head", "--store", str(store), "--out", str(root / "runs"), "--epochs", "2",
                "--hidden-units", "8", "--cv", "2", "--test-fraction", "0", *quiet])
    grid = run(["grid-search", "--store", str(store), "--out", str(root / "runs"), "--models",
                "logistic_regression", "--cv", "2", "--n-jobs", "1", *quiet])
    audit = run(["audit", "--store", str(store), "--out", str(root / "audit"), "--threshold",
                 "2", "--folds", "2"])  # threshold 2: every pair a duplicate, so rows are listed
    predicted = run(["predict", "--run", str(head), "--data", str(data), *quiet])
    return {"root": root, "data": data, "store": store, "head": head, "grid": grid,
            "audit": audit, "predicted": predicted, "weights": weights}


def _csvs(runs) -> list:
    found = []
    for key in ("head", "grid", "audit"):
        found += sorted(Path(runs[key]).glob("*.csv"))
    return found + [runs["predicted"]]


def test_no_csv_cell_hands_a_formula_to_a_spreadsheet(hostile_runs):
    names = {p.name for p in _csvs(hostile_runs)}
    for expected in ("predictions_val.csv", "misclassified.csv", "confusion_matrix.csv",
                     "cv_folds.csv", "leaderboard.csv", "cv_results.csv", "folds.csv",
                     "duplicates.csv", "label_issues.csv", "outliers.csv"):
        assert expected in names, sorted(names)
    hostile_cells = 0
    for path in _csvs(hostile_runs):
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.reader(fh):
                for cell in row:
                    if cell.startswith(FORMULA_STARTS):
                        assert NUMBER.fullmatch(cell), f"{path.name}: formula cell {cell!r}"
                    if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS):
                        hostile_cells += 1
    assert hostile_cells > 50  # the names were there, neutralised


def test_our_readers_read_the_neutralised_names_back(hostile_runs):
    from pipeline.deploy.prediction import read_predictions
    from pipeline.store.feature_store import open_store

    with open_store(hostile_runs["store"]) as store:
        ids = set(store.column("ids").tolist())
    assert any(i.startswith(FORMULA_STARTS) for i in ids)
    rows = read_csv(hostile_runs["predicted"])
    assert {r["id"] for r in rows} == ids
    assert {r["predicted_class"] for r in rows} <= set(HOSTILE_CLASSES)
    assert {c for c in rows[0] if c.startswith("p_")} == {f"p_{c}" for c in HOSTILE_CLASSES}
    assert set(read_predictions(hostile_runs["predicted"])) == ids
    matrix = read_csv(hostile_runs["head"] / "confusion_matrix.csv")
    assert [r["true \\ predicted"] for r in matrix] == sorted(HOSTILE_CLASSES)
    dupes = read_csv(hostile_runs["audit"] / "duplicates.csv")
    assert dupes and {r["id_a"] for r in dupes} <= ids


def test_exclude_leaks_finds_the_neutralised_ids_of_the_audit(hostile_runs, tmp_path):
    """fit-head --exclude-leaks reads duplicates.csv back: the ids it drops are store ids."""
    from pipeline.evaluation.exclusions import audit_dir_for, drop_leaking_rows
    from pipeline.store.feature_store import open_store

    store_copy = tmp_path / hostile_runs["store"].name
    shutil.copy(hostile_runs["store"], store_copy)
    shutil.copytree(hostile_runs["audit"], audit_dir_for(store_copy))
    with open_store(store_copy) as store:
        n = len(store)
        (train, test), dropped = drop_leaking_rows(store, [np.arange(n // 2),
                                                           np.arange(n // 2, n)])
    assert dropped > 0 and len(test) == n - n // 2 - dropped
