"""Validation splits that tell the truth, shared by fit-head and grid-search.

Rules, in order:
  1. The store's own splits (train / val / test) when it has them.
  2. Otherwise a stratified split with a fixed seed.
  3. Whenever the store has groups (video, subject, source), splitting is group-aware: no group
     ever sits on both sides (frames of one video on both sides make validation a memory test).
     Every row's group comes from the store's `row_index`: a row without one is a group of its
     own, never one giant group "". Where no group holds more than one of the rows being split,
     they are split row by row, exactly as a store without groups.
  4. A held-out share is as close to the asked fraction as the groups allow (0.4 means 40% of
     the rows, not the 50% that a 2-fold group split would give).
  5. In a store that names its train rows, a row with a blank split belongs to no split: it is
     left out, and the split's description says how many (`rows_in_splits`).
"""

from __future__ import annotations

import math
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
    warnings: tuple = ()  # e.g. a class with no validation rows, one line each


def _joined(groups: np.ndarray) -> bool:
    """Whether some group holds more than one of these rows: only then can a split by groups
    differ from a split by rows."""
    return len(set(groups.tolist())) < len(groups)


def rows_in_splits(store) -> tuple[np.ndarray, int]:
    """(the rows fit-head and grid-search may use, how many rows with a blank split are left out).

    A store that names its train rows (folders or a manifest's split column) says where every
    row belongs, so a row with a blank split belongs to no split and is used by neither. A store
    that names no train rows (only val and/or test, or no split at all) leaves its blank rows as
    the pool that train (and val, when it has none) come from.
    """
    if "train" not in store.splits:
        return np.arange(len(store)), 0
    rows = np.flatnonzero(store.column("split") != "")
    return rows, len(store) - len(rows)


def blank_split_note(left_out: int) -> str:
    """The phrase that says so in a split's description ("" when no row was left out)."""
    return (f"; {left_out} row(s) with a blank split left out (the store names its train rows, "
            "so they belong to no split)") if left_out else ""


def _flag(knob: str, value, config: str | None = None) -> str:
    """A fix as the user types it: `--val-fraction 0.5`, plus the TOML key if a file was used."""
    text = f"--{knob.replace('_', '-')} {value}"
    return text + (f" ({knob} = {value} in {config})" if config else "")


def rows_needed_per_class(fraction: float) -> int:
    """Fewest rows a class needs for a `fraction` holdout to put it on both sides."""
    return max(2, math.ceil(1.0 / min(fraction, 1.0 - fraction) - 1e-9))


