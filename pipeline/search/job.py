"""What a grid search fits on, read once from the store: its search and test rows, its folds,
each row's label and group, and the vectors of every row a fit may train on (views included).

Rows, groups and views all come from the store's `row_index`, so the search splits exactly as
fit-head does, each fit adds the views of its own training rows only, and the Keras head gets
every row's group (its early stopping then holds out whole files, never a view of a training
file).

Usage:
    job, features = read_job(store, cfg, store_path, entries, echo)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import DataError
from pipeline.evaluation.decisions import apply_decisions
from pipeline.evaluation.exclusions import adopt_audit_groups, audited_search_rows
from pipeline.evaluation.splits import blank_split_note, cv_folds, holdout, rows_in_splits
from pipeline.search.checks import search_data_warnings
from pipeline.search.options import SearchConfig
from pipeline.store.row_index import RowIndex


@dataclass
class SearchJob:
    """What the search proper works on, read from the store once."""

    cfg: SearchConfig
    store_path: Path
    meta: dict  # run.json: the store, its key, provenance and class names
    entries: list  # the grid's entries (search_models.GridEntry)
    index: RowIndex  # plain row, file, group and views of every store row
    labels: np.ndarray  # the label of every row in the features file, views included
    groups: np.ndarray  # the group of each of those rows, as integer codes
    search_rows: np.ndarray
    test_rows: np.ndarray
    test_how: str
    folds: list  # (training rows, validation rows) per fold: plain search rows
    table: dict  # the store's columns for folds.csv
    features: Path | None = None  # the rows' vectors (.npy), once written

    def training(self, rows) -> np.ndarray:
        """Rows that train where `rows` train: theirs and their views'."""
        return self.index.with_views(rows, self.cfg.train_views)


def split_rows(store, cfg: SearchConfig, labels: np.ndarray):
    """(search rows, test rows, how): the test rows are never seen by the search."""
    usable, left_out = rows_in_splits(store)  # fit-head's rule for rows with a blank split
    labelled = np.intersect1d(usable, np.flatnonzero(labels >= 0))
    index = store.row_index
    test = np.intersect1d(store.indices("test"), labelled)
    if len(test):
        return (np.setdiff1d(labelled, test), test,
                f"the store's test split ({len(test)} rows){blank_split_note(left_out)}")
    pool, test = holdout(labelled, labels, index.group, cfg.test_fraction, cfg.seed,
                         knob="test_fraction", config=cfg.config_file)
    how = (f"held-out {'group-aware ' if index.has_groups else ''}stratified "
           f"{len(test) / len(labelled):.0%} test split, seed {cfg.seed} ({len(test)} rows)"
           f"{blank_split_note(left_out)}")
    return pool, test, how


def read_job(store, cfg: SearchConfig, store_path: Path, entries: list, echo):
    """(the search's rows, folds and columns, the vectors of every row it may fit on), read
    from the open store; the data checks are said out loud."""
    if cfg.groups_from_audit:
        adopt_audit_groups(store, echo)
    decisions = apply_decisions(store, cfg.decisions, echo)
    labels = store.column("labels")  # with the review's relabelled rows
    search_rows, test_rows, test_how = split_rows(store, cfg, labels)
    search_rows, test_rows, test_how = audited_search_rows(
        store, search_rows, test_rows, test_how, cfg.exclude_leaks, echo, decisions)
    index = store.row_index  # after the audit's groups, if any, were adopted
    folds = cv_folds(search_rows, labels, index.group, cfg.cv, cfg.seed)
    if len(np.unique(labels[search_rows])) < 2:
        raise DataError("grid-search needs at least 2 classes among the search rows")
    # With --views the view rows follow the plain ones in `features`; each fit adds the views
    # of its own training rows only.
    n_loaded = index.n_rows if cfg.train_views != 0 else len(store)
    loaded = store.read_rows(np.arange(n_loaded))
    features = loaded.reshape(n_loaded, -1)  # pool5 maps are compared as flat vectors
    del loaded
    for line in search_data_warnings(store, features[:len(store)], search_rows, test_rows,
                                     folds, test_from_store="test" in store.splits):
        echo(line)
    job = SearchJob(
        cfg=cfg, store_path=store_path, entries=entries, index=index,
        meta={"store": str(store_path), "store_key": store.key,
              "provenance": store.provenance, "class_names": list(store.class_names),
              **({"decisions": decisions.record()} if decisions is not None else {})},
        labels=store.full_column("labels")[:n_loaded],
        # integer codes: cheap to hand to every worker, and they join what the names join
        groups=np.unique(index.group[:n_loaded].astype(str), return_inverse=True)[1],
        search_rows=search_rows, test_rows=test_rows, test_how=test_how, folds=folds,
        table={"ids": store.column("ids"), "labels": labels, "names": store.class_names,
               "groups": index.group if index.has_groups else None})
    return job, features
