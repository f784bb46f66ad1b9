"""One rule for rows with a blank split, shared by fit-head and grid-search: in a store that names
its train rows, a blank row belongs to no split, is used by neither, and both say how many they
left out; in a store that names no train rows, blank rows are the pool that train comes from."""

import json

import numpy as np

from pipeline.evaluation.splits import rows_in_splits
from pipeline.fit.run import fit_head
from pipeline.search.run import run_grid_search
from pipeline.store.feature_store import open_store, write_store
from conftest import read_csv


def split_store(path, split, seed=0):
    rng = np.random.default_rng(seed)
    n = len(split)
    y = np.arange(n) % 2
    X = (rng.normal(size=(n, 6)) + 2 * y[:, None]).astype(np.float32)
    return write_store(path, X, y, class_names=["a", "b"], split=list(split))


def test_the_rule(tmp_path):
    named = split_store(tmp_path / "named.h5", ["train"] * 8 + [""] * 3 + ["test"] * 4)
    with open_store(named) as store:
        rows, left_out = rows_in_splits(store)
    assert left_out == 3 and rows.tolist() == list(range(8)) + list(range(11, 15))
    pool = split_store(tmp_path / "pool.h5", [""] * 8 + ["test"] * 4)
    with open_store(pool) as store:
        rows, left_out = rows_in_splits(store)
    assert left_out == 0 and len(rows) == 12


def test_grid_search_leaves_blank_rows_out_and_says_so(tmp_path):
    split = ["test" if i % 5 == 0 else ("" if i % 7 == 3 else "train") for i in range(120)]
    blank = {i for i, s in enumerate(split) if s == ""}
    lines = []
    run_dir = run_grid_search(split_store(tmp_path / "g.h5", split),
                              {"models": "logistic_regression", "cv": 3, "n_jobs": 1,
                               "progress": False, "learning_curve": False},
                              out_dir=tmp_path / "runs", echo=lines.append)
    folds = json.loads((run_dir / "folds.json").read_text())
    used = set(folds["test"]).union(*(f["train"] + f["val"] for f in folds["folds"]))
    assert not used & blank and used == set(range(120)) - blank
    assert f"{len(blank)} row(s) with a blank split left out" in folds["test_how"]
    assert any(f"{len(blank)} row(s) with a blank split left out" in line for line in lines)


def test_fit_head_leaves_blank_rows_out_and_says_so(tmp_path):
    split = ["" if i % 6 == 1 else "train" for i in range(96)]
    store = split_store(tmp_path / "f.h5", split)
    with open_store(store) as s:
        ids = s.column("ids").tolist()
    blank_ids = {ids[i] for i, s in enumerate(split) if s == ""}
    run_dir = fit_head(store, {"epochs": 2, "hidden_units": (8,), "progress": False,
                               "learning_curve": False, "test_fraction": 0.25},
                       out_dir=tmp_path / "runs", echo=lambda *_: None)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert f"{len(blank_ids)} row(s) with a blank split left out" in metrics["split"]["how"]
    seen = {r["id"] for name in ("val", "test") for r in read_csv(run_dir / f"predictions_{name}.csv")}
    assert seen and not seen & blank_ids
    assert metrics["split"]["n_test"] + metrics["split"]["n_val"] + \
        metrics["split"]["n_train"] + metrics["split"]["n_calibration"] == 96 - len(blank_ids)
