"""What fit-head and grid-search read back from a store's audit (`<store>.audit/`).

A near-duplicate on both sides of a split makes the held-out score optimistic: the model has
seen the photo. These helpers warn about that, and with `--exclude-leaks` drop the held-out side
of each such pair, saying how many rows went; `--groups-from-audit` groups the rows by the
audit's suggested groups (suggested_groups.csv), so a split never separates near-duplicates.

Usage:
    warn_about_leaks(store, echo)
    kept, dropped = drop_leaking_rows(store, [train_rows, val_rows, test_rows])
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, DataError
from pipeline.outputs import require_regular_file
from pipeline.tables import TableError, read_rows

# More cross-split near-duplicates than this and fit-head / grid-search warn.
LEAK_WARNING_PAIRS = 3
# The audit's connected components of near-duplicates, one row per store row (`id,group,size`).
SUGGESTED_GROUPS = "suggested_groups.csv"


def audit_dir_for(store_path) -> Path:
    """Where `audit` writes by default: beside the store, `<store name>.audit`."""
    return Path(store_path).with_suffix(".audit")


def audit_folder(store) -> Path:
    """The default audit folder of an open store."""
    return audit_dir_for(store.path)


def read_audit_summary(store) -> dict | None:
    """The store's audit summary, or None when there is none or it audited other vectors."""
    path = audit_folder(store) / "summary.json"
    require_regular_file(path, "audit file", fix=_audit_again(store))
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:  # not JSON, or not UTF-8: no audit to go by
        return None
    if not isinstance(summary, dict):
        return None
    if summary.get("store_key") != store.key or summary.get("n_rows") != len(store) or \
            summary.get("source_fingerprint") != store.provenance.get("source_fingerprint"):
        return None  # other vectors, or the same settings over other files: the audit is stale
    return summary


def _store_flag(store) -> str:
    return f"--store {store.path}"


def _audit_again(store) -> str:
    return f"run `run_pipeline.py audit {_store_flag(store)}` again to write it anew"


def _audit_table(store, name: str, columns: tuple) -> list[dict]:
    """The rows of one of the audit's CSVs, which must hold `columns` in rows of its header's
    length: a file edited by hand is refused naming it, the line and the fix."""
    path = audit_folder(store) / name
    require_regular_file(path, "audit file", fix=_audit_again(store))
    try:
        return read_rows(path, columns)
    except TableError as exc:
        raise ConfigError(f"{path} was edited or damaged: {exc}; {_audit_again(store)}") from None


def read_suggested_groups(store) -> np.ndarray | None:
    """The current audit's suggested group of every row ("" = a row alone), or None when there
    is no current audit or it has no suggested_groups.csv."""
    path = audit_folder(store) / SUGGESTED_GROUPS
    require_regular_file(path, "audit file", fix=_audit_again(store))
    if read_audit_summary(store) is None or not path.is_file():
        return None
    by_id = {row["id"]: row["group"] for row in _audit_table(store, SUGGESTED_GROUPS,
                                                              ("id", "group"))}
    ids = store.column("ids").tolist()
    missing = next((i for i in ids if i not in by_id), None)
    if missing is not None or len(by_id) != len(ids):  # the audit of this store wrote them all
        raise ConfigError(f"{SUGGESTED_GROUPS} lists other rows than {store.path.name} (it was "
                          f"edited: {'no row for ' + repr(missing) if missing else 'extra rows'}"
                          f", in {path}); {_audit_again(store)}")
    return np.array([by_id[i] for i in ids], dtype=object)


def adopt_audit_groups(store, echo) -> None:
    """`--groups-from-audit`: the store's rows are grouped by the audit's suggested groups from
    now on (splits, folds, checks and reports all read them).

    Raises:
        ConfigError: there is no current audit of this store, or it suggested no groups.
    """
    groups = read_suggested_groups(store)
    if groups is None:
        raise ConfigError(f"--groups-from-audit needs a current audit of {store.path.name} with "
                          f"its {SUGGESTED_GROUPS}; run `run_pipeline.py audit "
                          f"{_store_flag(store)}` first (it writes {audit_folder(store)})")
    store.use_groups(groups, str(audit_folder(store) / SUGGESTED_GROUPS))
    named = groups[groups != ""]
    echo(f"--groups-from-audit: {len(set(named.tolist()))} suggested group(s) hold "
         f"{len(named)} of {len(groups)} rows ({store.groups_from}); near-duplicates of one "
         "source stay on one side of every split")


