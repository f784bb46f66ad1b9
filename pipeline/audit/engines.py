"""The neighbour engines behind `audit --neighbours-engine`: registered objects, one interface.

Each engine takes the prepared rows (mean-centred, unit length: `neighbours.prepare_vectors`)
and returns every row's k nearest other rows with their cosine distances, ascending.

- `exact`: the block scan of `neighbours.scan_neighbours`, the reference. Its cost grows with
  N^2 (50k x 2048: about a minute on two cores).
- `hnsw`: a faiss HNSW graph (M = 32) proposes candidates; every candidate is then re-scored
  on the full prepared float32 rows, so each reported distance is exact and only the choice of
  neighbours is approximate. The index stores its vectors as float16, optionally after a PCA
  to `pca_width` dimensions (fitted on a sample of rows), which cuts memory and search time.
- `auto`: exact up to `AUTO_EXACT_ROWS` rows, where it is still fast, hnsw above.

    engine = neighbour_engine("auto")
    indices, distances = engine.search(prepared, k=10, pca_width=0)

A new engine is a subclass of `NeighbourEngine` passed to `register_engine`.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import ConfigError
from pipeline.audit.neighbours import scan_neighbours

# The exact scan's cost is N^2: 50k rows took about a minute on two cores, 100k four times
# that, while HNSW at 100k stays within a few minutes. Above this many rows `auto` uses HNSW.
AUTO_EXACT_ROWS = 50_000
HNSW_M = 32                 # links per node: faiss's usual setting for recall >= 0.99
HNSW_EF_CONSTRUCTION = 80   # build-time beam; higher = better graph, slower build
HNSW_EF_SEARCH = 96         # query-time beam (at least 2 x candidates)
CANDIDATES_EXTRA = 10       # candidates asked beyond k, so re-scoring can re-rank them
QUERY_ROWS = 8192           # rows searched and re-scored per step (bounds the gathered rows)
PCA_SAMPLE_ROWS = 20_000    # rows the PCA is fitted on

ENGINES: dict[str, "NeighbourEngine"] = {}


class NeighbourEngine:
    """Finds each row's k nearest other rows by cosine distance on unit-length rows."""

    name = ""
    description = ""
    uses_pca = False  # whether --pca-width applies

    def parameters(self) -> dict:
        """The settings of this engine that change the graph it finds (part of its cache key)."""
        return {}

    def resolve(self, n_rows: int) -> "NeighbourEngine":
        """The engine that actually runs for a store of `n_rows` rows (itself, except auto)."""
        return self

    def search(self, prepared, k: int, pca_width: int = 0, progress: bool = True):
        """Returns ((N, k) int64 indices, (N, k) float64 distances), ascending by distance."""
        raise NotImplementedError


def register_engine(engine: NeighbourEngine) -> NeighbourEngine:
    ENGINES[engine.name] = engine
    return engine


def neighbour_engine(name: str) -> NeighbourEngine:
    try:
        return ENGINES[name]
    except KeyError:
        raise ConfigError(f"unknown --neighbours-engine {name!r}; choose one of "
                          f"{', '.join(sorted(ENGINES))}") from None


def _bar(total: int, what: str, enabled: bool):
    from tqdm import tqdm

    # On a terminal only (disable=None): a bar in a log or a captured stderr is noise that
    # hides the one `error:` line a failure prints.
    return tqdm(total=total, desc=what, unit="rows", disable=None if enabled else True,
                leave=False, mininterval=1.0)


class ExactEngine(NeighbourEngine):
    name = "exact"
    description = "exact block scan (N^2 cost), the reference"

    def search(self, prepared, k, pca_width=0, progress=True):
        n = int(prepared.shape[0])
        with _bar(n, "neighbours (exact)", progress) as bar:
            def step(done, total):  # block pairs -> an equivalent count of rows
                bar.update(int(n * done / total) - bar.n)

            scan = scan_neighbours(prepared, k=k, threshold=None, progress=step)
        return scan.knn_index, scan.knn_distance


