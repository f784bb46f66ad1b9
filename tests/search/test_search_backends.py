"""grid-search on real local Ray and Dask clusters: the same candidates, folds and scores as
joblib's own process pool (the default), and the Keras head runs on the cluster too.

Each backend starts its own local cluster (as the CLI does), and each worker that fits the
Keras head imports TensorFlow (~10 s on 2 busy cores), so the head runs on Ray only."""

import csv

import pytest

from pipeline.errors import ConfigError
from pipeline.search.run import run_grid_search
from tests.search.test_search import SMALL_GRID, grid_file, linear_store

KERAS_GRID = SMALL_GRID + """
[models.keras_head]
preprocess = ["standardize"]
params = { hidden_units = [[8]], epochs = 10, batch_size = 32, learning_rate = 0.01 }
"""
# Its float sums depend on the worker's thread layout (TensorFlow/oneDNN), so one validation
# row near the boundary may flip: it is held to "trained as well", not to equal scores.
KERAS_TOLERANCE = 0.1


@pytest.fixture(scope="module")
def search_input(tmp_path_factory):
    root = tmp_path_factory.mktemp("backends")
    store = linear_store(root / "linear.h5", n=120, d=12)
    return root, store, {"small": grid_file(root), "keras": grid_file(root, KERAS_GRID, "k.toml")}


def _search(root, store, grid, backend):
    run_dir = run_grid_search(store, {"grid": str(grid), "cv": 3, "backend": backend,
                                      "n_jobs": 2, "progress": False, "top_k": 1},
                              out_dir=root / backend, echo=lambda *_: None)
    with (run_dir / "cv_results.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    folds = (run_dir / "folds.json").read_text()
    return {(r["model"], r["params"]): r for r in rows}, folds


@pytest.fixture(scope="module")
def loky_results(search_input):
    root, store, grids = search_input
    return _search(root, store, grids["keras"], "loky")


def _assert_same_leaderboard(got, expected):
    """The same folds and candidates; scores equal within 1e-6 (the Keras head: see above)."""
    (rows, folds), (want_rows, want_folds) = got, expected
    assert folds == want_folds
    models = {model for model, _ in rows}
    assert rows.keys() == {k for k in want_rows if k[0] in models}  # the same candidates
    for key, got_row in rows.items():
        want = want_rows[key]
        assert got_row["status"] == want["status"] == "done", key
        tolerance = KERAS_TOLERANCE if key[0] == "keras_head" else 1e-6
        for column in want:
            if column.startswith("split") or column in ("mean_test_score", "std_test_score"):
                assert float(got_row[column]) == pytest.approx(float(want[column]),
                                                               abs=tolerance), (key, column)


@pytest.mark.parametrize("backend, grid", [("ray", "keras"), ("dask", "small")])
def test_cluster_backend_gives_the_default_scores(search_input, loky_results, backend, grid):
    pytest.importorskip({"ray": "ray.util.joblib", "dask": "distributed"}[backend],
                        reason=f"{backend} is not installed: pip install -r "
                               "requirements-cluster.txt runs this test")
    root, store, grids = search_input
    got = _search(root, store, grids[grid], backend)
    _assert_same_leaderboard(got, loky_results)
    assert ("keras_head" in {model for model, _ in got[0]}) == (grid == "keras")
    if grid == "keras":  # the head learned on the cluster (chance is ~0.5; loky gets ~0.77)
        keras_rows = [row for (model, _), row in got[0].items() if model == "keras_head"]
        assert float(keras_rows[0]["mean_test_score"]) > 0.65


def test_unknown_backend_is_refused(search_input):
    root, store, grids = search_input
    with pytest.raises(ConfigError, match="backend.*loky, ray, dask"):
        run_grid_search(store, {"grid": str(grids["small"]), "backend": "spark"},
                        out_dir=root / "x")