def _group_holdout(y: np.ndarray, g: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask of held-out rows: whole groups, each class as close to `fraction` as the
    group sizes allow.

    Groups are tried in a seeded random order (taking the largest first would make every
    validation set the same few big groups, never a fair sample of them), then the ones left
    smallest first to close the gap. A group holding every remaining kept row of a class is
    never held out: the class would vanish from the kept side.
    """
    names, inverse = np.unique(g.astype(str), return_inverse=True)
    per_group = np.zeros((len(names), int(y.max()) + 1))
    np.add.at(per_group, (inverse, y), 1)
    total = per_group.sum(axis=0)
    target = fraction * total
    held = np.zeros(per_group.shape[1])
    chosen = np.zeros(len(names), dtype=bool)

    def take_if_closer(i) -> None:
        nonlocal held
        after = held + per_group[i]
        if (after[per_group[i] > 0] >= total[per_group[i] > 0]).any():
            return
        if np.abs(after - target).sum() < np.abs(held - target).sum():
            held = after
            chosen[i] = True

    for i in np.random.default_rng(seed).permutation(len(names)):
        take_if_closer(i)
    for i in np.argsort(per_group.sum(axis=1), kind="stable"):
        if not chosen[i]:
            take_if_closer(i)
    # A class left out of the held-out side gets its smallest group there, if it has another.
    for c in np.flatnonzero((held == 0) & (total > 0)):
        spare = [i for i in np.flatnonzero(per_group[:, c] > 0) if not chosen[i]]
        if len(spare) >= 2:
            chosen[min(spare, key=lambda i: per_group[i].sum())] = True
    return chosen[inverse]


def check_classes(labels: np.ndarray, kept: np.ndarray, held: np.ndarray, class_names=None,
                  held_name: str = "validation", knob: str | None = None,
                  config: str | None = None) -> list[str]:
    """After a split: a class with rows but none on the kept (training) side is an error; one
    missing from the held-out side is a warning (returned as a line).

    Args:
        labels: the store's label column.
        kept, held: the two sides' rows.
        class_names: names for the messages (class indices when None).
        held_name: what the held-out side is ("validation", "test").
        knob: the option that made the split (named in the fix); None = the store's own split.
        config: the config file in use, if any.
    """
    def name(c) -> str:
        return str(class_names[c]) if class_names is not None else str(c)

    kept_counts = np.bincount(labels[kept][labels[kept] >= 0], minlength=1)
    held_counts = np.bincount(labels[held][labels[held] >= 0], minlength=1)
    size = max(len(kept_counts), len(held_counts))
    kept_counts = np.pad(kept_counts, (0, size - len(kept_counts)))
    held_counts = np.pad(held_counts, (0, size - len(held_counts)))
    for c in np.flatnonzero((kept_counts == 0) & (held_counts > 0)):
        if knob is None:
            fix = ("give it rows in the store's train split (folders or the manifest's split "
                   "column)")
        else:
            where = f" ({knob} in {config})" if config else ""
            fix = (f"its rows sit in too few groups to split; give it rows in more groups, "
                   f"lower --{knob.replace('_', '-')}{where} or choose another --seed, or give "
                   "explicit train/val splits")
        raise DataError(f"class {name(c)} has no training rows: all {int(held_counts[c])} of "
                        f"its rows are in the {held_name} split; {fix}.")
    return [f"warning: class {name(c)} has no {held_name} rows (its {int(kept_counts[c])} rows "
            f"all train); its scores there are missing"
            for c in np.flatnonzero((held_counts == 0) & (kept_counts > 0))]


def _close_enough(share: float, fraction: float) -> bool:
    """A grouped holdout's share is accepted within half the asked fraction either way."""
    return 0.0 < share < 1.0 and 0.5 * fraction <= share <= 1.5 * fraction


def holdout(rows: np.ndarray, labels: np.ndarray, groups: np.ndarray, fraction: float,
            seed: int, knob: str = "val_fraction", config: str | None = None,
            class_names=None) -> tuple[np.ndarray, np.ndarray]:
    """Splits `rows` into (kept, held_out) of about `fraction`, stratified and group-aware.

    Args:
        rows: store rows to split.
        labels, groups: each store row's label and group (`row_index.group`: never empty);
            whole groups are held out when a group holds more than one of `rows`.
        fraction: share of the rows to hold out.
        seed: seed of the split.
        knob: the option that sets `fraction` (named in the error when the split cannot be made).
        config: the config file in use, if any (its key is named next to the flag).
        class_names: names of the classes, for the error when a class would get no kept rows.
    """
    from sklearn.model_selection import StratifiedShuffleSplit

    if not 0.0 < fraction < 1.0:
        raise DataError(f"{knob} must be between 0 and 1; received: {fraction}")
    held_name = _HELD_NAMES.get(knob, "held-out")
    what = ("the calibration share of the training rows" if held_name == "calibration" else
            f"a {held_name} set")
    # A calibration share is taken from the training rows whatever the store's splits are.
    other_way = ("set --calibration-fraction 0 to leave the probabilities uncalibrated"
                 if held_name == "calibration" else
                 "give explicit train/val splits (folders or a manifest split column)")
    y = labels[rows]
    counts = np.bincount(y[y >= 0]) if len(y) else np.array([], dtype=int)
    present = counts[counts > 0]
    n_held = int(round(fraction * len(rows)))
    need = rows_needed_per_class(fraction)
    if not len(present) or present.min() < 2 or n_held < len(present) or \
            len(rows) - n_held < len(present):
        smallest = int(present.min()) if len(present) else 0
        enough = math.ceil(100 * len(present) / max(len(rows), 1)) / 100  # one row per class
        fix = "Add rows (every class needs at least 2)" if smallest < 2 else "Add rows"
        if smallest >= 2 and fraction < enough <= 0.5:
            fix += f", or raise {_flag(knob, enough, config)}"
        raise DataError(
            f"too few rows to hold out {fraction:.0%} as {what} with every class on both sides "
            f"({len(rows)} rows, {len(present)} classes, the smallest has {smallest}); at "
            f"--{knob.replace('_', '-')} {fraction:g} each class needs about {need} rows. {fix}, "
            f"or {other_way}.")
    g = np.asarray(groups, dtype=object)[rows]
    if _joined(g):
        held = _group_holdout(y, g, fraction, seed)
        if not _close_enough(held.mean(), fraction):
            n_groups = len(set(g.tolist()))
            # Suggest a fraction that the groups can honour: the share some larger fraction
            # actually gives, checked to give itself back within tolerance.
            shares = [round(float(_group_holdout(y, g, f, seed).mean()), 2)
                      for f in (0.25, 1 / 3, 0.4, 0.5) if f > fraction]
            works = [f for f in shares
                     if 0 < f < 1 and _close_enough(_group_holdout(y, g, f, seed).mean(), f)]
            fix = (f"use {_flag(knob, works[0], config)}" if works else "add groups")
            raise DataError(f"only {n_groups} distinct groups: too few to hold out {fraction:.0%} "
                            f"of the rows as {what} of whole groups with every class on both "
                            f"sides (the nearest is {held.mean():.0%}); {fix}, or {other_way}.")
        kept, held = np.flatnonzero(~held), np.flatnonzero(held)
    else:
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=n_held, random_state=seed)
        kept, held = next(splitter.split(np.zeros(len(rows)), y))
    kept, held = np.sort(rows[kept]), np.sort(rows[held])
    check_classes(labels, kept, held, class_names, held_name, knob, config)
    return kept, held


