"""Neighbour lists from an approximate index: what the `ivf` and `hnsw` engines share.

The rows the index holds are the prepared rows reduced by PCA (`IndexRows`: a randomized SVD
of PCA_SAMPLE_ROWS evenly spread rows, each row projected and scaled to unit length, kept in
memory: a million rows at width 128 take 512 MB), or the prepared rows themselves. The index
proposes each row's candidates, a block of query rows at a time (a shard, when the search runs
on a cluster); `approximate_graph` then scores every candidate exactly on the full prepared
rows, in a few sequential passes (pipeline/audit/rescore.py), so every distance in the graph is
exact and only the choice of neighbours is approximate.

The same pass scores the threshold's profile (pipeline/audit/threshold.py): 512 sampled rows'
candidates for their 64 nearest, searched more widely, and 64 random partners each for the
median distance between unrelated rows. So the profile costs what 512 more queries cost, not
a 512 x N scan.

    rows = IndexRows(prepared, width=128)
    index = IvfIndex(rows)
    indices, distances, profile = approximate_graph(prepared, rows, index, k=10)
"""

from __future__ import annotations

import numpy as np

from pipeline.audit.neighbours import scan_neighbours
from pipeline.audit.passes import PassTimes, bar
from pipeline.audit.rescore import exact_similarities, nearest
from pipeline.audit.threshold import PROFILE_K, NeighbourProfile, profile_rows

PCA_SAMPLE_ROWS = 20_000    # rows the PCA is fitted on
QUERY_ROWS = 8192           # rows reduced, added or searched per step
CANDIDATES_EXTRA = 10       # candidates asked beyond k, so the exact scores can re-rank them
PROFILE_EXTRA = 32          # the same for the profile's 64 nearest
MEDIAN_PARTNERS = 64        # random partners per profile row for the median pair distance
# IVF: about 4 sqrt(N) lists (a power of two), each row searched in the IVF_PROBES lists nearest
# to it; the profile's few rows in PROFILE_PROBES. The k-means sees 40 rows per list.
IVF_PROBES = 8
PROFILE_PROBES = 32
TRAIN_PER_LIST = 40
KMEANS_ITERATIONS = 10
HNSW_M = 32                 # links per node: faiss's usual setting for recall >= 0.99
HNSW_EF_CONSTRUCTION = 80   # build-time beam; higher = better graph, slower build
HNSW_EF_SEARCH = 96         # query-time beam (at least 2 x candidates)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def pca_basis(prepared, width: int, seed: int = 0) -> np.ndarray:
    """(width, D) top principal directions of up to PCA_SAMPLE_ROWS evenly spread rows (a
    randomized SVD: seconds where a full eigen-decomposition of D x D takes minutes)."""
    from sklearn.utils.extmath import randomized_svd

    n = int(prepared.shape[0])
    take = np.unique(np.linspace(0, n - 1, min(n, PCA_SAMPLE_ROWS)).astype(np.int64))
    sample = np.asarray(prepared[take], dtype=np.float32)
    sample -= sample.mean(axis=0)
    width = min(int(width), *sample.shape)
    _, _, vt = randomized_svd(sample, width, n_iter=4, random_state=seed)
    return np.ascontiguousarray(vt, dtype=np.float32)


class IndexRows:
    """The rows an index holds and is queried with: the prepared rows reduced to `width`
    PCA components (unit length, float32, in memory), or the prepared rows as they are
    (width 0, or not below their dimension). Slices like an array: `rows[a:b]`, `rows[idx]`."""

    def __init__(self, prepared, width: int = 0, progress: bool = False):
        n, dim = (int(s) for s in prepared.shape)
        self.prepared, self.basis, self.reduced = prepared, None, None
        if 0 < width < dim and n:
            self.basis = pca_basis(prepared, width)
            self.reduced = np.empty((n, len(self.basis)), dtype=np.float32)
            with bar(n, f"PCA to {len(self.basis)}", progress) as progress_bar:
                for a in range(0, n, QUERY_ROWS):
                    b = min(a + QUERY_ROWS, n)
                    block = np.asarray(prepared[a:b], dtype=np.float32)
                    self.reduced[a:b] = _unit(block @ self.basis.T)
                    progress_bar.update(b - a)
        self.shape = (n, len(self.basis) if self.basis is not None else dim)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        source = self.reduced if self.reduced is not None else self.prepared
        return np.ascontiguousarray(source[index], dtype=np.float32)


