"""The comparison stage: classifier families cross-validated on one store (`grid-search`).

    from pipeline.search import run_grid_search
    run_dir = run_grid_search("cache/<store>.h5", {"cv": 5})

`models.py` holds the families and TOML grids (add a family there), `keras_estimator.py` the
Keras head in scikit-learn's estimator contract, `run.py` the cross-validation runner, `budget.py`
the order and cost predictions that keep a time budget, `report.py` the leaderboard, `io.py` safe
saving and loading of the best model (`keras_form.py`: its Keras form); `options.py` holds the
options and their typed `SearchConfig`.
"""

from __future__ import annotations

from pipeline.search.options import GRID_SEARCH_OPTIONS


def __getattr__(name):
    # Lazy, so reading the option table loads none of h5py, scikit-learn or Keras.
    if name == "run_grid_search":
        from pipeline.search.run import run_grid_search

        return run_grid_search
    if name == "load_best_model":
        from pipeline.search.io import load_best_model

        return load_best_model
    raise AttributeError(f"module 'pipeline.search' has no attribute {name!r}")


__all__ = ["GRID_SEARCH_OPTIONS", "run_grid_search", "load_best_model"]
