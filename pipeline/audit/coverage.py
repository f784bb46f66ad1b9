"""What the neighbour graph says about the dataset as a whole: how unique each row is, how well
each split covers the training rows, and a 2-D map of the vectors.

- Uniqueness of a row: the mean distance to its 3 nearest other rows, divided by the largest
  such mean in the store: 1 = the most isolated row, 0 = a row with 3 exact copies; a copy
  lowers the score of both rows.
- Coverage of a split S (val, test): the share of train rows with at least one S row among
  their k neighbours, over the share expected if S's rows were spread like the train rows,
  1 - (1 - |S| / (N - 1))^k. About 1: S covers the training distribution; well below 1: S
  misses regions of it. Also the share of S rows with a train row among their k neighbours
  (low: S holds what training never saw).
- The map: UMAP of a sample of rows when umap-learn is installed, else PCA (2 components).

    scores = uniqueness(graph)
    table = split_coverage(graph, splits)
    xy, how = map_coordinates(vectors, "auto")
"""

from __future__ import annotations

import numpy as np

UNIQUENESS_NEIGHBOURS = 3
MAP_POINTS = 1500  # rows drawn on the map: enough to show clusters, small enough for a page


def uniqueness(graph) -> np.ndarray:
    """(N,) uniqueness in [0, 1] (see the module's docstring)."""
    score = graph.mean_distance(UNIQUENESS_NEIGHBOURS)
    top = float(score.max()) if len(score) else 0.0
    return score / top if top > 0 else np.zeros_like(score)


def split_coverage(graph, splits: np.ndarray, train: str = "train") -> dict:
    """{split: {rows, covered_train_share, expected_share, coverage, with_train_neighbour}}
    for every split other than `train` (see the module's docstring)."""
    splits = np.asarray(splits, dtype=object)
    n, k = len(splits), graph.k
    is_train = splits == train
    out = {}
    if not k or not is_train.any():
        return out
    valid = graph.indices >= 0
    neighbour_split = np.where(valid, splits[np.where(valid, graph.indices, 0)], None)
    for name in sorted(set(splits.tolist()) - {train}):
        members = splits == name
        covered = (neighbour_split[is_train] == name).any(axis=1).mean()
        expected = 1.0 - (1.0 - members.sum() / max(n - 1, 1)) ** k
        with_train = (neighbour_split[members] == train).any(axis=1).mean()
        out[name] = {"rows": int(members.sum()), "covered_train_share": round(float(covered), 4),
                     "expected_share": round(float(expected), 4),
                     "coverage": round(float(covered / expected), 4) if expected else None,
                     "with_train_neighbour": round(float(with_train), 4)}
    return out


def map_rows(n: int, seed: int = 0) -> np.ndarray:
    """The rows drawn on the map: all of them up to MAP_POINTS, else a seeded sample, sorted."""
    if n <= MAP_POINTS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAP_POINTS, replace=False))


def _pca_2d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    # A randomized SVD of the two components: a full SVD of 1,500 x 2,048 took 39 s on two
    # busy cores, this 2.5 s.
    from sklearn.utils.extmath import randomized_svd

    x = x - x.mean(axis=0)
    _, _, vt = randomized_svd(x, min(2, *x.shape), random_state=seed)
    out = x @ vt[:2].T
    return np.pad(out, ((0, 0), (0, 2 - out.shape[1]))) if out.shape[1] < 2 else out


def map_coordinates(x: np.ndarray, method: str = "auto", seed: int = 0):
    """((M, 2) coordinates, "UMAP" | "PCA") of the prepared rows `x`.

    Args:
        x: (M, D) mean-centred unit rows.
        method: "auto" (UMAP where installed, else PCA), "umap" or "pca".
    """
    x = np.asarray(x, dtype=np.float32)
    if method != "pca" and len(x) > 15:  # UMAP needs more rows than its 15 neighbours
        try:
            import umap
        except ImportError:
            umap = None
        if umap is not None:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # umap's chatter about seeds and threads
                reducer = umap.UMAP(n_components=2, metric="cosine", random_state=seed,
                                    n_jobs=1)
                return np.asarray(reducer.fit_transform(x), dtype=np.float64), "UMAP"
    if len(x) < 2:
        return np.zeros((len(x), 2)), "PCA"
    return _pca_2d(x.astype(np.float64), seed), "PCA"
