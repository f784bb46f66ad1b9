"""How grid-search spends a time budget: cheap candidates first, and no candidate launched that
the budget cannot pay for.

Each fit's cost is predicted before it runs: from the data size (rows x features of a training
fold) and a per-family prior, and, once a family has finished fits, from those measured fits.
Measured fits of other families also say how fast this machine is against the priors, which
corrects the prior of a family not yet measured. A candidate launches only when the fits
already running, its own folds and the refit and learning curve it would need if it won are
predicted to end within the budget, with the top-k refits it could need after the search; the
next candidate is always the cheapest one left, so a budget that runs short skips the expensive
ones, never a cheap one. (The best model's learning curve, optional, is drawn only when its
predicted fits still end within the budget: `CURVE_FITS`.)

Usage:
    costs = CostModel(n_train=800, n_features=512, pipelines=pipes)
    schedule = Schedule(candidates, costs, budget_s=90, n_workers=2, n_folds=5,
                        final_factor=3.1)
    for cand in schedule:           # the cheapest admissible candidate, one at a time
        ...launch its folds...
        schedule.finished(cand, fold, seconds)
"""

from __future__ import annotations

import threading
import time

# Prior cost of one fit: (seconds of fixed overhead, seconds per million cells of the training
# fold, i.e. rows x features), measured with each family's default-grid parameters on one core
# (400 x 64 and 1,200 x 256 random vectors, 5 classes; the digits demo's 1,078 x 2,048, where
# logistic regression took 0.2 s at C = 1 and 14 s at C = 0.01: its prior is at C = 1 and
# COST_PARAMS scales it by 1 / C below that). Only the order and the rough size matter: a
# family's own measured fits replace its prior as soon as one finishes.
FAMILY_COST = {
    "knn": (0.005, 0.05),
    "linear_svm": (0.01, 0.4),
    "rbf_svm": (0.01, 0.6),
    "random_forest": (0.1, 3.0),  # 6.4, 4.9 and 1.6 s per million cells: sqrt(d) features
    "logistic_regression": (0.05, 0.5),  # at C = 1
    "hist_gradient_boosting": (2.0, 60.0),
    "keras_head": (5.0, 200.0),  # model building and Keras start-up, then the epochs
}
UNKNOWN_FAMILY_COST = (1.0, 60.0)
# A family with no measured fit yet is admitted as if it cost this many times its prediction:
# a prior can be off several-fold on a loaded machine, and its first candidate's folds cannot
# be stopped once launched.
UNMEASURED_MARGIN = 2.0

# A parameter that scales a family's cost, the value its prior was measured with, and how:
# "linear" (cost grows with the value) or "inverse" (grows as the value falls below the
# reference, never below the reference's cost: lbfgs needs more iterations under a strong L2
# penalty on these vectors).
COST_PARAMS = {
    "random_forest": ("clf__n_estimators", 100, "linear"),
    "hist_gradient_boosting": ("clf__max_iter", 200, "linear"),
    "keras_head": ("clf__epochs", 60, "linear"),
    "logistic_regression": ("clf__C", 1.0, "inverse"),
}


