"""grid-search's time budget holds: candidates run cheapest first, each fit's cost is predicted
(data size, then measured fits), and none is launched that would end past the budget."""

import time

import numpy as np

from pipeline.search.budget import CostModel, Schedule
from pipeline.search.models import GridEntry
from pipeline.search.run import Candidate, run_grid_search
from pipeline.store.feature_store import write_store
from conftest import read_csv

# The expensive entry is listed first, the cheapest family last.
COSTLY_FIRST = """
[models.big_forest]
family = "random_forest"
params = { n_estimators = [4000] }
[models.boosting]
family = "hist_gradient_boosting"
params = { max_iter = [30] }
[models.logistic_regression]
preprocess = ["standardize"]
params = { C = [0.1, 1.0] }
"""
BUDGET_S, ALLOWANCE_S = 10.0, 8.0  # the allowance: reading the store, plots, saving the model


def test_a_short_budget_holds_and_the_cheapest_family_runs(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    X = (rng.normal(size=(300, 32)) + y[:, None]).astype(np.float32)
    store = write_store(tmp_path / "b.h5", X, y, class_names=["a", "b", "c"])
    grid = tmp_path / "grid.toml"
    grid.write_text(COSTLY_FIRST, encoding="utf-8")
    lines = []
    started = time.monotonic()
    run_dir = run_grid_search(store, {"grid": str(grid), "cv": 3, "n_jobs": 1, "progress": False,
                                      "time_budget": BUDGET_S},
                              out_dir=tmp_path / "runs", echo=lines.append)
    took = time.monotonic() - started
    assert took <= BUDGET_S * 1.2 + ALLOWANCE_S, (took, lines)
    status = {(r["model"], r["params"]): r["status"] for r in read_csv(run_dir / "leaderboard.csv")}
    # The cheapest candidate (logistic regression at C = 1) always runs; C = 0.1 costs more.
    assert status[("logistic_regression", '{"clf__C": 1.0}')] == "done", status
    assert status[("big_forest", '{"clf__n_estimators": 4000}')] == "skipped (time budget)"
    assert any("not launched" in line and "big_forest" in line for line in lines)


def _cand(index, family, **params):
    return Candidate(index, GridEntry(f"{family}{index}", family), params)


def test_schedule_runs_cheapest_first_and_learns_from_measured_fits():
    costly, cheap, medium = (_cand(0, "random_forest", clf__n_estimators=1000),
                             _cand(1, "knn"), _cand(2, "logistic_regression"))
    costs = CostModel(n_train=1000, n_features=100)
    schedule = Schedule([costly, cheap, medium], costs, budget_s=0, n_workers=1, n_folds=2,
                        final_factor=1.0)
    order = []
    for cand in schedule:
        order.append(cand.entry.family)
        if cand is cheap:  # k-NN measured far slower than its prior: it is now the costly one
            costs.observe(cand, 1e4)
    assert order == ["knn", "logistic_regression", "random_forest"]
    assert costs.predict(cheap) == 1e4 and costs.predict(medium) > costs.prior(medium)
    # With a budget, a candidate predicted to end past it is not launched.
    late = Schedule([_cand(0, "knn"), _cand(1, "keras_head", clf__epochs=600)],
                    CostModel(1000, 100), budget_s=30, n_workers=2, n_folds=3, final_factor=2.0)
    assert [c.entry.family for c in late] == ["knn"]


def test_the_learning_curve_is_skipped_when_the_budget_is_spent(tmp_path):
    rng = np.random.default_rng(1)
    y = np.arange(90) % 2
    X = (rng.normal(size=(90, 4)) + y[:, None]).astype(np.float32)
    store = write_store(tmp_path / "c.h5", X, y, class_names=["a", "b"])
    lines = []
    run_dir = run_grid_search(store, {"models": "logistic_regression", "cv": 3, "n_jobs": 1,
                                      "progress": False, "time_budget": 1e-6},
                              out_dir=tmp_path / "runs", echo=lines.append)
    assert any(line.startswith("learning curve skipped") for line in lines)
    assert not (run_dir / "learning_curve.csv").exists()
    assert (run_dir / "best_model.json").is_file()


def test_the_default_logistic_regression_is_not_priced_out_of_a_demo_sized_budget():
    """On the demo's shape (862 training rows x 2,048 features a fold, 90 s, 2 workers) the
    default grid's logistic regression at C = 1 is among the candidates launched: its cost
    follows C, so each C is priced on its own, not at the family's slowest."""
    from pipeline.search.models import load_grid

    n_train, n_features = 862, 2048
    entries = load_grid()
    candidates = [Candidate(i, entry, params) for i, (entry, params) in enumerate(
        (entry, params) for entry in entries for params in entry.candidates(n_train, n_features))]
    pipes = {e.name: e.build(n_train, n_features, 0) for e in entries}
    costs = CostModel(n_train, n_features, pipes)
    schedule = Schedule(candidates, costs, budget_s=90, n_workers=2, n_folds=5,
                        final_factor=1.25)
    launched = [(c.entry.family, c.params.get("clf__C")) for c in schedule]
    assert ("logistic_regression", 1.0) in launched, launched
    lr = {c.params["clf__C"]: costs.predict(c) for c in candidates
          if c.entry.family == "logistic_regression"}
    assert lr[1.0] < lr[0.01], lr  # the measured demo: 0.2 s at C = 1, 14 s at C = 0.01
