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


def views_of(store, rows, max_view: int | None = None) -> np.ndarray:
    """Sorted rows of the views (1..max_view, default all) of the plain `rows` of `store`."""
    n_all = int(store.file["features"].shape[0])
    if n_all == store.n_plain or not len(rows):
        return np.zeros(0, dtype=np.int64)
    view = store.full_column("view")
    ids = store.full_column("ids")
    wanted = set(ids[np.asarray(rows, dtype=np.int64)].tolist())
    extra = np.arange(store.n_plain, n_all)
    keep = np.array([ids[r] in wanted for r in extra], dtype=bool)
    if max_view is not None:
        keep &= view[extra] <= max_view
    return extra[keep]


def with_views(store, rows) -> np.ndarray:
    """`rows` followed by the rows of their augmented views (training rows only)."""
    rows = np.asarray(rows, dtype=np.int64)
    return np.concatenate([rows, views_of(store, rows)])
