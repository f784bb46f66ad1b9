"""The neighbour engines behind `audit --neighbours-engine`: registered objects, one interface.

Each engine takes the prepared rows (mean-centred, unit length: `neighbours.prepare_vectors`)
and returns every row's k nearest other rows with their cosine distances, ascending.

- `exact`: the block scan of `neighbours.scan_neighbours`, the reference. Its cost grows with
  N^2 (50k x 2048: about a minute on two cores).
- `ivf` and `hnsw` (pipeline/audit/approximate.py): an index on PCA-reduced rows proposes
  candidates, and each candidate's exact distance on the full rows decides the lists.
- `auto`: exact up to `AUTO_EXACT_ROWS` rows, where it is still fast, ivf above.

The search of every engine can be sharded (`audit --cluster ray`, pipeline/audit/cluster.py):
each shard searches a block of query rows against all rows (the index), and the lists are put
together in row order, so a sharded search finds the lists one process finds.

    engine = neighbour_engine("auto")
    indices, distances = engine.search(prepared, k=10, pca_width=0)
    indices, distances, profile = engine.build_graph(prepared, k=10)   # + the threshold's profile

A new engine is a subclass of `NeighbourEngine` passed to `register_engine`.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import ConfigError
from pipeline.audit import approximate
from pipeline.audit.neighbours import BLOCK_ROWS, _merge_top, scan_neighbours
from pipeline.audit.passes import PassTimes, bar
from pipeline.audit.threshold import exact_profile

# The exact scan's cost is N^2: 50k rows took about a minute on two cores, 100k four times
# that, while an index stays within minutes at a million. Above this many rows `auto` uses ivf.
AUTO_EXACT_ROWS = 50_000

ENGINES: dict[str, "NeighbourEngine"] = {}


class NeighbourEngine:
    """Finds each row's k nearest other rows by cosine distance on unit-length rows."""

    name = ""
    description = ""
    uses_pca = False  # whether --pca-width applies

    def parameters(self) -> dict:
        """The settings of this engine that change the graph it finds (part of its cache key)."""
        return {}

    def width(self, pca_width: int, dim: int) -> int:
        """The PCA width the engine's index uses for `--pca-width pca_width` (0: none)."""
        return 0

    def resolve(self, n_rows: int) -> "NeighbourEngine":
        """The engine that actually runs for a store of `n_rows` rows (itself, except auto)."""
        return self

    def search(self, prepared, k: int, pca_width: int = 0, progress: bool = True,
               shards=None):
        """Returns ((N, k) int64 indices, (N, k) float64 distances), ascending by distance.

        `shards`: a `cluster.Shards` that runs blocks of the search elsewhere (None: here)."""
        raise NotImplementedError

    def build_graph(self, prepared, k: int, pca_width: int = 0, progress: bool = True,
                    shards=None, times=None, index_rows=None):
        """(indices, distances, the threshold's `NeighbourProfile`) for the graph cache.

        `times`: a `PassTimes` the engine's passes are added to; `index_rows`: the rows its
        index would hold (`approximate.IndexRows` at `width(pca_width)`), when already made.
        This default searches, then reads the profile's sampled rows against every row."""
        indices, distances = self.search(prepared, k, pca_width, progress, shards)
        return indices, distances, exact_profile(prepared)


def register_engine(engine: NeighbourEngine) -> NeighbourEngine:
    ENGINES[engine.name] = engine
    return engine


def neighbour_engine(name: str) -> NeighbourEngine:
    try:
        return ENGINES[name]
    except KeyError:
        raise ConfigError(f"unknown --neighbours-engine {name!r}; choose one of "
                          f"{', '.join(sorted(ENGINES))}") from None


def exact_rows(prepared, a: int, b: int, k: int):
    """The exact scan's lists of rows a..b (whole scan blocks) against every row: one shard.

    Every block pair is multiplied as `scan_neighbours` multiplies it (the lower block on the
    left) and merged in the same order, so the lists are the ones the whole scan finds."""
    n = int(prepared.shape[0])
    k = max(0, min(k, n - 1))
    best_sim = np.full((b - a, k), -np.inf, dtype=np.float32)
    best_idx = np.full((b - a, k), -1, dtype=np.int64)
    for qa in range(a, b, BLOCK_ROWS):
        qb = min(qa + BLOCK_ROWS, n)
        mine = np.ascontiguousarray(prepared[qa:qb])
        rows = slice(qa - a, qb - a)
        for c in range(0, n, BLOCK_ROWS):
            d = min(c + BLOCK_ROWS, n)
            if c < qa:  # as the scan made it: that block on the left, these rows on the right
                sims = (np.ascontiguousarray(prepared[c:d]) @ mine.T).T
            else:
                right = mine if c == qa else np.ascontiguousarray(prepared[c:d])
                sims = mine @ right.T
                if c == qa:
                    np.fill_diagonal(sims, -np.inf)
            if k:
                best_sim[rows], best_idx[rows] = _merge_top(best_sim[rows], best_idx[rows],
                                                            sims, c, k)
    order = np.argsort(-best_sim, axis=1)
    best_sim = np.take_along_axis(best_sim, order, axis=1)
    return (np.take_along_axis(best_idx, order, axis=1),
            np.clip(1.0 - best_sim.astype(np.float64), 0.0, 2.0))


