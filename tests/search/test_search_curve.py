"""grid-search's learning curve scores with --scoring, the score that ranked the candidates."""

import numpy as np

from pipeline.search.run import run_grid_search
from pipeline.store.feature_store import write_store
from conftest import read_csv


def test_learning_curve_uses_the_scoring(tmp_path):
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=240) < 0.2).astype(int)  # imbalanced: accuracy and F1 differ
    X = (rng.normal(size=(240, 8)) + 0.8 * y[:, None]).astype(np.float32)
    store = write_store(tmp_path / "imb.h5", X, y, class_names=["common", "rare"])
    grid = tmp_path / "grid.toml"
    grid.write_text('[models.logistic_regression]\npreprocess = ["standardize"]\n',
                    encoding="utf-8")
    run_dir = run_grid_search(store, {"grid": str(grid), "cv": 3, "n_jobs": 1, "progress": False,
                                      "scoring": "f1_macro"},
                              out_dir=tmp_path / "runs", echo=lambda *_: None)
    curve = read_csv(run_dir / "learning_curve.csv")
    assert "val_f1_macro" in curve[0], curve[0]
    fold1 = float(read_csv(run_dir / "cv_results.csv")[0]["split0_test_f1_macro"])
    assert abs(float(curve[-1]["val_f1_macro"]) - fold1) < 1e-3  # 100% = fold 1's own fit
