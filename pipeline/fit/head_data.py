"""Feeding a head from the feature store: arrays in memory, or batches streamed from HDF5.

Streaming must not read rows one by one: the store is sorted by split and class, and a random
row costs a whole HDF5 chunk. So rows are grouped into chunk-aligned blocks; each epoch visits
the blocks in a fresh random order, reads a window of blocks at once (contiguous reads) and
shuffles the rows inside the window. Batches mix classes, and memory stays at one window.

Usage:
    feed = StoreBatches(store, rows, batch_size=32, shuffle=True, seed=0, sigmoid=False)
    model.fit(feed, ...)
"""

from __future__ import annotations

import threading

import keras
import numpy as np


def targets(labels: np.ndarray, sigmoid: bool) -> np.ndarray:
    """Labels as the loss expects them: (n, 1) floats for one sigmoid unit, else int indices."""
    return labels.astype(np.float32)[:, None] if sigmoid else labels.astype(np.int64)


def vector_bytes(store, n_rows: int) -> int:
    """Bytes that `n_rows` vectors take in memory as float32."""
    return int(n_rows) * int(np.prod(store.feature_shape, dtype=np.int64)) * 4


def block_rows_of(store) -> int:
    chunks = store.file["features"].chunks
    return int(chunks[0]) if chunks else 256


def split_blocks(rows: np.ndarray, block_rows: int) -> list[np.ndarray]:
    """Sorted `rows` cut wherever they cross a chunk boundary of `block_rows` rows."""
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    if not len(rows):
        return []
    cuts = np.flatnonzero(np.diff(rows // block_rows)) + 1
    return np.split(rows, cuts)


def read_block(store, block: np.ndarray) -> np.ndarray:
    """Features of the sorted rows in `block`, read as one contiguous slice of the store."""
    lo, hi = int(block[0]), int(block[-1])
    data = store.read_rows(np.arange(lo, hi + 1))
    return data[block - lo]


class StoreBatches(keras.utils.PyDataset):
    """Batches of (features, targets) read from an open store, never the whole split at once.

    Args:
        store: an open `FeatureStore`.
        rows: row indices to serve.
        batch_size: rows per batch.
        shuffle: new random block order and in-window shuffle each epoch (training); False
            serves the rows in ascending order (evaluation).
        seed: base seed of the shuffling.
        sigmoid: targets for one sigmoid unit (see `targets`).
        window_blocks: blocks read together; a window is what sits in memory.
    """

    def __init__(self, store, rows, batch_size: int, shuffle: bool, seed: int = 0,
                 sigmoid: bool = False, window_blocks: int = 32):
        super().__init__(workers=1, use_multiprocessing=False)
        self.store = store
        self.labels = store.full_column("labels")  # augmented view rows included
        self.blocks = split_blocks(rows, block_rows_of(store))
        self.n = int(sum(len(b) for b in self.blocks))
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.sigmoid = sigmoid
        self.window_blocks = int(window_blocks)
        self.epoch = 0
        self._lock = threading.Lock()
        self._plan()

    def _plan(self) -> None:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.blocks)) if self.shuffle else np.arange(len(self.blocks))
        self.windows = [order[i:i + self.window_blocks]
                        for i in range(0, len(order), self.window_blocks)]
        sizes = [sum(len(self.blocks[b]) for b in w) for w in self.windows]
        self.window_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._cached = (None, None, None)

    def _window(self, w: int):
        if self._cached[0] != w:
            blocks = [self.blocks[b] for b in self.windows[w]]
            rows = np.concatenate(blocks)
            x = np.concatenate([read_block(self.store, b) for b in blocks])
            if self.shuffle:
                perm = np.random.default_rng([self.seed, self.epoch, w + 1]).permutation(len(rows))
                rows, x = rows[perm], x[perm]
            self._cached = (w, rows, x)
        return self._cached[1], self._cached[2]

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def batch_rows_and_features(self, index: int):
        """Row indices and features of batch `index` (may span two windows)."""
        a, b = index * self.batch_size, min(self.n, (index + 1) * self.batch_size)
        parts_rows, parts_x = [], []
        with self._lock:
            w = int(np.searchsorted(self.window_starts, a, side="right") - 1)
            while a < b:
                rows, x = self._window(w)
                start, stop = a - self.window_starts[w], min(b, self.window_starts[w + 1])
                take = slice(int(start), int(stop - self.window_starts[w]))
                parts_rows.append(rows[take])
                parts_x.append(x[take])
                a, w = int(stop), w + 1
        return np.concatenate(parts_rows), np.concatenate(parts_x)

    def __getitem__(self, index: int):
        rows, x = self.batch_rows_and_features(index)
        return x, targets(self.labels[rows], self.sigmoid)

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.epoch += 1
            self._plan()


class ArrayBatches(keras.utils.PyDataset):
    """Batches of in-memory (features, targets), reshuffled each epoch by a generator of their
    own: training needs neither TensorFlow's global seed nor NumPy's global state, and every
    batch reaches the traced step with the same unknown batch size (no retracing per size)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool,
                 seed: int = 0, weights: np.ndarray | None = None):
        super().__init__(workers=1, use_multiprocessing=False)
        self.x, self.y = np.asarray(x), np.asarray(y)
        # Per-row weights (class weights on early-stopping rows, so that the loss they watch
        # is the one training minimises); None: every row counts once.
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float32)
        self.batch_size, self.shuffle, self.seed = int(batch_size), shuffle, int(seed)
        self.epoch = 0
        self._order = self._plan()

    def _plan(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.x))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))

    def __len__(self) -> int:
        return (len(self.x) + self.batch_size - 1) // self.batch_size

    def __getitem__(self, index: int):
        take = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        if self.weights is not None:
            return self.x[take], self.y[take], self.weights[take]
        return self.x[take], self.y[take]

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.epoch += 1
            self._order = self._plan()


class InMemoryVectors:
    """The vectors of the given rows loaded once (one contiguous read), looked up by row."""

    def __init__(self, store, rows: np.ndarray):
        self.rows = np.unique(np.asarray(rows, dtype=np.int64))
        # (Not across augmented views: the slice would read the views of validation and
        # test files too, which stage two never reads.)
        if len(self.rows) and self.rows[-1] - self.rows[0] + 1 <= 2 * len(self.rows) and \
                self.rows[-1] < len(store):
            # Mostly contiguous: one slice read beats HDF5 fancy indexing by far.
            lo = int(self.rows[0])
            self.x = store.read_rows(np.arange(lo, int(self.rows[-1]) + 1))[self.rows - lo]
        else:
            self.x = store.read_rows(self.rows)

    def get(self, rows: np.ndarray) -> np.ndarray:
        return self.x[np.searchsorted(self.rows, rows)]
