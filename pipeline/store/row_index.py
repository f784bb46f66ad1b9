"""One index of a store's rows: for every row, plain or augmented view, its plain row, its file,
its group and its views, worked out once per open store (`FeatureStore.row_index`).

Plain rows come first; the rows after them are augmented views (`extract --views`), marked by
the `view` column (1..K) and carrying their file's id, label, split and group. A store without
the column is all plain rows.

A row's group is never empty: the store's group (or the audit's, after `use_groups`) where the
row has one, else its file. So splitting by groups never lumps every ungrouped row into one
group "", a view is always in its file's group, and the frame rows of `--temporal-pool none`
keep the clip they already carry as their group. Every split, fold, holdout and check reads its
groups here, and only training rows ever get their views added (`with_views`).

The index holds numpy arrays only and pickles, so search workers can use it without the store.

Usage:
    index = store.row_index
    train = index.with_views(train_rows, max_view=4)
    groups = index.group[rows]
"""

from __future__ import annotations

import h5py
import numpy as np

from pipeline.errors import StoreError


def plain_count(path, file: h5py.File) -> int:
    """Rows of the plain view (all rows without a `view` column); refuses a store whose view
    rows do not all follow its plain rows."""
    n = int(file["features"].shape[0])
    if "view" not in file:
        return n
    view = file["view"][:]
    if view.shape != (n,):
        raise StoreError(f"store {path} is damaged: column view has {view.shape[0]} values for "
                         f"{n} rows; extract it again with --views")
    n_plain = int((view == 0).sum())
    if (view[:n_plain] != 0).any() or (view[n_plain:] <= 0).any():
        raise StoreError(f"store {path} is damaged: its view rows are not after its plain rows; "
                         "extract it again with --views")
    return n_plain


class RowIndex:
    """Plain row, file, group and views of every row of one store.

    Attributes (one entry per row, views included, all numpy arrays):
        plain: the row's plain row (a plain row is its own).
        file: the id of that plain row.
        group: the row's group, never empty.
        view: 0 for a plain row, 1..K for a view.
    And:
        n_plain: plain rows (they come first).
        has_groups: whether the groups join rows: a group holds more than one plain row, or
            the groups were given (the audit's, `--groups-from-audit`). Without them every
            file is a group of its own and splits are made row by row.
        n_without_group: plain rows without a group of their own in a store whose group
            column names some (0 when it names none).
    """

    def __init__(self, ids, view, groups, groups_given: bool = False, store_name: str = ""):
        """
        Args:
            ids: every row's id (plain rows first, then view rows with their file's id).
            view: every row's view number (0 = plain).
            groups: the plain rows' groups ("" = none).
            groups_given: the groups are the audit's, not the store's column.
            store_name: named in the error about a damaged store.
        """
        self.view = np.asarray(view, dtype=np.int32)
        self.n_plain = n_plain = len(groups)
        ids = np.asarray(ids, dtype=object)
        file_ids = ids[:n_plain]
        self.plain = np.arange(len(self.view), dtype=np.int64)
        if len(self.view) > n_plain:
            self.plain[n_plain:] = _plain_rows_of(file_ids, ids[n_plain:], store_name)
        self.file = file_ids[self.plain]
        named = np.asarray(groups, dtype=object)
        blank = named == ""
        # A file is its own group: its id never names another row's group except on purpose
        # (a manifest grouping rows by a file's path), where keeping them together is right.
        own = np.where(blank, file_ids, named)
        self.group = own[self.plain]
        self.n_without_group = 0 if blank.all() else int(blank.sum())
        self.has_groups = bool(groups_given) or len(set(own.tolist())) < n_plain

    @classmethod
    def of(cls, store) -> RowIndex:
        """The index of an open `FeatureStore`, with the groups it reads now."""
        return cls(store.full_column("ids"), store.full_column("view"), store.column("group"),
                   store.groups_from != "the store", store.path.name)

    @property
    def n_rows(self) -> int:
        return len(self.view)

    def views_of(self, rows, max_view: int | None = None) -> np.ndarray:
        """Sorted rows of the views 1..max_view (all by default) of the plain `rows`."""
        extra = np.arange(self.n_plain, self.n_rows)
        if max_view is not None:
            extra = extra[self.view[extra] <= max_view]
        if not len(extra) or not len(rows):
            return np.zeros(0, dtype=np.int64)
        return extra[np.isin(self.plain[extra], np.asarray(rows, dtype=np.int64))]

    def with_views(self, rows, max_view: int | None = None) -> np.ndarray:
        """`rows` followed by their views 1..max_view (all by default); only ever called with
        training rows, so a view trains exactly where its file trains."""
        rows = np.asarray(rows, dtype=np.int64)
        return np.concatenate([rows, self.views_of(rows, max_view)])


def _plain_rows_of(file_ids: np.ndarray, view_ids: np.ndarray, store_name: str) -> np.ndarray:
    """The plain row of each view row, found through its id."""
    plain_ids = file_ids.astype(str)
    wanted = view_ids.astype(str)
    order = np.argsort(plain_ids, kind="stable")
    at = np.minimum(np.searchsorted(plain_ids, wanted, sorter=order), len(order) - 1)
    rows = order[at] if len(order) else np.zeros(len(wanted), dtype=np.int64)
    lost = np.flatnonzero(plain_ids[rows] != wanted) if len(order) else np.arange(len(wanted))
    if len(lost):
        raise StoreError(f"store {store_name} is damaged: {len(lost)} view row(s) (first: "
                         f"{view_ids[lost[0]]}) have no plain row of their file; extract it "
                         "again with --views")
    return rows.astype(np.int64)
