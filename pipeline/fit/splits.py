"""Validation splits that tell the truth, shared by fit-head and grid-search.

Rules, in order:
  1. The store's own splits (train / val / test) when it has them.
  2. Otherwise a stratified split with a fixed seed.
  3. Whenever the store has groups (video, subject, source), splitting is group-aware: no group
     ever sits on both sides (seed 001's frames-of-one-video leak).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import DataError


@dataclass(frozen=True)
class Split:
    """Row indices into the store. `test` is empty when the store has no test split."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    how: str  # one line for reports: where the split came from


def _groups_or_none(groups: np.ndarray) -> np.ndarray | None:
    return groups if groups is not None and any(g for g in groups.tolist()) else None


def holdout(rows: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, fraction: float,
            seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits `rows` into (kept, held_out) of about `fraction`, stratified and group-aware."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedShuffleSplit

    if not 0.0 < fraction < 1.0:
        raise DataError(f"validation/test fraction must be between 0 and 1; received: {fraction}")
    y = labels[rows]
    counts = np.bincount(y[y >= 0]) if len(y) else np.array([])
    if len(rows) < 4 or (counts[counts > 0].min() if counts.size else 0) < 2:
        raise DataError(f"too few samples to hold out a validation set ({len(rows)} rows, "
                        "fewest per class < 2); add data or give explicit train/val folders.")
    g = _groups_or_none(groups[rows]) if groups is not None else None
    if g is not None:
        n_splits = max(2, int(round(1.0 / fraction)))
        if len(set(g.tolist())) < n_splits:
            raise DataError(f"only {len(set(g.tolist()))} distinct groups: too few to hold out "
                            f"{fraction:.0%} of them; add groups or give explicit splits.")
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        kept, held = next(splitter.split(np.zeros(len(rows)), y, g))
    else:
        n_classes, n_held = int((counts > 0).sum()), int(np.ceil(fraction * len(rows)))
        if min(n_held, len(rows) - n_held) < n_classes:  # every class on both sides
            raise DataError(
                f"too few rows to hold out {fraction:.0%} with all {n_classes} classes on both "
                f"sides: {len(rows)} rows give {n_held} held-out row(s); a stratified split needs "
                f"at least {int(np.ceil(n_classes / min(fraction, 1 - fraction)))} rows at this "
                "fraction. Add data, change --val-fraction / --test-fraction, or give explicit "
                "train/val folders.")
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        kept, held = next(splitter.split(np.zeros(len(rows)), y))
    return np.sort(rows[kept]), np.sort(rows[held])


def make_split(store, val_fraction: float = 0.2, seed: int = 0,
               test_fraction: float = 0.0) -> Split:
    """Train/val/test row indices for a store (see the module docstring for the rules).

    Args:
        store: an open `FeatureStore`.
        val_fraction: share held out for validation when the store has no val split.
        seed: seed of every random split.
        test_fraction: when > 0 and the store has no test split, this share of the rows is held
            out first (stratified, group-aware) as an untouched test split.
    """
    labels = store.column("labels")
    groups = store.column("group") if store.has_groups else None
    test = store.indices("test")
    test_how = ""
    if not len(test) and test_fraction:
        rest, test = holdout(np.arange(len(store)), labels, groups, test_fraction, seed)
        test_how = (f"; {'group-aware ' if groups is not None else ''}stratified "
                    f"{test_fraction:.0%} test split held out first, seed {seed}")
        if "val" in store.splits:  # the store's val rows stay val, never test
            val_rows = store.indices("val")
            test = np.setdiff1d(test, val_rows)
    if "val" in store.splits:
        train = store.indices("train") if "train" in store.splits else \
            np.setdiff1d(np.arange(len(store)), np.union1d(store.indices("val"), test))
        train = np.setdiff1d(train, test)
        return Split(train, store.indices("val"), test, "the store's own train/val split" + test_how)
    pool = store.indices("train") if "train" in store.splits else np.arange(len(store))
    pool = np.setdiff1d(pool, test)
    train, val = holdout(pool, labels, groups, val_fraction, seed)
    how = (f"{'group-aware ' if groups is not None else ''}stratified {val_fraction:.0%} "
           f"validation split, seed {seed}{test_how}")
    return Split(train, val, test, how)


def cv_splitter(labels: np.ndarray, groups: np.ndarray | None, k: int, seed: int = 0):
    """A scikit-learn CV splitter: StratifiedGroupKFold with groups, else StratifiedKFold."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if _groups_or_none(groups) is not None:
        n_groups = len(set(groups.tolist()))
        if n_groups < k:
            raise DataError(f"{k}-fold group cross-validation needs at least {k} groups; the "
                            f"store has {n_groups}. Lower --cv.")
        return StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    counts = np.bincount(labels[labels >= 0])
    if counts[counts > 0].min() < k:
        raise DataError(f"{k}-fold cross-validation needs at least {k} samples per class; the "
                        f"smallest class has {counts[counts > 0].min()}. Lower --cv.")
    return StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
