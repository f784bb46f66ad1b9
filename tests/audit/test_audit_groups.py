"""The audit's label-issue folds follow the ungrouped-rows rule of fit-head and grid-search: a
row without a group is a group of its own, so a few grouped rows neither break the folds nor
pile every ungrouped row into one fold."""

import json

import numpy as np
from sklearn.linear_model import LogisticRegression

from pipeline.audit.labels import out_of_sample_probabilities
from pipeline.audit.run import run_audit
from pipeline.store.feature_store import open_store, write_store

SCORED = []  # rows each cross-validation fold scored, recorded by the probe below


class RecordingProbe(LogisticRegression):
    def predict_proba(self, X):
        SCORED.append(len(X))
        return super().predict_proba(X)


def grouped_data(n_grouped, n_ungrouped, group_size=10, seed=0):
    rng = np.random.default_rng(seed)
    n = n_grouped + n_ungrouped
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 4)) + y[:, None]
    groups = np.array([f"g{i // group_size}" for i in range(n_grouped)] + [""] * n_ungrouped,
                      dtype=object)
    return x.astype(np.float32), y, groups


def test_ungrouped_rows_spread_over_the_folds(tmp_path):
    x, y, column = grouped_data(100, 300)
    with open_store(write_store(tmp_path / "mixed.h5", x, y, class_names=["a", "b"],
                                group=list(column))) as store:
        groups = store.row_index.group  # the audit's groups: ungrouped rows stand alone
    SCORED.clear()
    out_of_sample_probabilities(x, y, np.arange(len(y)), groups, folds=5, seed=0,
                                model=RecordingProbe(max_iter=500))
    assert sum(SCORED) == len(y) and len(SCORED) == 5
    assert max(SCORED) - min(SCORED) <= 10, SCORED  # about 80 each, not [30, 20, 20, 20, 310]


def test_a_store_with_three_grouped_rows_is_audited(tmp_path):
    x, y, groups = grouped_data(3, 57, group_size=1)
    store = write_store(tmp_path / "few.h5", x, y, class_names=["a", "b"], group=list(groups))
    folder = run_audit(store, {"folds": 5}, out_dir=tmp_path / "audit", echo=lambda *_: None)
    summary = json.loads((folder / "summary.json").read_text())
    assert "5-fold cross-validated" in summary["label_issues_from"]