class CostModel:
    """Predicted seconds of one fit (fit and score) of a candidate on one training fold."""

    def __init__(self, n_train: int, n_features: int, pipelines: dict | None = None):
        self.cells = n_train * n_features / 1e6
        self.pipelines = pipelines or {}  # entry name -> unfitted pipeline (parameter defaults)
        self.measured: dict[str, list[float]] = {}  # family -> seconds per unit of its factor
        self.speed: dict[str, list[float]] = {}  # family -> measured / prior: this machine's pace
        self.lock = threading.Lock()

    def factor(self, cand) -> float:
        key, reference, how = COST_PARAMS.get(cand.entry.family, (None, 1, "linear"))
        if key is None:
            return 1.0
        value = cand.params.get(key)
        if value is None and cand.entry.name in self.pipelines:
            value = self.pipelines[cand.entry.name].get_params().get(key)
        try:
            ratio = float(value) / reference
        except (TypeError, ValueError, ZeroDivisionError):
            return 1.0
        if how == "inverse":
            return max(1.0 / max(ratio, 1e-6), 1.0)
        return max(ratio, 0.01)

    def prior(self, cand) -> float:
        overhead, per_cell = FAMILY_COST.get(cand.entry.family, UNKNOWN_FAMILY_COST)
        return (overhead + per_cell * self.cells) * self.factor(cand)

    def is_measured(self, cand) -> bool:
        with self.lock:
            return bool(self.measured.get(cand.entry.family))

    def predict(self, cand) -> float:
        with self.lock:
            own = self.measured.get(cand.entry.family)
            if own:
                return sum(own) / len(own) * self.factor(cand)
            # One vote per family and the lower median, so a family whose prior is far off (its
            # cost follows a parameter, as liblinear's follows C) does not slow every other.
            paces = sorted(sum(r) / len(r) for r in self.speed.values())
            pace = paces[(len(paces) - 1) // 2] if paces else 1.0
        return self.prior(cand) * max(pace, 1.0)  # never assume faster than the prior

    def observe(self, cand, seconds: float) -> None:
        with self.lock:
            self.measured.setdefault(cand.entry.family, []).append(seconds / self.factor(cand))
            self.speed.setdefault(cand.entry.family, []).append(
                seconds / max(self.prior(cand), 1e-6))


class Schedule:
    """Iterates candidates cheapest first, stopping short of the time budget.

    Args:
        candidates: every candidate (`run.Candidate`), in grid order.
        costs: the `CostModel` of this search.
        budget_s: seconds for the whole search (0 = no budget).
        n_workers: fits that run at once.
        n_folds: fits per candidate.
        final_factor: what a candidate among the top k costs after the search, in fits of
            that candidate: the refits on all search rows, `n_workers` at a time.
    """

    def __init__(self, candidates: list, costs: CostModel, budget_s: float, n_workers: int,
                 n_folds: int, final_factor: float, started: float | None = None):
        self.left = list(candidates)
        self.costs = costs
        self.budget_s = float(budget_s or 0)
        self.n_workers = max(1, n_workers)
        self.n_folds = n_folds
        self.final_factor = final_factor
        self.started = time.monotonic() if started is None else started
        self.pending: dict[tuple, float] = {}  # (candidate index, fold) -> predicted seconds
        self.final_s = 0.0  # the most a launched candidate would need if it won
        self.lock = threading.Lock()

    def __iter__(self):
        first = True
        while self.left:
            self.left.sort(key=lambda c: (self.costs.predict(c), c.index))
            cand = next((c for c in self.left if first or self.admits(c)), None)
            if cand is None:
                return  # every candidate left would overrun the budget: they stay pending
            first = False  # the first always runs: a leaderboard needs at least one entry
            self.left.remove(cand)
            per_fit = self.costs.predict(cand)
            with self.lock:
                for fold in range(self.n_folds):
                    self.pending[(cand.index, fold)] = per_fit
                self.final_s = max(self.final_s, per_fit * self.final_factor)
            yield cand

    def admits(self, cand) -> bool:
        """Whether the fits running, this candidate's folds and the refits after the search
        are predicted to end within the budget."""
        if not self.budget_s:
            return True
        predicted = self.costs.predict(cand)
        per_fit = predicted * (1.0 if self.costs.is_measured(cand) else UNMEASURED_MARGIN)
        with self.lock:
            queued = sum(self.pending.values()) + per_fit * self.n_folds
            final = max(self.final_s, predicted * self.final_factor)
        elapsed = time.monotonic() - self.started
        search_end = elapsed + max(queued / self.n_workers, per_fit)
        return search_end + final <= self.budget_s

    def time_left(self) -> float:
        """Seconds of the budget left now (infinite without a budget)."""
        if not self.budget_s:
            return float("inf")
        return self.budget_s - (time.monotonic() - self.started)

    def finished(self, cand, fold: int, seconds: float | None) -> None:
        """A fit came back (seconds None: it failed)."""
        with self.lock:
            self.pending.pop((cand.index, fold), None)
        if seconds is not None:
            self.costs.observe(cand, seconds)


# The learning curve refits the best candidate on 10, 25, 50 and 100% of a fold's training rows.
CURVE_FITS = 0.10 + 0.25 + 0.50 + 1.00