_HELD_NAMES = {"val_fraction": "validation", "validation_fraction": "validation",
               "test_fraction": "test",
               "calibration_fraction": "calibration"}


def make_split(store, val_fraction: float = 0.2, seed: int = 0,
               test_fraction: float = 0.0, config: str | None = None,
               skip_unaffordable: bool = False, hold_out_val: bool = True) -> Split:
    """Train/val/test row indices for a store (see the module docstring for the rules).

    Args:
        store: an open `FeatureStore`.
        val_fraction: share held out for validation when the store has no val split.
        seed: seed of every random split.
        test_fraction: when > 0 and the store has no test split, this share of the rows is held
            out first (stratified, group-aware) as an untouched test split.
        config: the config file in use, if any (named in errors next to the flag).
        skip_unaffordable: a test or validation share that the rows cannot give (a class too
            small to sit on both sides) is left empty, with a `note:` line in `warnings`,
            instead of refused.
        hold_out_val: False leaves a store without a val split without validation rows
            (its own val split stays).

    Raises:
        DataError: a class would have no training rows (named, with the fix).
    """
    labels = store.column("labels")
    index = store.row_index
    grouped = "group-aware " if index.has_groups else ""
    names = store.class_names
    usable, left_out = rows_in_splits(store)
    test = store.indices("test")
    test_how = blank_split_note(left_out)
    notes = []

    def share(rows, fraction, knob, what):
        """holdout(), or (rows, no rows) and a note when the share cannot be afforded."""
        try:
            return holdout(rows, labels, index.group, fraction, seed, knob=knob,
                           config=config, class_names=names)
        except DataError as exc:
            if not skip_unaffordable:
                raise
            notes.append(f"note: no {what} share: {str(exc).split(';')[0]}")
            return np.asarray(rows), np.zeros(0, dtype=np.int64)

    if not len(test) and test_fraction:
        rest, test = share(usable, test_fraction, "test_fraction", "test")
        if len(test):
            test_how += (f"; {grouped}stratified "
                         f"{len(test) / len(usable):.0%} test split held out first, seed {seed}")
        if "val" in store.splits:  # the store's val rows stay val, never test
            val_rows = store.indices("val")
            test = np.setdiff1d(test, val_rows)
    if "val" in store.splits:
        train = store.indices("train") if "train" in store.splits else \
            np.setdiff1d(usable, np.union1d(store.indices("val"), test))
        train = np.setdiff1d(train, test)
        val, how = store.indices("val"), "the store's own train/val split" + test_how
        val_knob = None
    else:
        pool = store.indices("train") if "train" in store.splits else usable
        pool = np.setdiff1d(pool, test)
        train, val = share(pool, val_fraction, "val_fraction", "validation") \
            if hold_out_val else (pool, pool[:0])
        how = (f"{grouped}stratified {len(val) / len(pool):.0%} validation split, seed {seed}"
               if len(val) else "no validation split") + test_how
        val_knob = "val_fraction"
    found = notes + (check_classes(labels, train, val, names, "validation", val_knob, config)
                     if len(val) else [])
    if len(test):
        found += check_classes(labels, train, test, names, "test",
                               None if "test" in store.splits else "test_fraction", config)
    return Split(train, val, test, how, tuple(found))


def cv_folds(rows: np.ndarray, labels: np.ndarray, groups: np.ndarray, k: int,
             seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """K shuffled, stratified folds of `rows`: (training rows, held-out rows) each.

    Args:
        rows: the rows to fold (indices into `labels` and `groups`).
        labels, groups: each row's label and group (`row_index.group`: never empty); the
            folds keep whole groups (StratifiedGroupKFold) when a group holds more than one
            of `rows`, else they are StratifiedKFold's.
        k: folds. seed: seed of the shuffle.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    rows = np.asarray(rows, dtype=np.int64)
    y, g = labels[rows], np.asarray(groups, dtype=object)[rows]
    grouped = _joined(g)
    if grouped:
        n_groups = len(set(g.tolist()))
        if n_groups < k:
            raise DataError(f"{k}-fold group cross-validation needs at least {k} groups; the "
                            f"store has {n_groups}. Lower --cv.")
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        counts = np.bincount(y[y >= 0])
        if counts[counts > 0].min() < k:
            raise DataError(f"{k}-fold cross-validation needs at least {k} samples per class; "
                            f"the smallest class has {counts[counts > 0].min()}. Lower --cv.")
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(rows[a], rows[b])
            for a, b in splitter.split(np.zeros(len(rows)), y, g if grouped else None)]