def _exact_shard(shared, a, b, part, k):
    return exact_rows(shared, a, b, k)


class ExactEngine(NeighbourEngine):
    name = "exact"
    description = "exact block scan (N^2 cost), the reference"

    def search(self, prepared, k, pca_width=0, progress=True, shards=None):
        n = int(prepared.shape[0])
        if shards is not None and shards.remote:
            step = BLOCK_ROWS * max(1, -(-n // (BLOCK_ROWS * shards.parts)))
            parts = shards.map(_exact_shard, prepared, n, step, "neighbours (exact)", k=k)
            return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        with bar(n, "neighbours (exact)", progress) as progress_bar:
            def step(done, total):  # block pairs -> an equivalent count of rows
                progress_bar.update(int(n * done / total) - progress_bar.n)

            scan = scan_neighbours(prepared, k=k, threshold=None, progress=step)
        return scan.knn_index, scan.knn_distance


class IndexEngine(NeighbourEngine):
    """An engine whose faiss index proposes candidates (pipeline/audit/approximate.py)."""

    uses_pca = True
    default_width = 0  # the PCA width with --pca-width 0

    def width(self, pca_width, dim):
        width = pca_width or self.default_width
        return width if 0 < width < dim else 0

    def index(self, rows, k, progress):
        raise NotImplementedError

    def build_graph(self, prepared, k, pca_width=0, progress=True, shards=None, times=None,
                    index_rows=None):
        times = times if times is not None else PassTimes()
        rows = index_rows
        if rows is None:
            with times("PCA"):
                rows = approximate.IndexRows(prepared, self.width(pca_width, prepared.shape[1]),
                                             progress)
        with times("neighbour index"):
            index = self.index(rows, k, progress)
        return approximate.approximate_graph(prepared, rows, index, k, progress, shards, times)

    def search(self, prepared, k, pca_width=0, progress=True, shards=None):
        return self.build_graph(prepared, k, pca_width, progress, shards)[:2]


class IvfEngine(IndexEngine):
    name = "ivf"
    description = ("faiss IVF on PCA-reduced rows (width 128 unless --pca-width) proposes "
                   "candidates, re-scored exactly")
    default_width = 128

    def parameters(self):
        return {"lists": "4 sqrt(N), a power of two", "probes": approximate.IVF_PROBES,
                "train_rows_per_list": approximate.TRAIN_PER_LIST,
                "kmeans_iterations": approximate.KMEANS_ITERATIONS, "storage": "float16",
                "candidates_extra": approximate.CANDIDATES_EXTRA,
                "pca_sample_rows": approximate.PCA_SAMPLE_ROWS}

    def index(self, rows, k, progress):
        return approximate.IvfIndex(rows, progress)


class HnswEngine(IndexEngine):
    name = "hnsw"
    description = "faiss HNSW candidates (on PCA-reduced rows with --pca-width), re-scored exactly"

    def parameters(self):
        return {"M": approximate.HNSW_M, "ef_construction": approximate.HNSW_EF_CONSTRUCTION,
                "ef_search": approximate.HNSW_EF_SEARCH, "storage": "float16",
                "candidates_extra": approximate.CANDIDATES_EXTRA,
                "pca_sample_rows": approximate.PCA_SAMPLE_ROWS,
                "unreachable_rows": "exact scan among them"}

    def index(self, rows, k, progress):
        return approximate.hnsw_index(rows, k, progress)


class AutoEngine(NeighbourEngine):
    name = "auto"
    description = f"exact up to {AUTO_EXACT_ROWS:,} rows, ivf above"
    uses_pca = True

    def resolve(self, n_rows):
        return ENGINES["exact" if n_rows <= AUTO_EXACT_ROWS else "ivf"]

    def search(self, prepared, k, pca_width=0, progress=True, shards=None):
        return self.resolve(int(prepared.shape[0])).search(prepared, k, pca_width, progress,
                                                           shards)

    def build_graph(self, prepared, k, pca_width=0, progress=True, shards=None, times=None,
                    index_rows=None):
        return self.resolve(int(prepared.shape[0])).build_graph(
            prepared, k, pca_width, progress, shards, times, index_rows)


for _engine in (ExactEngine(), IvfEngine(), HnswEngine(), AutoEngine()):
    register_engine(_engine)
