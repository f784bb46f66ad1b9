"""Warm starts along the C path of the logistic regression family.

A grid entry's C values are separate candidates (each its own row on the leaderboard), and
their folds run in whatever worker is free. Each worker remembers the solutions it found, per
(entry, other parameters, training rows); a fit of another C on the same rows starts L-BFGS
from the solution of the nearest C (on a log scale) instead of from zero. The problem is
convex, so the start changes the iterations, not the optimum.

Usage:
    key = warm_key(entry_name, params, train_rows)
    warm_start(pipeline, key)     # before fit
    remember(pipeline, key)       # after fit
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict

import numpy as np

MAX_KEYS = 64  # (entry, parameters, training rows) remembered per worker; the oldest go first
_SOLUTIONS: OrderedDict = OrderedDict()  # key -> {C: (coef, intercept)}


def warm_key(entry_name: str, params: dict, train_rows) -> tuple:
    """What a solution is reused across: the entry, its parameters other than C, the rows."""
    others = tuple(sorted((k, repr(v)) for k, v in params.items() if k != "clf__C"))
    rows = hashlib.sha1(np.ascontiguousarray(train_rows, dtype=np.int64).tobytes()).hexdigest()
    return entry_name, others, rows


def _logistic(pipeline):
    from sklearn.linear_model import LogisticRegression

    final = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    return final if isinstance(final, LogisticRegression) else None


def warm_start(pipeline, key: tuple) -> None:
    """Starts the pipeline's LogisticRegression from the nearest C solved on these rows."""
    model = _logistic(pipeline)
    known = _SOLUTIONS.get(key) if model is not None else None
    if not known:
        return
    nearest = min(known, key=lambda c: abs(math.log(c) - math.log(model.C)))
    model.set_params(warm_start=True)
    model.coef_, model.intercept_ = (a.copy() for a in known[nearest])


def remember(pipeline, key: tuple) -> None:
    """Keeps the fitted solution for the next C; the model is left as a plain fitted one."""
    model = _logistic(pipeline)
    if model is None or not hasattr(model, "coef_"):
        return
    _SOLUTIONS.setdefault(key, {})[float(model.C)] = (model.coef_.copy(),
                                                      model.intercept_.copy())
    _SOLUTIONS.move_to_end(key)
    while len(_SOLUTIONS) > MAX_KEYS:
        _SOLUTIONS.popitem(last=False)
    model.set_params(warm_start=False)
