"""The leaderboard's order is stable: equal mean CV scores rank by the grid's own order (the
entry listed first, then its first parameter combination), never by how long a fit took."""

import json

import numpy as np

from pipeline.search.models import GridEntry
from pipeline.search.report import format_table, rank
from pipeline.search.run import Candidate, run_grid_search
from pipeline.store.feature_store import write_store


def done(index, name, scores, fit_seconds):
    cand = Candidate(index, GridEntry(name, "logistic_regression"), {"clf__C": 1.0})
    cand.scores, cand.fit_times, cand.status = list(scores), [fit_seconds] * len(scores), "done"
    return cand


def test_ties_rank_by_grid_order_not_fit_time():
    slow_first = done(0, "listed_first", [0.9, 1.0, 0.8], fit_seconds=5.0)
    fast_second = done(1, "listed_second", [0.8, 0.9, 1.0], fit_seconds=0.1)  # same mean
    better = done(2, "better", [1.0, 1.0, 1.0], fit_seconds=9.0)
    ranked = rank([fast_second, better, slow_first])
    assert [c.entry.name for c in ranked] == ["better", "listed_first", "listed_second"]
    assert "listed first in the grid" in format_table(ranked, "accuracy")


def test_identical_entries_save_the_one_listed_first(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    X = (rng.normal(size=(90, 5)) + y[:, None]).astype(np.float32)
    store = write_store(tmp_path / "t.h5", X, y, class_names=["a", "b", "c"])
    grid = tmp_path / "grid.toml"
    grid.write_text("".join(f'[models.{name}]\nfamily = "logistic_regression"\n'
                            for name in ("twin_b", "twin_a")), encoding="utf-8")
    run_dir = run_grid_search(store, {"grid": str(grid), "cv": 3, "n_jobs": 1, "progress": False,
                                      "learning_curve": False},
                              out_dir=tmp_path / "runs", echo=lambda *_: None)
    assert json.loads((run_dir / "best_model.json").read_text())["model"] == "twin_b"
