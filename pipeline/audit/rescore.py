"""Exact distances of an approximate index's candidates, read in a few sequential passes.

An index on reduced vectors proposes each row's candidates; the graph keeps their exact cosine
distances on the full prepared rows. Fetched one candidate at a time, a million rows' lists
are tens of millions of scattered reads (minutes even from the page cache). Here every
candidate pair is scored once: the pairs are sorted, a chunk of rows (LEFT_BYTES) is held, the
rows from that chunk on are read block by block in order, and each pair with one row in the
chunk and the other in the block is scored. Memory stays about one chunk; each row is read
about N / (2 x chunk rows) + 1 times, always in order.

    indices, distances = rescore_candidates(prepared, candidates, k)
    sims = exact_similarities(prepared, rows, others)   # any pairs, each scored once
    sims = pair_similarities(prepared, i, j)      # i <= j, sorted (see `unique_pairs`)
"""

from __future__ import annotations

import numpy as np

from pipeline.audit.passes import bar

# The chunk held in memory (256 MiB of float32 rows). A 1 GiB chunk made a million-row audit
# peak at 4.5 GB and 286 s; 256 MiB, 3.3 GB and 399 s (benchmarks/results/audit_scale.csv).
LEFT_BYTES = 256 << 20
BLOCK_ROWS = 8192      # rows read at a time after the chunk
LAYER = 16             # partners per right row in one call of faiss's indexed products
GATHER_BYTES = 256 << 20  # pairs whose rows take less than this are read row by row


def unique_pairs(rows: np.ndarray, others: np.ndarray, n: int):
    """(i, j, inverse): each unordered pair of (rows[x], others[x]) once, i < j, sorted by i then
    j; `inverse` maps every entry to its pair. Entries with other < 0 or other == row are left
    out (inverse -1)."""
    rows, others = np.asarray(rows, np.int64), np.asarray(others, np.int64)
    valid = (others >= 0) & (others != rows)
    key = np.minimum(rows, others) * n + np.maximum(rows, others)
    inverse = np.full(len(rows), -1, dtype=np.int64)
    uniq, inverse[valid] = np.unique(key[valid], return_inverse=True)
    return uniq // n, uniq % n, inverse


def _by_index(left: np.ndarray, right: np.ndarray, row: np.ndarray, other: np.ndarray,
              out: np.ndarray) -> None:
    """out[x] = right[row[x]] . left[other[x]] for pairs sorted by `row`, with faiss's indexed
    inner products: no row is copied, each right row is read once and each left row where a
    pair needs it. Pairs go in layers of LAYER partners per right row (a hub row, in many
    lists, just takes more layers)."""
    import faiss

    first = np.r_[True, row[1:] != row[:-1]]
    rank = np.arange(len(row)) - np.maximum.accumulate(np.where(first, np.arange(len(row)), 0))
    dim = left.shape[1]
    for layer in range(0, int(rank.max(initial=-1)) + 1, LAYER):
        sel = np.flatnonzero((rank >= layer) & (rank < layer + LAYER))
        rows, at = np.unique(row[sel], return_inverse=True)
        x = right if layer == 0 else np.ascontiguousarray(right[rows])
        slot = rows if layer == 0 else np.arange(len(rows))
        ids = np.full((len(x), LAYER), -1, dtype=np.int64)
        ids[slot[at], rank[sel] - layer] = other[sel]
        ip = np.empty(ids.shape, dtype=np.float32)
        faiss.fvec_inner_products_by_idx(faiss.swig_ptr(ip), faiss.swig_ptr(x),
                                         faiss.swig_ptr(left), faiss.swig_ptr(ids), dim,
                                         len(x), LAYER)
        out[sel] = ip[slot[at], rank[sel] - layer]


