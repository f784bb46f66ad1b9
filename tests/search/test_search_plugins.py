"""A classifier family from the user's own module: `grid-search --plugin MODULE` imports it
before the grid is read, so `family = "<its name>"` is a grid entry like the built-in ones."""

import sys

import numpy as np

from conftest import read_csv

PLUGIN = '''
from sklearn.neighbors import NearestCentroid
from sklearn.calibration import CalibratedClassifierCV

from pipeline.search.models import register_family


def nearest_centroid(n_samples, n_features, seed):
    return CalibratedClassifierCV(NearestCentroid(), cv=2)


register_family("nearest_centroid", nearest_centroid, overwrite=True)
'''


def test_a_plugin_family_runs_in_the_grid(tmp_path, monkeypatch):
    from pipeline.search.run import run_grid_search
    from pipeline.store.feature_store import write_store

    (tmp_path / "my_families.py").write_text(PLUGIN, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_families", raising=False)
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    store = write_store(tmp_path / "s.h5", (rng.normal(size=(90, 8)) + y[:, None]).astype(
        np.float32), y, class_names=["a", "b", "c"])
    grid = tmp_path / "grid.toml"
    grid.write_text('[models.centroids]\nfamily = "nearest_centroid"\n', encoding="utf-8")
    run_dir = run_grid_search(store, {"grid": str(grid), "plugin": "my_families", "cv": 3,
                                      "n_jobs": 1, "progress": False,
                                      "learning_curve": False},
                              out_dir=tmp_path / "runs", echo=lambda *_: None)
    rows = read_csv(run_dir / "leaderboard.csv")
    assert [r["model"] for r in rows] == ["centroids"] and rows[0]["status"] == "done"
