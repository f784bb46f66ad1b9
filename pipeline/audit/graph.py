"""One neighbour graph per store and audit settings, built once and cached beside the store.

The graph holds each row's k nearest other rows (cosine distance on the mean-centred vectors)
with exact distances. Every audit check reads it: near-duplicate pairs under a threshold, the
leaks among them, the outlier score, uniqueness, split coverage and cleanlab's `knn_graph`.
None of them computes a distance again, so a second audit with other thresholds reuses the
graph and only re-reads it.

The graph also keeps the profile the adaptive threshold reads (pipeline/audit/threshold.py:
512 sampled rows' 64 nearest rows and the median pair distance), found with the graph, so a
cached graph needs no pass over the vectors for `--threshold auto` either.

The cache file `<store stem>.neighbours-<key>.h5` sits beside the store. Its key covers the
store's vector key, a digest of every stored row (so re-extracted or edited vectors never
match), k, the engine that ran, the PCA width and the vector preparation (L2, centring). A
file whose key, shape, ranges or checksum do not match is never used: one this audit wrote is
rebuilt, one it did not write is left alone (the graph is then kept in memory only).

    graph = NeighbourGraph(indices, distances)
    pairs = graph.pairs(0.15)          # (P, 3): i < j, distance
    nearest = graph.nearest            # (N,) each row's nearest-neighbour distance
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.audit.threshold import NeighbourProfile
from pipeline.outputs import special_kind

# Bumped whenever what a graph file holds, or how an engine builds it, changes meaning.
GRAPH_VERSION = 2
MARKER = "featcache-neighbour-graph"


@dataclass
class NeighbourGraph:
    """Each row's k nearest other rows.

    Attributes:
        indices: (N, k) int64 neighbour rows, nearest first (-1: fewer than k found).
        distances: (N, k) float64 exact cosine distances, ascending (2.0 where -1).
        settings: what built it (engine, k, PCA width, ...), as recorded in the cache.
        profile: the threshold's `NeighbourProfile` of these rows (None: not found).
    """

    indices: np.ndarray
    distances: np.ndarray
    settings: dict = field(default_factory=dict)
    profile: NeighbourProfile | None = None

    @property
    def k(self) -> int:
        return int(self.indices.shape[1]) if self.indices.ndim == 2 else 0

    @property
    def nearest(self) -> np.ndarray:
        """(N,) each row's distance to its nearest other row (the store's own distribution)."""
        return self.distances[:, 0] if self.k else np.zeros(len(self.indices))

    def pairs(self, threshold: float) -> np.ndarray:
        """(P, 3) float64 rows (i, j, distance), i < j, each pair once, at or under
        `threshold`. A row with more than k such neighbours contributes its k nearest."""
        rows, cols = np.nonzero((self.distances <= threshold) & (self.indices >= 0))
        if not len(rows):
            return np.zeros((0, 3))
        other = self.indices[rows, cols]
        i, j = np.minimum(rows, other), np.maximum(rows, other)
        dist = self.distances[rows, cols]
        order = np.lexsort((dist, j, i))
        i, j, dist = i[order], j[order], dist[order]
        first = np.ones(len(i), dtype=bool)
        first[1:] = (i[1:] != i[:-1]) | (j[1:] != j[:-1])  # the smaller of the two sides' values
        return np.column_stack([i[first], j[first], dist[first]]).astype(np.float64)

    def mean_distance(self, k: int) -> np.ndarray:
        """(N,) mean distance to the first `k` neighbours (the outlier score)."""
        if not self.k:
            return np.zeros(len(self.indices))
        return self.distances[:, :max(1, min(k, self.k))].mean(axis=1)

    def knn_graph(self):
        """The graph as the sparse (N, N) distance matrix cleanlab takes as `knn_graph`."""
        from scipy.sparse import csr_matrix

        n, k = self.indices.shape
        if (self.indices < 0).any():
            raise ValueError("the graph has rows with fewer than k neighbours")
        # cleanlab reads explicit entries; a 0 distance (an exact copy) must stay one.
        data = np.maximum(self.distances, 1e-12).ravel()
        return csr_matrix((data, self.indices.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))

    def checksum(self) -> str:
        digest = hashlib.sha256(np.ascontiguousarray(self.indices, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(self.distances, dtype=np.float64).tobytes())
        if self.profile is not None:
            p = self.profile
            for array, dtype in ((p.rows, np.int64), (p.indices, np.int64),
                                 (p.distances, np.float64)):
                digest.update(np.ascontiguousarray(array, dtype=dtype).tobytes())
            digest.update(repr(float(p.pair_median)).encode())
        return digest.hexdigest()


def content_digest(row_digests) -> str:
    """One digest of every stored row, in order."""
    digest = hashlib.sha256()
    for row in row_digests:
        digest.update(row)
    return digest.hexdigest()


def graph_key(settings: dict) -> str:
    return hashlib.sha256(json.dumps({"graph_version": GRAPH_VERSION, **settings},
                                     sort_keys=True, default=str).encode()).hexdigest()


def graph_path(store_path: Path, key: str) -> Path:
    store_path = Path(store_path)
    return store_path.with_name(f"{store_path.stem}.neighbours-{key[:12]}.h5")


def _valid(graph: NeighbourGraph, n_rows: int, k: int) -> bool:
    idx, dist = graph.indices, graph.distances
    if idx.shape != (n_rows, k) or dist.shape != (n_rows, k):
        return False
    if n_rows and ((idx < -1).any() or (idx >= n_rows).any()
                   or (idx == np.arange(n_rows)[:, None]).any()):
        return False
    if not np.isfinite(dist).all() or (dist < 0).any() or (dist > 2).any():
        return False
    if not (k < 2 or (np.diff(dist, axis=1) >= -1e-9).all()):
        return False
    p = graph.profile
    return p is None or bool(
        p.indices.shape == p.distances.shape and p.indices.shape[:1] == p.rows.shape
        and ((p.rows >= 0) & (p.rows < n_rows)).all()
        and ((p.indices >= -1) & (p.indices < n_rows)).all()
        and np.isfinite(p.distances).all() and ((p.distances >= 0) & (p.distances <= 2)).all()
        and np.isfinite(p.pair_median))


def read_graph(path: Path, key: str, n_rows: int, k: int) -> tuple[NeighbourGraph | None, str]:
    """(the cached graph, "") when `path` holds a sound graph with this key; else (None, why),
    where why is "absent", "foreign" (not a file this tool wrote) or "stale"/"corrupt"."""
    import h5py

    if not path.exists():
        return None, "absent"
    if special_kind(path):
        return None, "foreign"  # a FIFO or device: opening it could wait forever
    try:
        with h5py.File(path, "r") as fh:
            if fh.attrs.get("format") != MARKER:
                return None, "foreign"
            if fh.attrs.get("key") != key:
                return None, "stale"
            graph = NeighbourGraph(np.asarray(fh["indices"][:], dtype=np.int64),
                                   np.asarray(fh["distances"][:], dtype=np.float64),
                                   json.loads(fh.attrs["settings"]))
            if "profile_rows" in fh:
                graph.profile = NeighbourProfile(
                    np.asarray(fh["profile_rows"][:], dtype=np.int64),
                    np.asarray(fh["profile_indices"][:], dtype=np.int64),
                    np.asarray(fh["profile_distances"][:], dtype=np.float64),
                    float(fh.attrs["pair_median"]))
            recorded = fh.attrs.get("checksum")
    except (OSError, KeyError, ValueError, TypeError):
        # Unreadable (a torn or truncated write): the name carries this graph's key, which
        # nothing but the audit makes, so it is ours to rebuild.
        return None, "corrupt"
    if recorded != graph.checksum() or not _valid(graph, n_rows, k):
        return None, "corrupt"
    return graph, ""


def write_graph(path: Path, key: str, graph: NeighbourGraph) -> None:
    """Writes the graph atomically (a temporary file renamed over `path`)."""
    import h5py

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as fh:
            fh.create_dataset("indices", data=graph.indices.astype(np.int64))
            fh.create_dataset("distances", data=graph.distances.astype(np.float64))
            if graph.profile is not None:
                p = graph.profile
                fh.create_dataset("profile_rows", data=np.asarray(p.rows, dtype=np.int64))
                fh.create_dataset("profile_indices", data=np.asarray(p.indices, dtype=np.int64))
                fh.create_dataset("profile_distances",
                                  data=np.asarray(p.distances, dtype=np.float64))
                fh.attrs["pair_median"] = float(p.pair_median)
            fh.attrs.update(format=MARKER, key=key, checksum=graph.checksum(),
                            settings=json.dumps(graph.settings, sort_keys=True, default=str))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cached_graph(store_path: Path, settings: dict, n_rows: int, k: int, build, echo=print):
    """The graph for these settings: read from beside the store, else built and saved there.

    Args:
        store_path: the store (the cache file goes in its folder).
        settings: everything that changes the graph (the key is made from it).
        n_rows, k: the shape the graph must have.
        build: callable() -> NeighbourGraph, run only when no sound cached graph exists.
        echo: where notes go (a rebuilt corrupt file, a cache that cannot be written).

    Returns:
        (graph, how): how is "reused <file>" or "built" (+ where it was saved, or why not).
    """
    key = graph_key(settings)
    path = graph_path(store_path, key)
    graph, why = read_graph(path, key, n_rows, k)
    if graph is not None:
        return graph, f"reused {path.name}"
    if why in ("corrupt", "stale"):
        echo(f"note: the neighbour graph {path.name} does not match this store; rebuilding it")
    graph = build()
    graph.settings = dict(settings)
    if why == "foreign":
        echo(f"note: {path} was not written by audit; the neighbour graph is kept in memory "
             "only (move that file away to cache the graph)")
        return graph, "built (not cached: a file of that name exists)"
    try:
        write_graph(path, key, graph)
    except OSError as exc:
        why_not = exc.strerror or exc
        echo(f"note: the neighbour graph could not be cached beside the store ({why_not}); the "
             "next audit builds it again")
        return graph, "built (not cached: the store's folder is not writable)"
    return graph, f"built, saved as {path.name}"