def warn_about_leaks(store, echo, exclude_leaks: bool = False) -> int:
    """One line about leaks before training; returns the audit's cross-split pair count.

    With the audit's groups in use there is nothing to warn about (every chain of
    near-duplicates stays on one side). Without any audit or groups, a note says that leaks
    go unseen. With more than LEAK_WARNING_PAIRS cross-split pairs, a warning names the fixes
    not yet taken.
    """
    if store.groups_from != "the store":
        return 0
    summary = read_audit_summary(store)
    if summary is None:
        if not store.row_index.has_groups:
            echo(f"note: no audit of {store.path.name} and no groups, so near-duplicates "
                 "across the split (frames or crops of one photo) go unseen and make held-out "
                 f"scores optimistic; run `run_pipeline.py audit {_store_flag(store)}`, then "
                 "pass --groups-from-audit")
        return 0
    count = int(summary.get("cross_split_pairs", 0))
    if count > LEAK_WARNING_PAIRS:
        fixes = "pass --groups-from-audit to split by its suggested groups (or adopt the " \
                f"group column of {SUGGESTED_GROUPS} in your manifest)"
        if not exclude_leaks:
            fixes += ", or --exclude-leaks to drop their held-out side"
        echo(f"warning: {count} near-duplicate pair(s) cross the splits "
             f"({audit_folder(store)}); held-out scores will be optimistic; {fixes}")
    return count


def drop_leaking_rows(store, parts: list) -> tuple[list, int]:
    """Drops, for every audited near-duplicate pair spread over two parts, its later side.

    Args:
        store: the open store the audit was made of.
        parts: row arrays in order, e.g. [train, val, test]: a pair across train and test loses
            its test row, across val and test its test row, across train and val its val row.

    Returns:
        (the parts without the dropped rows, how many rows were dropped).

    Raises:
        ConfigError: there is no current audit of this store to read the pairs from.
    """
    if store.groups_from != "the store":
        return parts, 0  # the split is by the audit's groups: no pair crosses it
    if read_audit_summary(store) is None:
        raise ConfigError(f"--exclude-leaks needs a current audit of {store.path.name}; run "
                          f"`run_pipeline.py audit --store {store.path}` first (it writes "
                          f"{audit_folder(store)})")
    row_of = {row_id: i for i, row_id in enumerate(store.column("ids").tolist())}
    part_of = np.full(len(store), -1)
    for p, rows in enumerate(parts):
        part_of[rows] = p
    drop = set()
    for pair in _audit_table(store, "duplicates.csv", ("id_a", "id_b")):
        a, b = row_of.get(pair["id_a"]), row_of.get(pair["id_b"])
        if a is None or b is None or part_of[a] < 0 or part_of[b] < 0 \
                or part_of[a] == part_of[b] or a in drop or b in drop:
            continue
        drop.add(a if part_of[a] > part_of[b] else b)
    # Through chains too: a val frame two near-duplicate steps from a train frame leaks as
    # much as one step away. Each suggested group keeps only the rows of its earliest part.
    groups = read_suggested_groups(store)
    if groups is not None:
        used = np.flatnonzero((groups != "") & (part_of >= 0))
        earliest: dict[str, int] = {}
        for r in used.tolist():
            earliest[groups[r]] = min(earliest.get(groups[r], part_of[r]), part_of[r])
        drop.update(r for r in used.tolist() if part_of[r] > earliest[groups[r]])
    dropped = np.fromiter(drop, dtype=np.int64, count=len(drop))
    return [np.setdiff1d(rows, dropped) for rows in parts], len(drop)


def audited_split(store, split, exclude_leaks: bool, echo):
    """fit-head's hook: warns about the store's audited leaks and, with --exclude-leaks, returns
    the split without the val/test side of each leaking pair (the count goes into `split.how`,
    hence into metrics.json)."""
    from dataclasses import replace

    warn_about_leaks(store, echo, exclude_leaks)
    if not exclude_leaks:
        return split
    (train, val, test), dropped = drop_leaking_rows(store, [split.train, split.val, split.test])
    echo(f"--exclude-leaks: dropped {dropped} val/test row(s) that near-duplicate a row on an "
         "earlier side of the split, directly or through a chain of near-duplicates")
    if len(split.val) and not len(val):
        raise DataError(f"--exclude-leaks left no validation rows: all {len(split.val)} "
                        "near-duplicate a training row (frames or copies of the same sources "
                        "on both sides); split by source instead with --groups-from-audit "
                        "(in place of --exclude-leaks)")
    if len(split.test) and not len(test):
        echo(f"warning: --exclude-leaks left no test rows: all {len(split.test)} near-duplicate "
             "a training or validation row; split by source with --groups-from-audit")
    return replace(split, train=train, val=val, test=test,
                   how=f"{split.how}; {dropped} leaking val/test row(s) dropped (audit)")


def audited_search_rows(store, search_rows, test_rows, test_how: str, exclude_leaks: bool,
                        echo):
    """grid-search's hook: the same warning; with --exclude-leaks the test rows that
    near-duplicate a search row are dropped. Returns (search rows, test rows, how)."""
    warn_about_leaks(store, echo, exclude_leaks)
    if not exclude_leaks:
        return search_rows, test_rows, test_how
    (search_rows, test_rows), dropped = drop_leaking_rows(store, [search_rows, test_rows])
    echo(f"--exclude-leaks: dropped {dropped} test row(s) that near-duplicate a search row, "
         "directly or through a chain of near-duplicates")
    return search_rows, test_rows, f"{test_how}; {dropped} leaking test row(s) dropped (audit)"
