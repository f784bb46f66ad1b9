"""Every near-duplicate pair at or under the threshold: counted in full, listed up to a cap.

The neighbour graph keeps each row's k nearest other rows. A row whose k-th neighbour is still
under the threshold may have more near-duplicates than its list shows (31 copies of one photo
each list only 10), so the graph's pairs alone undercount. The pairs come from three places,
each pair from exactly one:

1. Identical vectors (equal digests of the stored rows): all n(n-1)/2 pairs of every set of n
   identical rows, whatever their centred distance says (a row equal to the mean of all rows
   centres to zero and sits at distance 1 from everything).
2. The graph's pairs of two rows whose lists are complete (their k-th neighbour lies beyond the
   threshold, so every row under it is listed).
3. A wider exact search: one row of each set of identical rows whose list is full is compared
   with every row, as long as that costs at most WIDER_SEARCH_ROW_PAIRS row pairs (one exact
   scan of 50,000 rows). Above that, those rows keep the graph's k pairs, and the counts say
   they are a lower bound and for how many rows.

Counts (all, across splits, across groups) of a set of identical rows are worked out from the
set's split and group sizes, not pair by pair, so 10,000 copies of one image (50 million pairs)
are counted without being listed. duplicates.csv lists at most LISTED_PAIRS pairs, leaks first;
the rest are counted, and every pair still links the suggested groups.

    found = find_pairs(graph, threshold, digests, splits, groups, prepare)
    found.listed, found.counts, found.links, found.cut
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LISTED_PAIRS = 100_000  # rows of duplicates.csv at most (about 10 MB)
WIDER_SEARCH_ROW_PAIRS = 2_500_000_000  # one 50,000 x 50,000 scan: about a minute on 2 cores
BLOCK_ROWS = 2048
IDENTICAL_WARNING_SHARE = 0.05  # one vector shared by this share of the rows (and 3+) is warned


@dataclass
class PairFindings:
    """What `find_pairs` found.

    Attributes:
        listed: (P, 3) rows (i, j, distance), P <= LISTED_PAIRS, the leaks among the first kept.
        counts: every pair's tally: pairs, identical, cross_split, cross_group.
        links: (M, 2) row pairs whose components are the suggested groups (every pair found,
            folded so memory stays O(N)).
        cut: what was not listed or not searched (empty when nothing was).
        identical: facts on the sets of identical vectors.
    """

    listed: np.ndarray
    counts: dict
    links: np.ndarray
    cut: dict = field(default_factory=dict)
    identical: dict = field(default_factory=dict)


def _codes(values, empty_is_none: bool) -> np.ndarray:
    """Integer codes of a column of names (>= 0); with `empty_is_none`, "" is -1."""
    values = np.asarray(values, dtype=object).astype(str)
    codes = np.unique(values, return_inverse=True)[1].astype(np.int64)
    return np.where(values == "", -1, codes) if empty_is_none else codes


def _matching(a: np.ndarray, b: np.ndarray, within: bool) -> int:
    """Pairs with equal codes (>= 0): between rows coded `a` and rows coded `b`, or among the
    rows coded `a` (`within`)."""
    a = a[a >= 0]
    if within:
        counts = np.bincount(a) if len(a) else np.zeros(0, dtype=np.int64)
        return int((counts * (counts - 1) // 2).sum())
    b = b[b >= 0]
    size = max(a.max(initial=-1), b.max(initial=-1)) + 1
    return int((np.bincount(a, minlength=size) * np.bincount(b, minlength=size)).sum())


class _Tally:
    """Counts every pair offered and keeps the LISTED_PAIRS best (leaks first, then nearest)."""

    def __init__(self, split: np.ndarray, group: np.ndarray):
        self.split, self.group = split, group
        self.counts = {"pairs": 0, "identical": 0, "cross_split": 0, "cross_group": 0}
        self.kept = np.zeros((0, 3))

    def count_pairs(self, i: np.ndarray, j: np.ndarray, identical: bool = False) -> None:
        """Counts explicit pairs (i[x], j[x])."""
        gi, gj = self.group[i], self.group[j]
        self.counts["pairs"] += len(i)
        self.counts["identical"] += len(i) if identical else 0
        self.counts["cross_split"] += int((self.split[i] != self.split[j]).sum())
        self.counts["cross_group"] += int(((gi >= 0) & (gj >= 0) & (gi != gj)).sum())

    def add_product(self, left, right, dist, within: bool) -> None:
        """Counts every pair of left x right (or left's own pairs, `within`: identical rows at
        distance 0) from their split and group sizes, and offers at most LISTED_PAIRS of them
        per pair of split values, so the leaks among them are never crowded out of the list."""
        total = len(left) * (len(left) - 1) // 2 if within else len(left) * len(right)
        sl, sr = self.split[left], self.split[right]
        gl, gr = self.group[left], self.group[right]
        grouped_l, grouped_r = int((gl >= 0).sum()), int((gr >= 0).sum())
        grouped = grouped_l * (grouped_l - 1) // 2 if within else grouped_l * grouped_r
        self.counts["pairs"] += total
        self.counts["identical"] += total if within else 0
        self.counts["cross_split"] += total - _matching(sl, sr, within)
        self.counts["cross_group"] += grouped - _matching(gl, gr, within)
        for a in np.unique(sl):
            for b in np.unique(sr):
                if within and b < a:
                    continue
                rows_a, rows_b, d = left[sl == a], right[sr == b], dist[sr == b]
                if within and a == b:  # the first rows' own pairs, up to the cap
                    q = min(len(rows_a), int(np.sqrt(2 * LISTED_PAIRS)) + 2)
                    i, j = np.triu_indices(q, 1)
                    i, j = rows_a[i[:LISTED_PAIRS]], rows_a[j[:LISTED_PAIRS]]
                    self.offer(i, j, np.zeros(len(i)))
                    continue
                flat = np.arange(min(LISTED_PAIRS, len(rows_a) * len(rows_b)))
                i, j = rows_a[flat // len(rows_b)], rows_b[flat % len(rows_b)]
                self.offer(np.minimum(i, j), np.maximum(i, j), d[flat % len(rows_b)])

    def offer(self, i, j, dist) -> None:
        """Candidates for the listing (already counted)."""
        if not len(i):
            return
        pool = np.vstack([self.kept, np.column_stack([i, j, dist]).astype(np.float64)])
        if len(pool) > 2 * LISTED_PAIRS:
            pool = pool[self._order(pool)[:LISTED_PAIRS]]
        self.kept = pool

    def _order(self, pairs: np.ndarray) -> np.ndarray:
        i, j = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
        cross_split = self.split[i] != self.split[j]
        cross_group = (self.group[i] >= 0) & (self.group[j] >= 0) & (self.group[i] != self.group[j])
        return np.lexsort((pairs[:, 2], ~cross_group, ~cross_split))

    def listed(self) -> np.ndarray:
        return self.kept[self._order(self.kept)[:LISTED_PAIRS]]


class _Links:
    """The edges of the suggested groups, folded into one edge per row (to the first row of
    its component) whenever they pile up, so memory stays O(N) however many pairs there are."""

    def __init__(self, n: int):
        self.n, self.parts, self.size = n, [], 0

    def add(self, i, j) -> None:
        self.parts.append(np.column_stack([i, j]).astype(np.int64))
        self.size += len(i)
        if self.size > max(4 * self.n, 1 << 22):
            self.fold()

    def fold(self) -> np.ndarray:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        edges = np.concatenate(self.parts) if self.parts else np.zeros((0, 2), dtype=np.int64)
        graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])),
                           shape=(self.n, self.n))
        label = connected_components(graph, directed=False)[1]
        first = np.full(label.max(initial=-1) + 1, self.n)
        np.minimum.at(first, label, np.arange(self.n))
        rows = np.flatnonzero(first[label] != np.arange(self.n))
        self.parts = [np.column_stack([rows, first[label[rows]]])]
        self.size = len(rows)
        return self.parts[0]


def identical_sets(digests) -> np.ndarray:
    """(N,) the set of each row: rows with equal digests (identical stored vectors) share one."""
    if not len(digests):
        return np.zeros(0, dtype=np.int64)
    words = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), -1)
    return np.unique(words, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


def _rows_of_sets(set_of: np.ndarray, sets: np.ndarray, size: int) -> np.ndarray:
    """(len(sets), size) the rows of each of `sets` (all of that size), ascending."""
    chosen = np.flatnonzero(np.isin(set_of, sets))
    return chosen[np.lexsort((chosen, set_of[chosen]))].reshape(len(sets), size)


def _full_lists(graph, threshold: float, n: int) -> np.ndarray:
    """(N,) rows whose k-th neighbour is still at or under the threshold: their lists may
    leave near-duplicates out."""
    if not graph.k or graph.k >= n - 1:
        return np.zeros(n, dtype=bool)
    return (graph.distances[:, -1] <= threshold) & (graph.indices[:, -1] >= 0)


def _within(prepared, queries: np.ndarray, threshold: float):
    """Yields (query rows, other rows, distances) of every pair at or under the threshold
    between a query row and any other row, a block of rows at a time (exact)."""
    n, floor = int(prepared.shape[0]), np.float32(1.0 - threshold)
    for a in range(0, len(queries), BLOCK_ROWS):
        q = queries[a:a + BLOCK_ROWS]
        left = np.asarray(prepared[q], dtype=np.float32)
        for c in range(0, n, BLOCK_ROWS):
            sims = left @ np.asarray(prepared[c:c + BLOCK_ROWS], dtype=np.float32).T
            r, col = np.nonzero(sims >= floor)
            keep = col + c != q[r]
            r, col = r[keep], col[keep]
            yield q[r], col + c, np.clip(1.0 - sims[r, col].astype(np.float64), 0.0, 2.0)


def _search_wider(prepared, reps, threshold, set_of, set_size, full_set, tally, links):
    """Pass 3 of the module docstring: each rep's pairs with every row outside its set, once
    (a pair of two searched sets from the lower set only), times the rows of its set."""
    spread: dict[int, list] = {}  # set of several rows -> its rep's (rows, distances) found
    for q, j, d in _within(prepared, reps, threshold):
        a, b = set_of[q], set_of[j]
        keep = (a != b) & (~full_set[b] | (a < b))
        q, j, d, a = q[keep], j[keep], d[keep], a[keep]
        links.add(q, j)
        one = set_size[a] == 1
        tally.count_pairs(q[one], j[one])
        tally.offer(np.minimum(q[one], j[one]), np.maximum(q[one], j[one]), d[one])
        for s in np.unique(a[~one]).tolist():
            spread.setdefault(s, []).append((j[a == s], d[a == s]))
    for s, found in spread.items():
        tally.add_product(np.flatnonzero(set_of == s), np.concatenate([f[0] for f in found]),
                          np.concatenate([f[1] for f in found]), within=False)


SMALL_SET = 64  # sets of up to this many identical rows are enumerated pair by pair


def find_pairs(graph, threshold: float, digests, splits, groups, prepare) -> PairFindings:
    """Every pair at or under `threshold` (see the module docstring).

    Args:
        graph: the store's `NeighbourGraph`.
        threshold: the near-duplicate cosine distance.
        digests: each row's digest (equal = identical stored vectors).
        splits, groups: each row's split and group name ("" = no group).
        prepare: callable() -> the prepared rows (called only for a wider search).
    """
    n = len(digests)
    tally = _Tally(_codes(splits, False), _codes(groups, True))
    links = _Links(n)
    set_of = identical_sets(digests)
    set_size = np.bincount(set_of) if n else np.zeros(0, dtype=np.int64)
    first = np.full(len(set_size), n)
    np.minimum.at(first, set_of, np.arange(n))
    shared = np.flatnonzero(set_size[set_of] >= 2) if n else np.zeros(0, dtype=np.int64)
    links.add(shared, first[set_of[shared]])
    for size in np.unique(set_size[(set_size >= 2) & (set_size <= SMALL_SET)]).tolist():
        rows = _rows_of_sets(set_of, np.flatnonzero(set_size == size), size)
        i, j = (rows[:, t].ravel() for t in np.triu_indices(size, 1))
        tally.count_pairs(i, j, identical=True)
        tally.offer(i, j, np.zeros(len(i)))
    for s in np.flatnonzero(set_size > SMALL_SET).tolist():
        rows = np.flatnonzero(set_of == s)
        tally.add_product(rows, rows, np.zeros(len(rows)), within=True)

    pairs = graph.pairs(threshold)
    i, j = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    links.add(i, j)
    full_set = np.zeros(len(set_size), dtype=bool)
    full_set[set_of[_full_lists(graph, threshold, n)]] = True
    reps = first[np.flatnonzero(full_set)]
    searched = bool(len(reps)) and len(reps) * n <= WIDER_SEARCH_ROW_PAIRS
    keep = set_of[i] != set_of[j]
    if searched:  # pairs with a row of a searched set come from the search, once
        keep &= ~full_set[set_of[i]] & ~full_set[set_of[j]]
    tally.count_pairs(i[keep], j[keep])
    tally.offer(i[keep], j[keep], pairs[keep, 2])
    if searched:
        _search_wider(prepare(), reps, threshold, set_of, set_size, full_set, tally, links)

    listed = tally.listed()
    cut = {}
    if len(listed) < tally.counts["pairs"]:
        cut.update(listing_cap=LISTED_PAIRS, pairs_not_listed=tally.counts["pairs"] - len(listed))
    if len(reps) and not searched:
        cut.update(rows_cut_at_k=int(full_set[set_of].sum()), graph_k=graph.k,
                   wider_search_row_pairs=int(len(reps)) * n,
                   wider_search_limit=WIDER_SEARCH_ROW_PAIRS)
    largest = int(np.argmax(set_size)) if len(shared) else -1
    identical = {"sets": int((set_size >= 2).sum()), "rows": int(len(shared)),
                 "largest": int(set_size[largest]) if largest >= 0 else 0,
                 "largest_rows": np.flatnonzero(set_of == largest)[:5].tolist()}
    return PairFindings(listed, tally.counts, links.fold(), cut, identical)


def identical_warning(identical: dict, n: int) -> str | None:
    """One line when one vector is shared by many rows (blank images, a broken decoder)."""
    largest = identical["largest"]
    if largest < 3 or largest < IDENTICAL_WARNING_SHARE * n:
        return None
    return (f"warning: {largest:,} of {n:,} rows hold the same vector, bit for bit (they are "
            f"listed as exact duplicates); blank or identical images, or a decoder or backbone "
            f"that gives every file the same output, look like this: open a few of them "
            f"(identical_vectors in summary.json names some)")


def cut_warnings(cut: dict, counts: dict) -> list[str]:
    """One line per cut: pairs left out of duplicates.csv, rows whose pairs stop at k."""
    lines = []
    if "rows_cut_at_k" in cut:
        lines.append(f"warning: {cut['rows_cut_at_k']:,} row(s) have more near-duplicates than "
                     f"the {cut['graph_k']} nearest neighbours the graph keeps, and searching "
                     f"past those would compare {cut['wider_search_row_pairs']:,} row pairs "
                     f"(over {cut['wider_search_limit']:,}); their pairs stop at {cut['graph_k']} "
                     "per row, so the pair counts are at least these; raise --graph-neighbours "
                     "to count more")
    if "pairs_not_listed" in cut:
        lines.append(f"warning: duplicates.csv lists {cut['listing_cap']:,} of "
                     f"{counts['pairs']:,} near-duplicate pairs (leaks first); summary.json "
                     "counts all of them and suggested_groups.csv links them all")
    return lines
