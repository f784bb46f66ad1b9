"""Suggested groups: the connected components of the near-duplicate graph.

Frames of one photo or one video are near-duplicates of each other, but not every frame is
within the threshold of every other: A is close to B and B to C while A and C sit a little
farther apart. Linking each near-duplicate pair and taking connected components puts the whole
chain in one group, so a split by these groups keeps every frame of a source on one side.
A store's own groups are kept whole: rows that share a group are linked too, so a suggested
group is a union of the store's groups, never a part of one.

The graph is a sparse matrix over the pairs list (scipy's connected_components): memory grows
with the pairs, never with N x N.

Usage:
    names, sizes = suggested_groups(len(store), pairs, store.row_index.group[:len(store)])
"""

from __future__ import annotations

import numpy as np

from pipeline.tables import write_rows

GROUP_PREFIX = "dup"  # suggested names: dup00001, ...; a singleton row gets none ("")


def components(n: int, pairs: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(n,) component label of each row, over the pairs' edges plus "same store group" edges.

    Args:
        n: rows.
        pairs: (P, >=2) rows (i, j, ...) of near-duplicate pairs (as `scan.pairs`).
        groups: each row's group (the store's `row_index.group`: never empty).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edges = [np.asarray(pairs)[:, :2].astype(np.int64)] if len(pairs) else []
    # chain each group's rows: first row of the group -> each row (a lone row links itself)
    _, first, inverse = np.unique(np.asarray(groups).astype(str), return_index=True,
                                  return_inverse=True)
    edges.append(np.column_stack([first[inverse], np.arange(n)]))
    edges = np.concatenate(edges)
    graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])),
                       shape=(n, n))
    return connected_components(graph, directed=False)[1]


def suggested_groups(n: int, pairs: np.ndarray, groups: np.ndarray):
    """(names (n,) object array: a group name for every row in a component of 2 or more rows,
    "" for a row alone; sizes (n,) int: its component's size)."""
    label = components(n, pairs, groups)
    counts = np.bincount(label, minlength=1)
    sizes = counts[label]
    # Named by size (largest first), then by first row, so names are stable across runs.
    multi = np.flatnonzero(counts > 1)
    first = np.full(len(counts), n)
    np.minimum.at(first, label, np.arange(n))
    order = multi[np.lexsort((first[multi], -counts[multi]))]
    width = max(5, len(str(len(order))))
    name_of = {int(c): f"{GROUP_PREFIX}{k + 1:0{width}d}" for k, c in enumerate(order)}
    names = np.array([name_of.get(int(c), "") for c in label], dtype=object)
    return names, sizes


def group_summary(names: np.ndarray, sizes: np.ndarray, splits: np.ndarray) -> dict:
    """Counts for summary.json: groups, rows in them, the largest, and groups that span splits."""
    grouped = names != ""
    spanning = 0
    if grouped.any():
        by_group: dict[str, set] = {}
        for name, split in zip(names[grouped].tolist(), splits[grouped].tolist()):
            by_group.setdefault(name, set()).add(split)
        spanning = sum(len(s) > 1 for s in by_group.values())
    return {"groups": int(len(set(names[grouped].tolist()))), "rows_in_groups": int(grouped.sum()),
            "largest": int(sizes.max()) if len(sizes) else 0, "groups_across_splits": spanning}


def write_suggested_groups(path, ids, names: np.ndarray, sizes: np.ndarray) -> None:
    """suggested_groups.csv: `id,group,size`, one row per store row in store order; `group` is
    ready to be a manifest's group column ("" = the row has no near-duplicate)."""
    write_rows(path, ("id", "group", "size"),
               [[row_id, name, int(size)] for row_id, name, size in
                zip(list(ids), names.tolist(), sizes.tolist())])
