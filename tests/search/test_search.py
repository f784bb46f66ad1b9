"""grid-search on real synthetic stores: rankings with a known answer, no leakage, group-aware
folds, time budget, run folder and CLI; the Keras head wrapper against scikit-learn's checks."""

import csv
import json

import numpy as np
import pytest

import run_pipeline
from pipeline.search import models as search_models
from pipeline.errors import ConfigError
from pipeline.store.feature_store import open_store, write_store
from pipeline.search.run import run_grid_search
from pipeline.search.models import LINEAR_FAMILIES, load_grid, parse_grid
from conftest import FLOWERS, MOBILENET_WEIGHTS, needs_shared

SMALL_GRID = """
[models.logistic_regression]
preprocess = ["standardize"]
params = { C = [0.1, 10.0] }
[models.linear_svm]
preprocess = ["standardize"]
params = { C = [0.1] }
[models.rbf_svm]
preprocess = ["standardize"]
params = { C = [1.0, 10.0] }
[models.knn]
params = { n_neighbors = [5] }
[models.random_forest]
params = { n_estimators = 40 }
"""


def linear_store(path, n=300, d=50, seed=0, **kwargs):
    """Two classes split by a hyperplane with a margin: a linear model is exact, local ones
    (k-NN, trees, RBF) suffer from the 50 dimensions."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(3 * n, d))
    s = X @ rng.normal(size=d) / np.sqrt(d)
    keep = np.flatnonzero(np.abs(s) > 0.3)[:n]
    return write_store(path, X[keep].astype(np.float32), (s[keep] > 0).astype(int),
                       class_names=["below", "above"], **kwargs)


def rings_store(path, n=300, seed=0):
    """Two concentric rings (plus two noise dimensions): no hyperplane separates them."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    angle = rng.uniform(0, 2 * np.pi, n)
    radius = np.where(y == 0, 1.0, 2.5) + rng.normal(0, 0.15, n)
    X = np.column_stack([radius * np.cos(angle), radius * np.sin(angle),
                         rng.normal(0, 0.3, size=(n, 2))])
    return write_store(path, X.astype(np.float32), y, class_names=["inner", "outer"])


