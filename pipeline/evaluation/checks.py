"""Plain-spoken warnings about data too small or too leaky to trust a score, shared by fit-head
and grid-search: tiny validation sets, folds that all score the same, groups on both sides of
the store's own splits, and rows whose vectors are exact copies of rows on the other side.

Usage:
    digests = row_digests(features)              # one hash per row, computed once
    n = copied_rows(digests, train_rows, val_rows)
    for line in tiny_data_warnings(n_val=len(val_rows), fold_scores=scores): echo(line)
"""

from __future__ import annotations

import numpy as np

# Below this a validation score moves by 5 points per row: report it, do not trust it.
FEW_VALIDATION_ROWS = 20
# Below this many groups (sources: photos, videos, subjects) a validation score moves in steps
# of whole sources: one hard source more or less swings it, whatever the row count.
FEW_VALIDATION_GROUPS = 10


def groups_on_both_sides(groups: np.ndarray, *sides: np.ndarray) -> list[str]:
    """Sorted names of the groups (`row_index.group`) that have rows in more than one of
    `sides`."""
    seen: dict[str, int] = {}
    for rows in sides:
        for name in set(groups[np.asarray(rows, dtype=np.int64)].tolist()):
            seen[name] = seen.get(name, 0) + 1
    return sorted(name for name, n in seen.items() if n > 1)


def leak_warning(names: list[str], where: str) -> str:
    """The warning for groups on both sides of the store's own splits, with its fix."""
    shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
    return (f"warning: {len(names)} group(s) sit in more than one of {where} ({shown}); scores "
            "will be optimistic. Fix: extract again from a manifest without its `split` column "
            "(fit-head and grid-search then make a group-aware split), or move each of these "
            "groups into one split.")


def row_digests(batches) -> np.ndarray:
    """One 64-bit hash per row of the given feature batches (exact copies hash alike)."""
    out = []
    for x in batches:
        flat = np.ascontiguousarray(x).reshape(len(x), -1)
        out += [hash(row.tobytes()) for row in flat]
    return np.array(out, dtype=np.int64)


def copied_rows(digests: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray) -> int:
    """Rows of `rows_b` whose vector is an exact copy of a vector in `rows_a`.

    `digests` is indexed by store row (only the rows of a and b need to be filled in).
    """
    return int(np.isin(digests[rows_b], digests[rows_a]).sum())


def copies_warning(n: int, side_a: str, side_b: str) -> str:
    return (f"warning: {n} {side_b} row(s) have vectors identical to {side_a} rows (the same "
            f"file twice, or frames that do not change); their {side_b} scores are memory, not "
            "generalisation. Remove the copies, or give copies one group so they stay together.")


def tiny_data_warnings(n_val: int | None = None, fold_scores=None, what: str = "validation",
                       hint: str = "add data or use cross-validation (--cv)") -> list[str]:
    """Warnings for a validation set under ~20 rows and for folds that all score the same."""
    lines = []
    if n_val is not None and n_val < FEW_VALIDATION_ROWS:
        lines.append(f"warning: {what} has only {n_val} row(s): one row moves its accuracy by "
                     f"{1 / max(n_val, 1):.0%}, so its scores are not evidence; {hint}.")
    scores = [] if fold_scores is None else list(fold_scores)
    if len(scores) >= 2 and max(scores) - min(scores) == 0:
        lines.append(f"warning: all {len(scores)} folds scored exactly {scores[0]:.4f}: folds "
                     "this alike usually mean too few rows per fold to tell models apart.")
    return lines


def volatile_groups_warning(groups: np.ndarray, rows: np.ndarray,
                            what: str = "validation",
                            hint: str = "use cross-validation (--cv 5)") -> list[str]:
    """A warning when `rows` hold fewer than FEW_VALIDATION_GROUPS distinct groups (`groups`:
    `row_index.group`, where a row without a group is a source of its own)."""
    if not len(rows):
        return []
    n = len(set(np.asarray(groups, dtype=object)[np.asarray(rows, dtype=np.int64)].tolist()))
    if n >= FEW_VALIDATION_GROUPS:
        return []
    return [f"warning: {what} holds {len(rows)} row(s) from only {n} group(s) (sources): its "
            "score moves in steps of whole sources, so it is volatile and one source more or "
            f"less can swing it; {hint}."]
