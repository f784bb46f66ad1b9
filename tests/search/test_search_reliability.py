"""grid-search says what makes its scores hard to trust: ungrouped rows, test groups that also
sit in the search rows, tiny folds, identical fold scores, copied vectors; its fold CSV names the
groups, and its leaderboard never cuts a parameter name. Real stores, real scikit-learn fits."""


import numpy as np

from pipeline.search.run import run_grid_search
from pipeline.store.feature_store import write_store
from conftest import read_csv

GRID = """
[models.logistic_regression]
preprocess = ["standardize"]
params = { C = [0.1, 1.0] }
"""


def _store(path, n=120, dim=6, groups=None, split=None, x=None, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    if x is None:
        x = rng.normal(size=(n, dim)).astype(np.float32)
        x[:, 0] += 1.5 * labels
    return write_store(path, x, labels, class_names=["a", "b"], ids=[f"r{i:03d}" for i in range(n)],
                       group=groups, split=split)


def _search(store, tmp_path, grid=GRID, **opts):
    grid_path = tmp_path / "grid.toml"
    grid_path.write_text(grid, encoding="utf-8")
    lines = []
    run = run_grid_search(store, {"cv": 3, "n_jobs": 1, "progress": False, "grid": str(grid_path),
                                  **opts}, out_dir=tmp_path / "runs", echo=lines.append)
    return run, lines


def test_ungrouped_rows_are_their_own_groups_and_folds_csv_names_groups(tmp_path):
    groups = [""] * 100 + [f"video{i // 5}" for i in range(20)]
    run, lines = _search(_store(tmp_path / "mixed.h5", groups=groups), tmp_path)
    folds = read_csv(run / "folds.csv")
    assert len(folds) == 120 and folds[110]["group"] == "video2"
    test = [r for r in folds if r["fold1"] == "test"]
    assert 20 <= len(test) <= 28  # a 20% test split, not 100 ungrouped rows in one piece
    assert any("100 of 120 rows have no group" in line for line in lines)
    for k in (1, 2, 3):
        val = {r["group"] for r in folds if r[f"fold{k}"] == "val"} - {""}
        train = {r["group"] for r in folds if r[f"fold{k}"] == "train"} - {""}
        assert not val & train


def test_store_test_split_sharing_groups_is_warned_with_the_fix(tmp_path):
    groups = [f"g{i // 6}" for i in range(120)]
    split = ["test" if i % 5 == 0 else "train" for i in range(120)]
    _, lines = _search(_store(tmp_path / "leak.h5", groups=groups, split=split), tmp_path)
    warning = [line for line in lines if line.startswith("warning: 20 group(s)")]
    assert warning and "test split" in warning[0] and "`split` column" in warning[0]


def test_tiny_folds_identical_scores_and_copies_are_said_out_loud(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(24, 4)).astype(np.float32)
    x[12:] = x[:12]  # each vector twice
    x[:, 0] += 10 * (np.arange(24) % 2)  # trivially separable: every fold scores 1.0
    _, lines = _search(_store(tmp_path / "tiny.h5", n=24, x=x), tmp_path)
    text = "\n".join(lines)
    assert "the smallest validation fold has only" in text and "test split has only" in text
    assert "folds scored exactly 1.0000" in text
    assert "have vectors identical" in text


def test_leaderboard_never_cuts_parameter_names(tmp_path):
    from pipeline.search import report

    grid = """
[models.keras_head]
preprocess = ["pca"]
[models.keras_head.params]
pca__n_components = [3]
hidden_units = [[4]]
epochs = 2
batch_size = 16
learning_rate = 0.01
"""
    run, lines = _search(_store(tmp_path / "s.h5", n=60), tmp_path, grid=grid, cv=2)
    table = "\n".join(lines)
    for name in ("hidden_units=", "pca__n_components=", "learning_rate=", "batch_size="):
        assert name in table, name  # whole names, wrapped onto continuation lines if need be
    labels = report.leaderboard_labels(_ranked(run)[:1])
    assert "pca__n_components=3" in labels[0] and "hidden_units=[4]" in labels[0]


def _ranked(run):
    """Candidates rebuilt from leaderboard.csv (what the plot labels are made of)."""
    import json
    from types import SimpleNamespace

    rows = [r for r in read_csv(run / "leaderboard.csv") if r["status"] == "done"]
    return [SimpleNamespace(entry=SimpleNamespace(name=r["model"]), cv_mean=float(r["cv_mean"]),
                            params=json.loads(r["params"])) for r in rows]