def grid_file(tmp_path, text=SMALL_GRID, name="grid.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def search(store, tmp_path, **opts):
    base = {"cv": 3, "n_jobs": 1, "progress": False, **opts}
    base.setdefault("grid", str(grid_file(tmp_path, name="small_grid.toml")))
    return run_grid_search(store, base, out_dir=tmp_path / "runs", echo=lambda *_: None)


def read_leaderboard(run_dir):
    with open(run_dir / "leaderboard.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_linear_classes_rank_a_linear_family_first(tmp_path):
    run_dir = search(linear_store(tmp_path / "linear.h5"), tmp_path, n_jobs=2)
    board = read_leaderboard(run_dir)
    assert board[0]["family"] in LINEAR_FAMILIES, board[:3]
    best_nonlinear = max(float(r["cv_mean"]) for r in board if r["family"] not in LINEAR_FAMILIES)
    assert float(board[0]["cv_mean"]) > best_nonlinear
    assert board[0]["test_score"] and float(board[0]["test_score"]) > 0.9


def test_concentric_rings_rank_a_nonlinear_family_first(tmp_path):
    run_dir = search(rings_store(tmp_path / "rings.h5"), tmp_path)
    board = read_leaderboard(run_dir)
    assert board[0]["family"] in ("rbf_svm", "knn", "random_forest"), board[:3]
    best_linear = max(float(r["cv_mean"]) for r in board if r["family"] in LINEAR_FAMILIES)
    assert float(board[0]["cv_mean"]) > best_linear + 0.2


class _Recorder:
    """Mixin: remembers the rows each fit saw (column 0 of the features holds the row id)."""

    seen: list = []

    def _record(self, X):
        _Recorder.seen.append((type(self).__name__, frozenset(np.asarray(X)[:, 0].astype(int))))

    def fit(self, X, y=None):
        if not getattr(self, "_in_fit_transform", False):
            self._record(X)
        return super().fit(X, y)

    def fit_transform(self, X, y=None):  # Pipeline calls this one; PCA's never calls fit()
        self._record(X)
        self._in_fit_transform = True
        try:
            return super().fit_transform(X, y)
        finally:
            self._in_fit_transform = False


def test_no_scaler_or_pca_ever_sees_a_validation_fold(tmp_path, monkeypatch):
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    class RecordingScaler(_Recorder, StandardScaler):
        pass

    class RecordingPCA(_Recorder, PCA):
        pass

    monkeypatch.setitem(search_models.PREPROCESSORS, "standardize",
                        lambda n, d, seed: RecordingScaler())
    monkeypatch.setitem(search_models.PREPROCESSORS, "pca",
                        lambda n, d, seed: RecordingPCA(n_components=3))
    monkeypatch.setattr(_Recorder, "seen", [])
    rng = np.random.default_rng(1)
    n = 120
    X = np.column_stack([np.arange(n), rng.normal(size=(n, 5))]).astype(np.float32)
    store = write_store(tmp_path / "ids.h5", X, np.arange(n) % 3, class_names=["a", "b", "c"])
    grid = grid_file(tmp_path, """
[models.scaled]
family = "logistic_regression"
preprocess = ["standardize"]
params = { C = [0.1, 1.0] }
[models.projected]
family = "knn"
preprocess = ["pca"]
params = { n_neighbors = [3] }
""")
    # The learning curve's extra fits (shares of fold 1's training rows) are left out here.
    run_dir = search(store, tmp_path, grid=str(grid), cv=4, top_k=3, learning_curve=False)
    folds = json.loads((run_dir / "folds.json").read_text())
    train_sets = [frozenset(f["train"]) for f in folds["folds"]]
    search_rows = frozenset(np.setdiff1d(np.arange(n), folds["test"]).tolist())
    fits = {"RecordingScaler": 0, "RecordingPCA": 0}
    for kind, rows in _Recorder.seen:
        fits[kind] += 1
        assert rows in train_sets or rows == search_rows, f"{kind} was fit on other rows"
        assert not rows & set(folds["test"]), f"{kind} saw test rows"
    # 2 scaler candidates x 4 folds + 1 PCA candidate x 4 folds, then the top-3 refits.
    assert fits == {"RecordingScaler": 2 * 4 + 2, "RecordingPCA": 4 + 1}


def test_group_folds_keep_each_group_on_one_side(tmp_path):
    n, n_groups = 240, 24
    groups = [f"video{i % n_groups}" for i in range(n)]
    store = linear_store(tmp_path / "groups.h5", n=n, group=groups)
    run_dir = search(store, tmp_path, cv=4, models="logistic_regression")
    with open_store(store) as s:
        group = s.column("group")
    folds = json.loads((run_dir / "folds.json").read_text())
    test_groups = set(group[folds["test"]])
    assert folds["test"] and "group-aware" in folds["test_how"]
    for fold in folds["folds"]:
        train, val = set(group[fold["train"]]), set(group[fold["val"]])
        assert not train & val
        assert not (train | val) & test_groups


def test_store_test_split_is_kept_out_of_the_search(tmp_path):
    n = 200
    split = ["test" if i % 5 == 0 else "train" for i in range(n)]
    store = linear_store(tmp_path / "split.h5", n=n, split=split)
    run_dir = search(store, tmp_path, models="logistic_regression,linear_svm")
    folds = json.loads((run_dir / "folds.json").read_text())
    assert folds["test"] == list(range(0, n, 5))
    for fold in folds["folds"]:
        assert not set(fold["train"] + fold["val"]) & set(folds["test"])
    board = read_leaderboard(run_dir)
    assert sum(1 for r in board if r["test_score"]) == 3  # top_k refits, scored once


def test_time_budget_stops_launching_and_lists_the_skipped(tmp_path):
    lines = []
    run_dir = run_grid_search(linear_store(tmp_path / "b.h5"),
                              {"grid": str(grid_file(tmp_path)), "cv": 3, "n_jobs": 1,
                               "progress": False, "time_budget": 1e-6},
                              out_dir=tmp_path / "runs", echo=lines.append)
    board = read_leaderboard(run_dir)
    done = [r for r in board if r["status"] == "done"]
    skipped = [r for r in board if r["status"] == "skipped (time budget)"]
    assert len(board) == 7 and len(done) == 1 and len(skipped) == 6
    assert any("not launched" in line and "random_forest" in line for line in lines)


def test_cli_run_folder_and_last_line(tmp_path, capsys):
    store = rings_store(tmp_path / "cli.h5", n=120)
    config = grid_file(tmp_path, '[grid_search]\ncv = 3\nn_jobs = 1\nprogress = false\n'
                       'models = "knn,logistic_regression"\n' + SMALL_GRID, "search.toml")
    code = run_pipeline.main(["grid-search", "--store", str(store), "--config", str(config),
                              "--out", str(tmp_path / "runs")])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    run_dir = tmp_path / "runs" / out[-1].rsplit("/", 1)[-1]
    assert out[-1] == str(run_dir) and run_dir.name.startswith("cli-search-")
    assert any(line.startswith("1 ") and "knn" in line for line in out)  # the printed table
    board = read_leaderboard(run_dir)
    assert {"model", "params", "cv_mean", "cv_std", "fit_seconds", "test_score"} <= set(board[0])
    assert {r["model"] for r in board} == {"knn", "logistic_regression"}
    with open(run_dir / "cv_results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and all(r["split2_test_accuracy"] for r in rows)
    run = json.loads((run_dir / "run.json").read_text())
    with open_store(store) as s:
        assert run["kind"] == "grid_search" and run["store_key"] == s.key
        assert run["provenance"] == s.provenance and run["class_names"] == ["inner", "outer"]
    assert run["store"] == str(store.resolve())
    assert (run_dir / "leaderboard.png").stat().st_size > 5000
    assert (run_dir / "best_model.skops").is_file() and (run_dir / "best_model.json").is_file()


@pytest.mark.parametrize("grid, message", [
    ('[models.svm]\nfamily = "svm_rbf"', "unknown family 'svm_rbf'"),
    ('[models.knn]\npreprocess = ["whiten"]', "preprocess"),
    ('[models.knn]\nparams = { k = [3] }', "no parameter 'k'"),
    ('[grid]\nx = 1', "no [models.<name>] tables"),
])
def test_bad_grid_is_one_line_error_and_writes_nothing(tmp_path, capsys, grid, message):
    store = rings_store(tmp_path / "bad.h5", n=60)
    code = run_pipeline.main(["grid-search", "--store", str(store), "--grid",
                              str(grid_file(tmp_path, grid)), "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "runs").exists()


def test_default_grid_parses_with_every_family():
    entries = load_grid()
    assert {e.family for e in entries} == set(search_models.FAMILIES)
    with pytest.raises(ConfigError, match="empty list"):
        parse_grid({"models": {"knn": {"params": {"n_neighbors": []}}}})


def test_keras_head_competes_in_the_search(tmp_path):
    grid = grid_file(tmp_path, """
[models.keras_head]
preprocess = ["standardize"]
params = { hidden_units = [[16]], epochs = 4, batch_size = 64, learning_rate = 0.01 }
[models.logistic_regression]
preprocess = ["standardize"]
""")
    run_dir = search(rings_store(tmp_path / "k.h5", n=150), tmp_path, grid=str(grid), cv=2)
    board = read_leaderboard(run_dir)
    keras_row = next(r for r in board if r["family"] == "keras_head")
    assert keras_row["status"] == "done" and float(keras_row["cv_mean"]) > 0


@needs_shared(FLOWERS, MOBILENET_WEIGHTS)
@pytest.mark.slow
def test_flowers5_default_search(tmp_path, flowers5_store):
    # The default grid; 3 folds and no learning curve keep it within a few minutes.
    run_dir = run_grid_search(flowers5_store, {"progress": False, "cv": 3,
                                               "learning_curve": False},
                              out_dir=tmp_path / "runs")
    board = read_leaderboard(run_dir)
    assert len({r["family"] for r in board if r["status"] == "done"}) >= 5
    assert float(board[0]["test_score"]) >= 0.70


# -- the Keras head as a scikit-learn estimator ------------------------------------------------
# Two full-batch epochs keep the ~45 checks fast; the two checks that demand a trained model's
# accuracy need more epochs and run in the slow test below: between them, every check holds.
_FEW_EPOCHS = {
    "check_classifiers_train": "2 epochs cannot reach the check's 0.83 accuracy; enforced with "
                               "40 epochs in test_keras_head_passes_every_estimator_check",
    "check_class_weight_classifiers": "2 epochs cannot follow the weights; enforced with 40 "
                                      "epochs in test_keras_head_passes_every_estimator_check",
}


def _keras_estimator(epochs):
    from pipeline.search.keras_estimator import KerasHeadClassifier

    return KerasHeadClassifier(hidden_units=(16,), dropout=0.0, epochs=epochs, batch_size=512,
                               learning_rate=0.05)


def _run_checks(estimator, expected_failed):
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(estimator, expected_failed_checks=expected_failed, on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results
              if r["status"] == "failed"]
    assert not failed, failed
    assert sum(r["status"] == "passed" for r in results) >= 40


def test_keras_head_follows_the_estimator_contract():
    _run_checks(_keras_estimator(epochs=2), _FEW_EPOCHS)


@pytest.mark.slow
def test_keras_head_passes_every_estimator_check():
    """The checks the fast test leaves out, on a head trained 40 epochs. With class_weight
    {0: 1000, others: 1e-4} the head must predict class 0 for most rows: it does only where
    early stopping watches the weighted loss that training minimises."""
    from sklearn.utils import estimator_checks

    for name in _FEW_EPOCHS:
        check = getattr(estimator_checks, name)
        check("KerasHeadClassifier", _keras_estimator(epochs=40))


def test_keras_head_clones_and_refuses_one_class():
    from sklearn.base import clone

    est = _keras_estimator(epochs=2).set_params(hidden_units=[8, 4])
    assert clone(est).get_params()["hidden_units"] == [8, 4]
    with pytest.raises(ValueError, match="at least 2 classes"):
        est.fit(np.zeros((10, 3)), np.zeros(10))


def test_keras_head_shares_fit_heads_defaults():
    from pipeline.fit.options import HeadConfig
    from pipeline.search.keras_estimator import KerasHeadClassifier

    params, config = KerasHeadClassifier().get_params(), HeadConfig()
    shared = set(params) & {f for f in vars(config) if f != "config_file"}
    assert {"hidden_units", "l2", "epochs", "patience", "min_delta", "batch_size",
            "learning_rate", "class_weight"} <= shared
    assert {k: params[k] for k in shared} == {k: getattr(config, k) for k in shared}
    assert params["validation_fraction"] == config.val_fraction


def test_keras_head_early_stops_on_whole_groups_it_does_not_train_on():
    n = 120  # 24 videos of 5 clips; the class belongs to the video
    groups = np.array([f"video{i // 5}" for i in range(n)], dtype=object)
    y = (np.arange(n) // 5) % 2
    X = np.random.default_rng(0).normal(size=(n, 6)).astype(np.float32) + y[:, None]
    est = _keras_estimator(epochs=3).set_params(patience=2).fit(X, y, groups=groups)
    stop = est.stop_rows_
    assert 0 < len(stop) < n
    train = np.setdiff1d(np.arange(n), stop)
    assert not set(groups[stop]) & set(groups[train])
    assert est.n_epochs_ <= 3 and set(y[stop]) == {0, 1}


def test_the_search_hands_groups_to_the_keras_head_inside_its_pipeline():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from pipeline.search.keras_estimator import fit_routing_groups

    n = 100
    groups = np.array([f"video{i // 5}" for i in range(n)], dtype=object)
    y = (np.arange(n) // 5) % 2
    X = np.random.default_rng(1).normal(size=(n, 4)) + y[:, None]
    pipe = make_pipeline(StandardScaler(), _keras_estimator(epochs=2).set_params(patience=1))
    fit_routing_groups(pipe, X, y, groups)
    stop = pipe.steps[-1][1].stop_rows_
    assert len(stop) and not set(groups[stop]) & set(groups[np.setdiff1d(np.arange(n), stop)])
    fit_routing_groups(make_pipeline(StandardScaler(), _keras_estimator(epochs=1)), X, y)