def _lists(n: int) -> int:
    """IVF lists for n rows: about 4 sqrt(n), a power of two, with TRAIN_PER_LIST rows each."""
    lists = 2 ** int(round(np.log2(max(4.0 * np.sqrt(max(n, 1)), 1.0))))
    return int(max(1, min(lists, n // TRAIN_PER_LIST)))


class IvfIndex:
    """A faiss IVF index (float16 list vectors, inner product) with each row's probed lists.

    The rows it holds are also its queries, so each row's IVF_PROBES nearest lists are found
    once, while adding: the first is the list it goes to, all of them the lists it is searched
    in (faiss's `search_preassigned`), which saves a second pass over the centroids."""

    def __init__(self, rows: IndexRows, progress: bool = False):
        import faiss

        n, width = rows.shape
        lists = _lists(n)
        self.index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(width), width, lists,
                                                   faiss.ScalarQuantizer.QT_fp16,
                                                   faiss.METRIC_INNER_PRODUCT, False)
        self.index.cp.niter, self.index.cp.seed = KMEANS_ITERATIONS, 1234
        self.index.cp.min_points_per_centroid = 1  # a tiny store: no warning on stderr
        take = np.unique(np.linspace(0, n - 1, min(n, TRAIN_PER_LIST * lists)).astype(np.int64))
        self.index.train(rows[take])
        probes = min(IVF_PROBES, lists)
        self.index.nprobe = probes
        self.probes = np.empty((n, probes), dtype=np.int64)
        self.probe_sims = np.empty((n, probes), dtype=np.float32)
        with bar(n, "neighbour index (ivf)", progress) as progress_bar:
            for a in range(0, n, QUERY_ROWS):
                b = min(a + QUERY_ROWS, n)
                block = rows[a:b]
                self.probe_sims[a:b], self.probes[a:b] = self.index.quantizer.search(block,
                                                                                     probes)
                # Named, so they live while faiss reads them through the raw pointers.
                ids = np.arange(a, b, dtype=np.int64)
                lists_of = np.ascontiguousarray(self.probes[a:b, 0])
                self.index.add_core(b - a, faiss.swig_ptr(block), faiss.swig_ptr(ids),
                                    faiss.swig_ptr(lists_of))
                progress_bar.update(b - a)

    def part(self, rows: IndexRows, a: int, b: int):
        """What a shard of rows a..b needs besides the index: their rows and probed lists."""
        return rows[a:b], self.probes[a:b], self.probe_sims[a:b]


def hnsw_index(rows: IndexRows, k: int, progress: bool = False):
    """A faiss HNSW index (M = HNSW_M, float16 vectors, inner product) over `rows`."""
    import faiss

    n, width = rows.shape
    index = faiss.IndexHNSWSQ(width, faiss.ScalarQuantizer.QT_fp16, HNSW_M,
                              faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.train(rows[0:min(n, PCA_SAMPLE_ROWS)])
    _add(index, rows, "neighbour index (hnsw)", progress)
    index.hnsw.efSearch = max(HNSW_EF_SEARCH, 2 * (k + CANDIDATES_EXTRA))
    return index


def _add(index, rows, what, progress) -> None:
    n = len(rows)
    with bar(n, what, progress) as progress_bar:
        for a in range(0, n, QUERY_ROWS):
            b = min(a + QUERY_ROWS, n)
            index.add(rows[a:b])
            progress_bar.update(b - a)


def search_shard(index, a: int, b: int, part, wanted: int) -> np.ndarray:
    """One shard of the search: the candidates of rows a..b. `index` is the faiss index, or
    its serialized bytes on a cluster worker; `part` the rows' query vectors, with their
    probed lists and similarities to them for an IVF index."""
    if isinstance(index, np.ndarray):
        import faiss

        index = faiss.deserialize_index(index)
    queries, *probed = part if isinstance(part, tuple) else (part,)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if probed:
        return index.search_preassigned(queries, wanted, probed[0], probed[1])[1]
    return index.search(queries, wanted)[1]


def _faiss_index(index):
    return index.index if isinstance(index, IvfIndex) else index


def candidates(index, rows: IndexRows, wanted: int, progress: bool = False, shards=None):
    """(N, wanted) candidate rows of every row (-1: none), found a block of queries at a time,
    here or, with `shards`, on a cluster (each shard searches its block against the index)."""
    n = len(rows)
    what = "neighbour search"
    part = (lambda a, b: index.part(rows, a, b)) if isinstance(index, IvfIndex) else \
        (lambda a, b: rows[a:b])
    if shards is not None and shards.remote:
        import faiss

        step = max(QUERY_ROWS, -(-n // shards.parts))
        parts = shards.map(search_shard, faiss.serialize_index(_faiss_index(index)), n, step,
                           what, payload=part, wanted=wanted)
        return np.concatenate(parts).astype(np.int32)
    found = np.empty((n, wanted), dtype=np.int32)  # int32: half the memory of a million lists
    with bar(n, what, progress) as progress_bar:
        for a in range(0, n, QUERY_ROWS):
            b = min(a + QUERY_ROWS, n)
            found[a:b] = search_shard(_faiss_index(index), a, b, part(a, b), wanted)
            progress_bar.update(b - a)
    return found


def _profile_candidates(index, rows: IndexRows, sample: np.ndarray, wanted: int) -> np.ndarray:
    """The profile's rows searched more widely than the graph's (they are few)."""
    index = _faiss_index(index)
    if hasattr(index, "nprobe"):
        saved, index.nprobe = index.nprobe, min(PROFILE_PROBES, index.nlist)
    else:
        saved, index.hnsw.efSearch = index.hnsw.efSearch, max(index.hnsw.efSearch, 2 * wanted)
    try:
        return index.search(rows[sample], wanted)[1].astype(np.int64)
    finally:
        if hasattr(index, "nprobe"):
            index.nprobe = saved
        else:
            index.hnsw.efSearch = saved


def approximate_graph(prepared, rows: IndexRows, index, k: int, progress: bool = False,
                      shards=None, times=None):
    """(indices, distances, profile): every row's k nearest among the index's candidates, and
    the threshold's profile, all scored exactly in one pass over the prepared rows."""
    n = int(prepared.shape[0])
    times = times if times is not None else PassTimes()
    wanted = min(n, k + 1 + CANDIDATES_EXTRA)
    with times("neighbour search"):
        found = candidates(index, rows, wanted, progress, shards)
    sample = profile_rows(n)
    profile_wanted = min(n, PROFILE_K + 1 + PROFILE_EXTRA)
    near = _profile_candidates(index, rows, sample, profile_wanted) if len(sample) else \
        np.zeros((0, profile_wanted), dtype=np.int64)
    partners = np.random.default_rng(1).integers(0, n, (len(sample), MEDIAN_PARTNERS))
    groups = [(np.arange(n, dtype=np.int32), found), (sample, near), (sample, partners)]
    with times("exact distances"):
        sims = exact_similarities(prepared, np.concatenate([np.repeat(r, c.shape[1])
                                                            for r, c in groups]),
                                  np.concatenate([c.ravel() for _, c in groups]), progress)
    ends = np.cumsum([c.size for _, c in groups])
    indices, distances = nearest(found, sims[:ends[0]].reshape(found.shape), k)
    near_idx, near_dist = nearest(near, sims[ends[0]:ends[1]].reshape(near.shape),
                                  min(PROFILE_K, n - 1))
    unrelated = sims[ends[1]:]
    pair_median = float(np.median(1.0 - unrelated[np.isfinite(unrelated)])) \
        if np.isfinite(unrelated).any() else 1.0
    lost = np.flatnonzero(~(found == np.arange(n)[:, None]).any(axis=1))
    with times("exact distances"):
        find_the_lost(prepared, lost, indices, distances, k)
    return indices, distances, NeighbourProfile(sample, near_idx, near_dist, pair_median)


def find_the_lost(prepared, lost: np.ndarray, indices, distances, k: int) -> None:
    """Exact neighbours among the rows the index cannot reach, merged into their lists in place.

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
    merged = np.concatenate([indices[lost], lost[scan.knn_index]], axis=1)
    sims = exact_similarities(prepared, np.repeat(lost, merged.shape[1]), merged.ravel())
    indices[lost], distances[lost] = nearest(merged, sims.reshape(merged.shape), k)
