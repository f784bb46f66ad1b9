"""grid-search's data checks, said out loud before the leaderboard: rows without a group, store
test splits that share groups with the search rows, tiny folds or test splits, folds that all
score the same, and search rows copied into validation folds or the test split.

Usage:
    lines = search_data_warnings(store, features, search_rows, test_rows, folds)
"""

from __future__ import annotations

import numpy as np

from pipeline.evaluation import checks


def search_data_warnings(store, features: np.ndarray, search_rows: np.ndarray,
                         test_rows: np.ndarray, folds: list, test_from_store: bool) -> list[str]:
    """Lines to print before the search starts (notes and warnings, each one line)."""
    lines = []
    index = store.row_index
    ungrouped = index.n_without_group
    if ungrouped:
        lines.append(f"{ungrouped} of {len(store)} rows have no group: each counts as a group "
                     "of its own in the folds and the test split")
    if test_from_store:
        shared = checks.groups_on_both_sides(index.group, search_rows, test_rows)
        if shared:
            lines.append(checks.leak_warning(shared, "the store's test split and the search "
                                                     "rows"))
    hint = "add data, or lower --cv so each fold holds more rows"
    lines += checks.tiny_data_warnings(n_val=min(len(v) for _, v in folds),
                                       what="the smallest validation fold", hint=hint)
    lines += checks.tiny_data_warnings(n_val=len(test_rows), what="the test split",
                                       hint="add data or raise --test-fraction")
    if len(test_rows) >= checks.FEW_VALIDATION_ROWS:
        lines += checks.volatile_groups_warning(
            index.group, test_rows, what="the test split",
            hint="judge by the cross-validated mean (--cv) rather than the test score")
    digests = checks.row_digests([features])
    copies = max(checks.copied_rows(digests, t, v) for t, v in folds)
    if copies:
        lines.append(checks.copies_warning(copies, "training-fold", "validation-fold"))
    if len(test_rows):
        copied = checks.copied_rows(digests, search_rows, test_rows)
        if copied:
            lines.append(checks.copies_warning(copied, "search", "test"))
    return lines


def fold_score_warnings(best) -> list[str]:
    """The best candidate's folds all scoring alike says the folds are too small to compare."""
    return checks.tiny_data_warnings(fold_scores=best.scores)