def _pca_basis(prepared, width: int, seed: int = 0) -> np.ndarray:
    """(width, D) top principal directions of up to PCA_SAMPLE_ROWS evenly spread rows (a
    randomized SVD: seconds where a full eigen-decomposition of D x D takes minutes)."""
    from sklearn.utils.extmath import randomized_svd

    n = int(prepared.shape[0])
    take = np.linspace(0, n - 1, min(n, PCA_SAMPLE_ROWS)).astype(np.int64)
    sample = np.asarray(prepared[take], dtype=np.float32)
    sample -= sample.mean(axis=0)
    _, _, vt = randomized_svd(sample, int(width), n_iter=4, random_state=seed)
    return np.ascontiguousarray(vt, dtype=np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


RESCORE_ROWS = 1024  # query rows re-scored at once: 1024 x 21 candidates x 2048 x 4 B = 176 MB


def rescore(prepared, rows: np.ndarray, candidates: np.ndarray, k: int):
    """Exact distances of each row to its candidates; the k nearest (self and -1 dropped).

    Args:
        prepared: the full prepared rows (array or RowFile).
        rows: (B,) the query rows.
        candidates: (B, C) candidate indices (-1: none).
        k: neighbours kept.
    """
    index = np.full((len(rows), k), -1, dtype=np.int64)
    dist = np.full((len(rows), k), 2.0)
    for s in range(0, len(rows), RESCORE_ROWS):
        e = min(s + RESCORE_ROWS, len(rows))
        cand, own = candidates[s:e], rows[s:e]
        safe = np.where(cand >= 0, cand, own[:, None])
        vecs = prepared[safe.ravel()].reshape(*cand.shape, -1)
        sims = np.matmul(vecs, prepared[own][:, :, None])[..., 0].astype(np.float64)
        drop = (cand < 0) | (cand == own[:, None])
        # A candidate proposed twice counts once.
        order = np.argsort(cand, axis=1, kind="stable")
        ordered = np.take_along_axis(cand, order, axis=1)
        np.put_along_axis(drop, order[:, 1:], (ordered[:, 1:] == ordered[:, :-1])
                          | np.take_along_axis(drop, order[:, 1:], axis=1), axis=1)
        sims[drop] = -np.inf
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        sim = np.take_along_axis(sims, top, axis=1)
        found = np.take_along_axis(cand, top, axis=1)
        found[~np.isfinite(sim)] = -1
        index[s:e, :top.shape[1]] = found
        dist[s:e, :top.shape[1]] = np.where(np.isfinite(sim), np.clip(1.0 - sim, 0.0, 2.0), 2.0)
    return index, dist


class HnswEngine(NeighbourEngine):
    name = "hnsw"
    description = "faiss HNSW candidates, re-scored exactly"
    uses_pca = True

    def parameters(self):
        return {"M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION,
                "ef_search": HNSW_EF_SEARCH, "candidates_extra": CANDIDATES_EXTRA,
                "storage": "float16", "pca_sample_rows": PCA_SAMPLE_ROWS,
                "unreachable_rows": "exact scan among them"}

    def search(self, prepared, k, pca_width=0, progress=True):
        import faiss

        n, dim = (int(s) for s in prepared.shape)
        basis = _pca_basis(prepared, pca_width) if 0 < pca_width < dim else None
        width = len(basis) if basis is not None else dim

        def reduced(a, b):
            x = np.ascontiguousarray(prepared[a:b], dtype=np.float32)
            return _unit(x @ basis.T) if basis is not None else x

        # float16 storage halves the index; candidates are re-scored in float32 below.
        index = faiss.IndexHNSWSQ(width, faiss.ScalarQuantizer.QT_fp16, HNSW_M,
                                  faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.train(reduced(0, min(n, PCA_SAMPLE_ROWS)))
        with _bar(n, "neighbour index (hnsw)", progress) as bar:
            for a in range(0, n, QUERY_ROWS):
                b = min(a + QUERY_ROWS, n)
                index.add(reduced(a, b))
                bar.update(b - a)
        index.hnsw.efSearch = max(HNSW_EF_SEARCH, 2 * (k + CANDIDATES_EXTRA))
        wanted = min(n, k + 1 + CANDIDATES_EXTRA)
        indices = np.full((n, k), -1, dtype=np.int64)
        distances = np.full((n, k), 2.0, dtype=np.float64)
        lost = []
        with _bar(n, "neighbour search (hnsw)", progress) as bar:
            for a in range(0, n, QUERY_ROWS):
                b = min(a + QUERY_ROWS, n)
                _, cand = index.search(reduced(a, b), wanted)
                rows = np.arange(a, b)
                lost.append(rows[~(cand == rows[:, None]).any(axis=1)])
                indices[a:b], distances[a:b] = rescore(prepared, rows, cand, k)
                bar.update(b - a)
        _find_the_lost(prepared, np.concatenate(lost), indices, distances, k)
        return indices, distances


def _find_the_lost(prepared, lost: np.ndarray, indices, distances, k: int) -> None:
    """Exact neighbours among the rows HNSW cannot reach, merged into their lists in place.

    A search for a row's own vector that does not return the row means no link leads to it:
    HNSW's neighbour pruning can cut every incoming link of a point and its near-copy alike (an
    exact copy pair is the usual case), and then neither is ever found, by anyone. If only one
    of a pair is unreachable, its search still finds the other; if both are, both are in
    `lost`, so one exact scan among the lost rows (few, next to N) finds the pair.
    """
    if len(lost) < 2:
        return
    rows = np.ascontiguousarray(prepared[lost], dtype=np.float32)
    scan = scan_neighbours(rows, k=min(k, len(lost) - 1), threshold=None)
    found = lost[scan.knn_index]
    merged = np.concatenate([indices[lost], found], axis=1)
    indices[lost], distances[lost] = rescore(prepared, lost, merged, k)


class AutoEngine(NeighbourEngine):
    name = "auto"
    description = f"exact up to {AUTO_EXACT_ROWS:,} rows, hnsw above"
    uses_pca = True

    def resolve(self, n_rows):
        return ENGINES["exact" if n_rows <= AUTO_EXACT_ROWS else "hnsw"]

    def search(self, prepared, k, pca_width=0, progress=True):
        return self.resolve(int(prepared.shape[0])).search(prepared, k, pca_width, progress)


for _engine in (ExactEngine(), HnswEngine(), AutoEngine()):
    register_engine(_engine)
