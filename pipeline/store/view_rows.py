"""Where a store's augmented views are: rows after the plain ones, marked by the `view` column.

A store without the column (every store made without `--views`) is all plain rows. A view row
has its file's id, label, split and group; it is found through its id, so stage two can add a
file's views wherever, and only where, the file itself trains.
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


class ViewIndex:
    """Which rows are views of which plain row, from the columns alone (it pickles, so search
    workers can use it without the store)."""

    def __init__(self, store, max_view: int | None = None):
        self.n_plain = store.n_plain
        self.n_rows = int(store.file["features"].shape[0])
        view = store.full_column("view")
        extra = np.arange(self.n_plain, self.n_rows)
        if max_view is not None:
            extra = extra[view[extra] <= max_view]
        row_of = {sid: i for i, sid in enumerate(store.column("ids"))}
        ids = store.full_column("ids")
        self.extra = extra
        self.source = np.array([row_of[ids[r]] for r in extra], dtype=np.int64)
        # plain row of every row, views included (a view is in its file's group)
        self.plain_of = np.arange(self.n_rows, dtype=np.int64)
        self.plain_of[extra] = self.source

    def views_of(self, rows) -> np.ndarray:
        """Sorted rows of the views of the plain `rows`."""
        if not len(self.extra) or not len(rows):
            return np.zeros(0, dtype=np.int64)
        return self.extra[np.isin(self.source, np.asarray(rows, dtype=np.int64))]

    def with_views(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        return np.concatenate([rows, self.views_of(rows)])


def views_of(store, rows, max_view: int | None = None) -> np.ndarray:
    """Sorted rows of the views (1..max_view, default all) of the plain `rows` of `store`."""
    if int(store.file["features"].shape[0]) == store.n_plain or not len(rows):
        return np.zeros(0, dtype=np.int64)
    return ViewIndex(store, max_view).views_of(rows)


def with_views(store, rows, max_view: int | None = None) -> np.ndarray:
    """`rows` followed by the rows of their augmented views 1..max_view (default: all); only
    ever called with training rows, so a view trains exactly where its file trains."""
    rows = np.asarray(rows, dtype=np.int64)
    return np.concatenate([rows, views_of(store, rows, max_view)])
