"""What fit-head and grid-search read back from a store's audit (`<store>.audit/`).

A near-duplicate on both sides of a split makes the held-out score optimistic: the model has
seen the photo. These helpers warn about that, and with `--exclude-leaks` drop the held-out side
of each such pair, saying how many rows went.

Usage:
    warn_about_leaks(store, echo)
    kept, dropped = drop_leaking_rows(store, [train_rows, val_rows, test_rows])
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError

# More cross-split near-duplicates than this and fit-head / grid-search warn.
LEAK_WARNING_PAIRS = 3


def audit_dir_for(store_path) -> Path:
    """Where `audit` writes by default: beside the store, `<store name>.audit`."""
    return Path(store_path).with_suffix(".audit")


def audit_folder(store) -> Path:
    """The default audit folder of an open store."""
    return audit_dir_for(store.path)


def read_audit_summary(store) -> dict | None:
    """The store's audit summary, or None when there is none or it audited other vectors."""
    path = audit_folder(store) / "summary.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    if summary.get("store_key") != store.key or summary.get("n_rows") != len(store) or \
            summary.get("source_fingerprint") != store.provenance.get("source_fingerprint"):
        return None  # other vectors, or the same settings over other files: the audit is stale
    return summary


def warn_about_leaks(store, echo) -> int:
    """One warning line when the audit found more than LEAK_WARNING_PAIRS cross-split pairs;
    returns the count (0 without an audit)."""
    summary = read_audit_summary(store)
    count = int(summary.get("cross_split_pairs", 0)) if summary else 0
    if count > LEAK_WARNING_PAIRS:
        echo(f"warning: {count} near-duplicate pair(s) cross the splits "
             f"({audit_folder(store)}); held-out scores will be optimistic; pass "
             "--exclude-leaks to drop their held-out side")
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
    if read_audit_summary(store) is None:
        raise ConfigError(f"--exclude-leaks needs a current audit of {store.path.name}; run "
                          f"`run_pipeline.py audit --store {store.path}` first (it writes "
                          f"{audit_folder(store)})")
    row_of = {row_id: i for i, row_id in enumerate(store.column("ids").tolist())}
    part_of = np.full(len(store), -1)
    for p, rows in enumerate(parts):
        part_of[rows] = p
    drop = set()
    with (audit_folder(store) / "duplicates.csv").open(newline="", encoding="utf-8") as fh:
        for pair in csv.DictReader(fh):
            a, b = row_of.get(pair["id_a"]), row_of.get(pair["id_b"])
            if a is None or b is None or part_of[a] < 0 or part_of[b] < 0 \
                    or part_of[a] == part_of[b] or a in drop or b in drop:
                continue
            drop.add(a if part_of[a] > part_of[b] else b)
    dropped = np.fromiter(drop, dtype=np.int64, count=len(drop))
    return [np.setdiff1d(rows, dropped) for rows in parts], len(drop)


def audited_split(store, split, exclude_leaks: bool, echo):
    """fit-head's hook: warns about the store's audited leaks and, with --exclude-leaks, returns
    the split without the val/test side of each leaking pair (the count goes into `split.how`,
    hence into metrics.json)."""
    from dataclasses import replace

    warn_about_leaks(store, echo)
    if not exclude_leaks:
        return split
    (train, val, test), dropped = drop_leaking_rows(store, [split.train, split.val, split.test])
    echo(f"--exclude-leaks: dropped {dropped} val/test row(s) that near-duplicate a row on an "
         "earlier side of the split")
    return replace(split, train=train, val=val, test=test,
                   how=f"{split.how}; {dropped} leaking val/test row(s) dropped (audit)")


def audited_search_rows(store, search_rows, test_rows, test_how: str, exclude_leaks: bool,
                        echo):
    """grid-search's hook: the same warning; with --exclude-leaks the test rows that
    near-duplicate a search row are dropped. Returns (search rows, test rows, how)."""
    warn_about_leaks(store, echo)
    if not exclude_leaks:
        return search_rows, test_rows, test_how
    (search_rows, test_rows), dropped = drop_leaking_rows(store, [search_rows, test_rows])
    echo(f"--exclude-leaks: dropped {dropped} test row(s) that near-duplicate a search row")
    return search_rows, test_rows, f"{test_how}; {dropped} leaking test row(s) dropped (audit)"
