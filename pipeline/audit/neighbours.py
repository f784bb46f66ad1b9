"""Exact nearest neighbours and near-duplicate pairs in row blocks, never an N x N matrix.

Vectors are mean-centred (optionally L2-normalised first) and compared by cosine distance,
1 - cos. Centring matters: raw CNN vectors are all positive, so every pair has a high cosine and
duplicates hide among ordinary neighbours; after centring, a re-encoded copy of a photo sits
near 0 and other photos of the same class far above it.

The scan walks the upper triangle of block pairs (each block pair once, its transpose serving
the other side), so it does half the multiply-adds of a plain all-against-all search and holds
at most two `block_rows` x D blocks and one `block_rows` x `block_rows` similarity block, plus
(N, k) neighbour lists and the pairs found.

Usage:
    prepared = prepare_vectors(store_features, l2_normalize=False)
    scan = scan_neighbours(prepared, k=5, threshold=0.15)
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.audit.passes import bar

BLOCK_ROWS = 2048  # 16 MB similarity block; BLAS runs near its peak at this size


@dataclass
class NeighbourScan:
    """What one pass over all block pairs found.

    Attributes:
        knn_distance: (N, k) cosine distances to each row's k nearest other rows, ascending.
        knn_index: (N, k) their row indices.
        pairs: (P, 3) float64 rows (i, j, distance), i < j, every pair at or under the threshold.
        truncated: True when more than `max_pairs` pairs were under the threshold.
    """

    knn_distance: np.ndarray
    knn_index: np.ndarray
    pairs: np.ndarray
    truncated: bool


def _blocks(n: int, rows: int):
    return [(a, min(a + rows, n)) for a in range(0, n, rows)]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in float64 (vectors of a random-weight network can be ~1e-20,
    whose squares underflow float32); all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


class RowFile:
    """(N, D) float32 rows in a scratch file, written once in order and read back with pread.

    Not through a memory map: mapped pages count in the process's resident set as long as
    they are mapped (a million 2048-d rows: 8 GB), and a page fault maps the cached pages
    around it too. Read with pread, resident memory is what the caller keeps, whatever N is.
    Slices and index arrays work as on an array (`rows[a:b]`, `rows[[3, 1]]`).
    """

    def __init__(self, n: int, dim: int, scratch: Path | None = None):
        self._handle = tempfile.NamedTemporaryFile(dir=scratch, suffix=".audit.f32", delete=True)
        self.shape, self.dtype, self._written = (n, dim), np.dtype(np.float32), 0

    def write(self, block: np.ndarray) -> None:
        """Appends rows (written with file writes, not through a map: no resident pages)."""
        block = np.ascontiguousarray(block, dtype=np.float32)
        self._handle.write(block.tobytes())
        self._written += len(block)
        if self._written == self.shape[0]:
            self._handle.flush()

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if not self.shape[0] or not self.shape[1]:
            return np.zeros((0, self.shape[1]), dtype=np.float32)[index]
        if not isinstance(index, slice):
            return self._scattered(np.asarray(index, dtype=np.int64))
        start, stop, step = index.indices(self.shape[0])
        if step != 1:
            return self._scattered(np.arange(start, stop, step))
        out = np.empty((max(stop - start, 0), self.shape[1]), dtype=np.float32)
        self._read_into(out, start)
        return out

    def _read_into(self, out: np.ndarray, first: int) -> None:
        """Fills `out` with the rows from `first` on (large reads in pieces the OS takes)."""
        view, offset = memoryview(out.reshape(-1)).cast("B"), first * self.shape[1] * 4
        done = 0
        while done < len(view):
            got = os.preadv(self._handle.fileno(), [view[done:done + (1 << 30)]], offset + done)
            if got <= 0:
                raise OSError(f"the audit's scratch file ended early ({self._handle.name})")
            done += got

    def _scattered(self, index: np.ndarray) -> np.ndarray:
        """Rows at scattered positions, read with pread (runs of adjacent rows at once).

        Not through a map: a page fault maps the cached pages around it too, so rows spread
        over the file would put most of the file in the resident set."""
        n, dim = self.shape
        index = np.where(index < 0, index + n, index)
        if len(index) and (index.min() < 0 or index.max() >= n):
            raise IndexError("row index out of range")
        wanted, inverse = np.unique(index, return_inverse=True)
        out = np.empty((len(wanted), dim), dtype=np.float32)
        breaks = np.flatnonzero(np.diff(wanted) != 1) + 1
        for run in np.split(np.arange(len(wanted)), breaks):
            if len(run):
                self._read_into(out[run[0]:run[0] + len(run)], int(wanted[run[0]]))
        return out[inverse.reshape(index.shape)]


def prepare_vectors(features, l2_normalize: bool = False, block_rows: int = 2048,
                    memory_limit_mb: int = 2048, scratch: Path | None = None):
    """Mean-centred, unit-length float32 rows, plus a digest of each raw row.

    Args:
        features: (N, ...) array-like (an h5py dataset works): rows are read in blocks.
        l2_normalize: scale each raw vector to unit length before centring.
        block_rows: rows read at a time.
        memory_limit_mb: above this the rows go to a scratch file (a `RowFile`), so the
            audit's resident memory stays bounded, not growing with N.
        scratch: folder of that scratch file (default: the system's temporary folder).

    Returns:
        (prepared (N, D) float32 array or `CentredRows`, raw digests as a list of bytes,
        mean (D,)).
    """
    digests, mean, kept = read_pass(features, l2_normalize, block_rows, memory_limit_mb,
                                    scratch)
    return centred(kept, mean), digests, mean


def _dim(features) -> int:
    return int(np.prod(features.shape[1:])) if features.shape[0] else 0


def read_pass(features, l2_normalize: bool = False, block_rows: int = 2048,
              memory_limit_mb: int = 2048, scratch: Path | None = None,
              progress: bool = False):
    """The one pass over the stored rows: (a digest of each stored row (equal digests =
    identical vectors), the mean of the (optionally L2-normalised) rows, those rows kept:
    an array, or a `RowFile` above `memory_limit_mb`)."""
    n, dim = int(features.shape[0]), _dim(features)
    big = n * dim * 4 > memory_limit_mb * (1 << 20)
    kept = RowFile(n, dim, scratch) if big else np.empty((n, dim), dtype=np.float32)
    total = np.zeros(dim, dtype=np.float64)
    digests: list = []
    with bar(n, "read and digest", progress) as progress_bar:
        for a, b in _blocks(n, block_rows):
            raw = np.asarray(features[a:b], dtype=np.float32).reshape(b - a, dim)
            digests += [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in raw]
            rows = _unit_rows(raw).astype(np.float32) if l2_normalize else raw
            total += rows.sum(axis=0, dtype=np.float64)
            if big:
                kept.write(rows)
            else:
                kept[a:b] = rows
            progress_bar.update(b - a)
    return digests, total / max(n, 1), kept


CENTRE_ROWS = 1024  # rows centred at a time: float64 working copies of them stay small


def _centre(rows: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """`rows` (float32) centred and scaled to unit length in place, a few rows at a time: the
    float64 working copies of a whole 1 GB read would be 4 GB more.
    A row equal to the mean has no direction: it stays zero (distance 1 to everything)."""
    for a, b in _blocks(len(rows), CENTRE_ROWS):
        rows[a:b] = _unit_rows(rows[a:b] - mean)
    return rows


class CentredRows:
    """The rows of a `RowFile`, centred and scaled to unit length as they are read: the
    prepared rows without a second copy on disk. Slices and index arrays work as on an
    array."""

    def __init__(self, rows: RowFile, mean: np.ndarray):
        self.rows, self.mean = rows, mean
        self.shape, self.dtype = rows.shape, np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        raw = self.rows[index]  # a fresh array: centred where it lies
        _centre(raw.reshape(-1, self.shape[1]), self.mean)
        return raw


def centred(kept, mean: np.ndarray):
    """The prepared rows from `read_pass`'s kept rows: an array centred in place, or a
    `CentredRows` view of a `RowFile`."""
    if isinstance(kept, RowFile):
        return CentredRows(kept, mean)
    return _centre(kept, mean)


def _merge_top(best_sim, best_idx, sims, offset, k):
    """Keeps the k highest similarities per row among the old ones and this block's."""
    if sims.shape[1] > k:
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        cand_sim = np.take_along_axis(sims, part, axis=1)
    else:
        part = np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
        cand_sim = sims
    all_sim = np.concatenate([best_sim, cand_sim], axis=1)
    all_idx = np.concatenate([best_idx, part + offset], axis=1)
    keep = np.argpartition(-all_sim, k - 1, axis=1)[:, :k]
    return np.take_along_axis(all_sim, keep, axis=1), np.take_along_axis(all_idx, keep, axis=1)


def scan_neighbours(prepared, k: int = 5, threshold: float | None = 0.15,
                    block_rows: int = BLOCK_ROWS, max_pairs: int = 1_000_000,
                    progress=None) -> NeighbourScan:
    """Exact k nearest neighbours of every row and every pair within `threshold`.

    Args:
        prepared: (N, D) unit-length rows from `prepare_vectors` (array or `RowFile`).
        k: neighbours kept per row (the row itself excluded); capped at N - 1.
        threshold: cosine distance at or under which a pair is recorded (None: no pairs,
            the neighbour lists only).
        block_rows: rows per block; memory is about 2 * block_rows * D * 4 + block_rows^2 * 4 B.
        max_pairs: stop recording pairs beyond this many (the scan itself finishes).
        progress: optional callable(done_blocks, total_blocks).

    Returns:
        A `NeighbourScan`.
    """
    n = int(prepared.shape[0])
    k = max(0, min(k, n - 1))
    best_sim = np.full((n, k), -np.inf, dtype=np.float32)
    best_idx = np.full((n, k), -1, dtype=np.int64)
    pairs, n_pairs, truncated = [], 0, False
    blocks = _blocks(n, block_rows)
    total = len(blocks) * (len(blocks) + 1) // 2
    done = 0
    floor = np.float32(1.0 - threshold) if threshold is not None else None
    for bi, (a, b) in enumerate(blocks):
        left = np.ascontiguousarray(prepared[a:b])
        for c, d in blocks[bi:]:
            right = left if c == a else np.ascontiguousarray(prepared[c:d])
            sims = left @ right.T
            if c == a:
                np.fill_diagonal(sims, -np.inf)  # a row is not its own neighbour
            if k:
                best_sim[a:b], best_idx[a:b] = _merge_top(best_sim[a:b], best_idx[a:b], sims, c, k)
                if c != a:
                    best_sim[c:d], best_idx[c:d] = _merge_top(best_sim[c:d], best_idx[c:d],
                                                              sims.T, a, k)
            if floor is not None and not truncated:
                rows, cols = np.nonzero(sims >= floor)
                if c == a:
                    keep = cols > rows
                    rows, cols = rows[keep], cols[keep]
                if len(rows):
                    pairs.append(np.column_stack([rows + a, cols + c,
                                                  1.0 - sims[rows, cols].astype(np.float64)]))
                    n_pairs += len(rows)
                    truncated = n_pairs > max_pairs
            done += 1
            if progress:
                progress(done, total)
    order = np.argsort(-best_sim, axis=1)
    best_sim = np.take_along_axis(best_sim, order, axis=1)
    best_idx = np.take_along_axis(best_idx, order, axis=1)
    found = np.concatenate(pairs) if pairs else np.zeros((0, 3))
    if truncated:
        found = found[:max_pairs]
    # Clipped: rounding can give 1 - cos a hair below 0 for identical rows.
    return NeighbourScan(np.clip(1.0 - best_sim.astype(np.float64), 0.0, 2.0), best_idx,
                         found, truncated)
