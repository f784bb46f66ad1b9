"""Hostile names and files the fault table cannot hold: a dataset whose class folders and file
names are spreadsheet formulas, run whole through extract -> fit-head -> grid-search -> audit ->
predict; audit report thumbnails of files outside the data folder and of a FIFO.

The CSVs must never hand a formula to a spreadsheet, read with either list separator (`,`, or
`;` as de/fr Excel reads a CSV): every cell, and every part of a cell after a `;`, a tab or a
line break, that starts with `= + - @`, a tab or a carriage return is neutralised with a leading
`'` (numbers excepted), and our own readers read the names back as they were.
"""

import csv
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import read_csv, register_tiny_trunk, write_images  # noqa: E402

HOSTILE_CLASSES = ('=HYPERLINK("evil.invalid","open")', "+cmd|' -C calc'!A0",
                   "@SUM(1+1);=2+3")
# The last five are formulas only where a `;` (or a tab, a line break) starts a new cell.
HOSTILE_FILES = ("-2+3+cmd|' -C calc'!A0.png", "\tTAB.png", "=1+1.png", "\rCR.png",
                 "a;=1+1.png", 'b;"=2+2.png', "c;@SUM(1);-3+cmd.png", "d\t=4+4.png",
                 "e\n=5+5.png")
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
        plain = [p for p in sorted(folder.iterdir()) if p.name not in HOSTILE_FILES]
        plain[0].rename(folder / name)
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


def _cells(path: Path, separator: str):
    """Every cell of the CSV as a spreadsheet whose list separator is `separator` reads it:
    comma-separated as written; with `;`, a quote opens a quoted cell only at the start of a
    cell, and a line break in an unquoted cell ends its line (universal newlines)."""
    newline = "" if separator == "," else None
    with path.open(newline=newline, encoding="utf-8") as fh:
        for row in csv.reader(fh, delimiter=separator):
            yield from row


@pytest.mark.parametrize("separator", [",", ";"])
def test_no_csv_cell_hands_a_formula_to_a_spreadsheet(hostile_runs, separator):
    names = {p.name for p in _csvs(hostile_runs)}
    for expected in ("predictions_val.csv", "misclassified.csv", "confusion_matrix.csv",
                     "cv_folds.csv", "leaderboard.csv", "cv_results.csv", "folds.csv",
                     "duplicates.csv", "label_issues.csv", "outliers.csv",
                     "suggested_groups.csv", "learning_curve.csv", "history.csv"):
        assert expected in names, sorted(names)
    hostile_cells = 0
    for path in _csvs(hostile_runs):
        for cell in _cells(path, separator):
            if cell.startswith(FORMULA_STARTS):
                assert NUMBER.fullmatch(cell), f"{path.name}: formula cell {cell!r}"
            if cell.startswith("'") and cell[1:].lstrip("'\"").startswith(FORMULA_STARTS):
                hostile_cells += 1
    assert hostile_cells > 50  # the names were there, neutralised


def test_every_cell_holding_a_separator_or_a_formula_character_is_quoted(hostile_runs):
    """OWASP's rule: such a cell is written between double quotes, so a reader with either
    separator keeps it whole when it starts a line."""
    for path in _csvs(hostile_runs):
        raw = path.read_bytes().decode("utf-8")
        for cell in _cells(path, ","):
            if any(ch in cell for ch in ",;=+-@\t\r\n") and not NUMBER.fullmatch(cell):
                quoted = '"' + cell.replace('"', '""') + '"'
                assert quoted in raw, f"{path.name}: {cell!r} is not quoted"


def test_any_string_reads_back_whole_and_starts_no_formula(tmp_path):
    """Strings drawn from the characters that matter (quotes, separators, line breaks,
    formula starts) come back from read_rows as they were given, and neither reading of the
    file starts a formula."""
    from pipeline.tables import read_rows, write_rows

    rng = np.random.default_rng(0)
    alphabet = list("'\";,=+-@\t\r\n a1.")
    names = ["".join(rng.choice(alphabet, size=rng.integers(0, 9))) for _ in range(3000)]
    names += ["'=1", "''=1", "\"=1", "a;'=1", ";", "-1", "a;-1", "\t", "\r\n=1"]
    name_first, number_first = tmp_path / "name_first.csv", tmp_path / "number_first.csv"
    write_rows(name_first, ["name", "n"], [(name, -0.5) for name in names])
    write_rows(number_first, ["n", "name"], [(-0.5, name) for name in names])
    for path in (name_first, number_first):
        rows = read_rows(path)
        assert [row["name"] for row in rows] == names
        assert {row["n"] for row in rows} == {"-0.5"}
        for separator in (",", ";"):
            for cell in _cells(path, separator):
                if cell.startswith(FORMULA_STARTS):
                    assert NUMBER.fullmatch(cell), (path.name, separator, cell)


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


def _hostile_audit_store(tmp_path):
    """A store whose ids name an image outside its data root (absolute and `..`), a FIFO
    inside it and an ordinary image; every row a near-duplicate of the others so each one
    reaches the report."""
    from PIL import Image

    from pipeline.store.feature_store import write_store

    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    secret = tmp_path / "private" / "secret.png"
    secret.parent.mkdir()
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(secret)
    Image.fromarray(np.full((40, 40, 3), 30, np.uint8)).save(root / "a" / "ok.png")
    os.mkfifo(root / "a" / "pipe.png")
    ids = ["a/ok.png", str(secret), "../private/secret.png", "a/pipe.png"] * 3
    labels = np.arange(len(ids)) % 2
    rng = np.random.default_rng(0)
    features = (np.ones((len(ids), 8)) + rng.normal(0, 1e-3, (len(ids), 8))).astype(np.float32)
    store = write_store(tmp_path / "hostile.h5", features, labels, class_names=["x", "y"],
                        ids=[f"{i}#clip{k}" if k else i for k, i in
                             ((n // 4, i) for n, i in enumerate(ids))],
                        provenance={"data_root": str(root)})
    return store, secret


def test_audit_report_shows_only_regular_files_under_the_data_root(tmp_path):
    """The FIFO would hang the report at Image.open, the private image would be embedded in
    report.html: both get a placeholder, within a time limit."""
    import base64
    import subprocess

    store, secret = _hostile_audit_store(tmp_path)
    out = tmp_path / "audit"
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, str(repo / "run_pipeline.py"), "audit", "--store",
                           str(store), "--out", str(out), "--threshold", "2", "--folds", "2"],
                          capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    page = (out / "report.html").read_text(encoding="utf-8")
    from PIL import Image
    import io

    shown = [Image.open(io.BytesIO(base64.b64decode(uri))).convert("RGB")
             for uri in re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page)]
    means = {round(float(np.asarray(img).mean())) for img in shown}
    assert any(abs(m - 30) < 5 for m in means)  # the data root's own image is shown
    assert not any(abs(m - 200) < 3 for m in means), means  # the private one never is
    from pipeline.audit.report import source_path

    assert source_path(str(store.parent / "data"), str(secret)) is None
    assert source_path(str(store.parent / "data"), "a/pipe.png") is None
    assert source_path(str(store.parent / "data"), "a/ok.png") is not None
