"""grid-search's logistic regression sweeps fit-head's range of C, and a fit warm-started from
the nearest C solved on the same rows reaches the same optimum in fewer iterations."""

import numpy as np


def _data(n=240, dim=20, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    return rng.normal(size=(3, dim))[y] + rng.normal(size=(n, dim)) * 2.0, y


def test_the_default_grid_sweeps_fit_heads_c_range():
    from pipeline.fit.linear import C_GRID
    from pipeline.search.models import load_grid

    entry = next(e for e in load_grid() if e.family == "logistic_regression")
    cs = sorted(entry.params["clf__C"])
    assert len(cs) >= 17 and cs[0] <= 1e-4 and cs[-1] >= 1e4
    np.testing.assert_allclose(cs, C_GRID, rtol=2e-3)  # the same path as fit-head's


def test_a_warm_start_reaches_the_cold_optimum_in_fewer_iterations():
    from sklearn.base import clone

    from pipeline.search.models import load_grid
    from pipeline.search.warm_start import remember, warm_key, warm_start

    x, y = _data()
    entry = next(e for e in load_grid() if e.family == "logistic_regression")
    template = entry.build(len(x), x.shape[1])
    rows = np.arange(len(x))
    key = warm_key(entry.name, {"clf__C": 1.0}, rows)
    assert key == warm_key(entry.name, {"clf__C": 3.16}, rows)  # C is what varies along it
    assert key != warm_key(entry.name, {"clf__C": 1.0}, rows[1:])  # other rows: no reuse

    first = clone(template).set_params(clf__C=1.0)
    warm_start(first, key)  # nothing known yet: a cold fit
    first.fit(x, y)
    remember(first, key)
    assert first.steps[-1][1].warm_start is False  # left as a plain fitted model

    cold = clone(template).set_params(clf__C=3.16).fit(x, y)
    warm = clone(template).set_params(clf__C=3.16)
    warm_start(warm, key)
    warm.fit(x, y)
    cold_lr, warm_lr = cold.steps[-1][1], warm.steps[-1][1]
    assert warm_lr.n_iter_.max() < cold_lr.n_iter_.max()
    # the same optimum, to the solvers' tolerance (scikit-learn's tol=1e-4 on the gradient)
    np.testing.assert_allclose(warm.predict_proba(x), cold.predict_proba(x), atol=1e-2)