def pair_similarities(prepared, i: np.ndarray, j: np.ndarray, progress: bool = False,
                      what: str = "exact distances") -> np.ndarray:
    """(P,) float32 cosine similarity of rows i[p] and j[p] of the prepared (unit) rows.

    `i` must be sorted ascending with i[p] <= j[p] (as `unique_pairs` gives them)."""
    n, dim = (int(s) for s in prepared.shape)
    sims = np.empty(len(i), dtype=np.float32)
    if 2 * len(i) * dim * 4 <= GATHER_BYTES:  # few pairs (a few lost rows): read their rows
        involved = np.unique(np.concatenate([i, j]))
        rows = np.asarray(prepared[involved], dtype=np.float32)
        return np.einsum("ij,ij->i", rows[np.searchsorted(involved, i)],
                         rows[np.searchsorted(involved, j)]).astype(np.float32)
    chunk = max(BLOCK_ROWS, LEFT_BYTES // max(dim * 4, 1))
    with bar(len(i), what, progress, unit="pairs") as progress_bar:
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            lo, hi = np.searchsorted(i, [a, b])
            if lo == hi:
                continue
            left = np.ascontiguousarray(prepared[a:b], dtype=np.float32)
            mine = np.arange(lo, hi)
            mine = mine[np.argsort(j[lo:hi], kind="stable")]  # by their other row
            starts = [a, *range(b, n, BLOCK_ROWS)]
            ends = np.searchsorted(j[mine], [*starts, n])
            for t, c in enumerate(starts):
                s, e = ends[t], ends[t + 1]
                if s == e:
                    continue
                d = b if c == a else min(c + BLOCK_ROWS, n)
                right = left if c == a else np.ascontiguousarray(prepared[c:d],
                                                                  dtype=np.float32)
                p = mine[s:e]
                found = np.empty(len(p), dtype=np.float32)
                _by_index(left, right, j[p] - c, i[p] - a, found)
                sims[p] = found
                progress_bar.update(e - s)
    return sims


def top_k(candidates: np.ndarray, sims: np.ndarray, k: int):
    """The k most similar of each row's candidates ((B, C) rows, -inf where dropped), nearest
    first: ((B, k) indices (-1: fewer found), (B, k) distances (2.0 there))."""
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    best = np.take_along_axis(sims, order, axis=1)
    found = np.where(np.isfinite(best), np.take_along_axis(candidates, order, axis=1), -1)
    distances = np.where(np.isfinite(best), np.clip(1.0 - best.astype(np.float64), 0.0, 2.0),
                         2.0)
    if found.shape[1] < k:  # fewer candidates than k
        pad = k - found.shape[1]
        found = np.pad(found, ((0, 0), (0, pad)), constant_values=-1)
        distances = np.pad(distances, ((0, 0), (0, pad)), constant_values=2.0)
    return found.astype(np.int64), distances


def exact_similarities(prepared, rows: np.ndarray, others: np.ndarray, progress: bool = False,
                       what: str = "exact distances") -> np.ndarray:
    """(E,) float32 cosine similarity of each entry's rows[x] and others[x] (each pair scored
    once); -inf where others[x] is -1 or the row itself."""
    n = int(prepared.shape[0])
    i, j, inverse = unique_pairs(rows, others, n)
    sims = pair_similarities(prepared, i, j, progress, what)
    del i, j
    return np.where(inverse >= 0, sims[np.maximum(inverse, 0)], -np.inf).astype(np.float32)


def nearest(candidates: np.ndarray, sims: np.ndarray, k: int):
    """Each row's k most similar candidates ((B, C) rows, their (B, C) similarities), a
    candidate proposed twice counted once: ((B, k) int64 indices, (B, k) float64 distances)."""
    sims = np.array(sims, dtype=np.float32)
    order = np.argsort(candidates, axis=1, kind="stable")
    ordered = np.take_along_axis(candidates, order, axis=1)
    repeat = np.zeros(sims.shape, dtype=bool)
    np.put_along_axis(repeat, order[:, 1:], ordered[:, 1:] == ordered[:, :-1], axis=1)
    sims[repeat] = -np.inf
    return top_k(candidates, sims, k)


def rescore_candidates(prepared, candidates: np.ndarray, k: int, progress: bool = False):
    """Every row's k nearest among its candidates ((N, C) rows, -1: none), by exact distance:
    ((N, k) int64 indices, (N, k) float64 distances), ascending."""
    n, width = candidates.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), width)
    sims = exact_similarities(prepared, rows, candidates.ravel(), progress)
    return nearest(candidates, sims.reshape(n, width), k)
