"""The audit's one neighbour graph: both engines find the same planted pairs, the graph is built
once per store and settings and reused by a second audit with other thresholds, a corrupt or
foreign cache file is never used, and cleanlab's checks receive the graph as `knn_graph`.

Stores are real HDF5 files written by `write_store`; the engines are the real faiss and block
scan; cleanlab's Datalab runs for real."""

import json
import sys

import h5py
import numpy as np
import pytest

from conftest import read_csv
from pipeline.audit import approximate, engines
from pipeline.audit.run import run_audit
from pipeline.store.feature_store import write_store

N, DIM = 600, 48


def clustered(n=N, dim=DIM, seed=0, copies=True):
    """Two well-separated clusters (labels = cluster), with planted near-copies and exact
    copies: row i copies row i - 1 with 1% noise when i % 20 == 1, exactly when i % 20 == 11."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    centres = rng.normal(0, 3, (2, dim))
    x = centres[labels] + rng.normal(0, 1, (n, dim))
    planted = set()
    if copies:
        for i in range(1, n):
            if i % 20 in (1, 11):
                x[i] = x[i - 1] * (1 + (rng.normal(0, 0.01, dim) if i % 20 == 1 else 0))
                labels[i] = labels[i - 1]
                planted.add((f"row{i - 1}", f"row{i}"))
    return x.astype(np.float32), labels, planted


def make_store(path, x=None, labels=None, split=None):
    if x is None:
        x, labels, _ = clustered()
    if split is None:
        split = np.where(np.arange(len(x)) % 5 == 0, "test", "train")
    return write_store(path, x, labels, class_names=["a", "b"], split=list(split))


def pairs_of(folder):
    return {(r["id_a"], r["id_b"]) if r["id_a"] < r["id_b"] else (r["id_b"], r["id_a"])
            for r in read_csv(folder / "duplicates.csv")}


def sorted_pair(a, b):
    return (a, b) if a < b else (b, a)


def quiet(*_):
    pass


def test_every_engine_finds_the_same_planted_pairs_in_memory_and_from_a_scratch_file(
        tmp_path):
    _, _, planted = clustered()
    store = make_store(tmp_path / "s.h5")
    found = {}
    # memory_limit_mb 0: the rows are kept in a scratch file and centred as they are read.
    for engine, limit in (("exact", 2048), ("hnsw", 2048), ("ivf", 2048), ("ivf", 0),
                          ("exact", 0)):
        folder = run_audit(store, {"neighbours_engine": engine, "threshold": 0.05, "map": "pca",
                                   "memory_limit_mb": limit},
                           out_dir=tmp_path / f"{engine}{limit}", echo=quiet)
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["neighbour_graph"]["engine"] == engine
        found[engine, limit] = pairs_of(folder)
    truth = {sorted_pair(a, b) for a, b in planted}
    assert found["exact", 2048] == truth  # every planted pair, and nothing else under 0.05
    assert all(pairs == truth for pairs in found.values()), found
    # Re-scored: the distances the indexes report are the exact engine's.
    exact = {sorted_pair(r["id_a"], r["id_b"]): float(r["distance"])
             for r in read_csv(tmp_path / "exact2048" / "duplicates.csv")}
    for folder in ("hnsw2048", "ivf2048", "ivf0", "exact0"):
        for r in read_csv(tmp_path / folder / "duplicates.csv"):
            assert abs(float(r["distance"]) - exact[sorted_pair(r["id_a"], r["id_b"])]) < 1e-5


def test_index_neighbour_lists_match_the_exact_scan_with_and_without_pca():
    from pipeline.audit.neighbours import prepare_vectors

    x, _, _ = clustered(copies=False)
    prepared, _, _ = prepare_vectors(x)
    ref_idx, ref_dist = engines.neighbour_engine("exact").search(prepared, 8, progress=False)
    for name, width in (("hnsw", 0), ("hnsw", 16), ("ivf", 0), ("ivf", 16)):
        idx, dist = engines.neighbour_engine(name).search(prepared, 8, width, progress=False)
        overlap = np.mean([len(set(a) & set(b)) / 8 for a, b in zip(idx, ref_idx)])
        assert overlap > (0.95 if width == 0 else 0.5), (name, width, overlap)
        # Whatever neighbours it picked, each distance is the exact one.
        exact = 1.0 - np.einsum("nd,nkd->nk", prepared, prepared[idx])
        assert np.allclose(dist, np.clip(exact, 0, 2), atol=1e-5)
        assert (np.diff(dist, axis=1) >= -1e-9).all()


def test_auto_picks_exact_for_small_stores_and_ivf_for_large_ones():
    auto = engines.neighbour_engine("auto")
    assert auto.resolve(engines.AUTO_EXACT_ROWS).name == "exact"
    assert auto.resolve(engines.AUTO_EXACT_ROWS + 1).name == "ivf"


class CountingSearch:
    """Wraps an engine's real search and counts the calls."""

    def __init__(self, engine):
        self.engine, self.calls, self.real = engine, 0, type(engine).search

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.real(self.engine, *args, **kwargs)


def test_the_graph_is_built_once_and_a_second_audit_with_other_thresholds_reuses_it(
        tmp_path, monkeypatch):
    store = make_store(tmp_path / "s.h5")
    exact = engines.ENGINES["exact"]
    counter = CountingSearch(exact)
    monkeypatch.setattr(exact, "search", counter)
    first = run_audit(store, {"neighbours_engine": "exact", "threshold": 0.05, "map": "none"},
                      out_dir=tmp_path / "a", echo=quiet)
    cached = list(tmp_path.glob("s.neighbours-*.h5"))
    assert counter.calls == 1 and len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    second = run_audit(store, {"neighbours_engine": "exact", "threshold": 0.5, "neighbours": 3,
                               "map": "none"}, out_dir=tmp_path / "b", echo=quiet)
    assert counter.calls == 1  # nothing searched again
    assert cached[0].stat().st_mtime_ns == stamp
    how = json.loads((second / "summary.json").read_text())["neighbour_graph"]["how"]
    assert how.startswith("exact engine; reused s.neighbours-")
    assert pairs_of(first) < pairs_of(second)  # the wider threshold, read from the same graph
    # A setting that changes the graph (k) builds, and caches, a second one.
    run_audit(store, {"neighbours_engine": "exact", "graph_neighbours": 4, "map": "none"},
              out_dir=tmp_path / "c", echo=quiet)
    assert counter.calls == 2 and len(list(tmp_path.glob("s.neighbours-*.h5"))) == 2


def test_changed_vectors_never_reuse_the_graph(tmp_path):
    x, labels, _ = clustered()
    store = make_store(tmp_path / "s.h5", x, labels)
    run_audit(store, {"neighbours_engine": "exact", "map": "none"}, out_dir=tmp_path / "a",
              echo=quiet)
    x[5] += 10.0  # same path, same recipe: only one row's vector differs
    make_store(tmp_path / "s.h5", x, labels)
    folder = run_audit(store, {"neighbours_engine": "exact", "map": "none"},
                       out_dir=tmp_path / "b", echo=quiet)
    how = json.loads((folder / "summary.json").read_text())["neighbour_graph"]["how"]
    assert how.startswith("exact engine; built")


def test_a_corrupt_graph_file_is_rebuilt_and_a_foreign_one_left_alone(tmp_path):
    store = make_store(tmp_path / "s.h5")
    options = {"neighbours_engine": "exact", "threshold": 0.05, "map": "none"}
    good = pairs_of(run_audit(store, options, out_dir=tmp_path / "a", echo=quiet))
    (cached,) = tmp_path.glob("s.neighbours-*.h5")
    with h5py.File(cached, "r+") as fh:  # a tampered distance: the checksum no longer holds
        fh["distances"][0, 0] = 1.5
    notes = []
    folder = run_audit(store, options, out_dir=tmp_path / "b", echo=notes.append)
    assert any("does not match this store; rebuilding" in n for n in notes)
    assert pairs_of(folder) == good
    with h5py.File(cached, "r") as fh:
        assert fh["distances"][0, 0] < 1.5  # rebuilt in place
    cached.write_bytes(b"\x89HDF\r\n\x1a\n torn write")  # unreadable: rebuilt too
    assert pairs_of(run_audit(store, options, out_dir=tmp_path / "c", echo=quiet)) == good
    with h5py.File(cached, "w") as fh:  # a file of that name this tool did not write
        fh["mine"] = np.arange(3)
    notes = []
    folder = run_audit(store, options, out_dir=tmp_path / "d", echo=notes.append)
    assert pairs_of(folder) == good
    assert any("was not written by audit" in n for n in notes)
    with h5py.File(cached, "r") as fh:
        assert list(fh) == ["mine"]  # untouched


def test_a_read_only_store_folder_still_audits(tmp_path):
    store = make_store(tmp_path / "ro" / "s.h5") if (tmp_path / "ro").mkdir() is None else None
    (tmp_path / "ro").chmod(0o555)
    try:
        import os

        if os.access(tmp_path / "ro", os.W_OK):
            pytest.skip("running as a user who can write to a read-only folder (root)")
        notes = []
        folder = run_audit(store, {"neighbours_engine": "exact", "map": "none"},
                           out_dir=tmp_path / "out", echo=notes.append)
        assert (folder / "duplicates.csv").exists()
        assert any("could not be cached" in n for n in notes)
    finally:
        (tmp_path / "ro").chmod(0o755)


def test_cleanlab_receives_the_graph_as_knn_graph(tmp_path):
    from pipeline.audit.cleanlab_graph import graph_checks
    from pipeline.audit.graph import NeighbourGraph
    from pipeline.audit.neighbours import prepare_vectors

    x, labels, _ = clustered()
    prepared, _, _ = prepare_vectors(x)
    graph = NeighbourGraph(*engines.neighbour_engine("exact").search(prepared, 6,
                                                                    progress=False))
    result = graph_checks(labels, graph)
    # Datalab was given no vectors at all: the graph it holds can only be the audit's.
    held = result["lab"].get_info("statistics")["weighted_knn_graph"]
    assert held.shape == (N, N)
    assert (held.indices.reshape(N, -1) == graph.indices).all()
    assert np.allclose(held.data.reshape(N, -1), np.maximum(graph.distances, 1e-12))
    assert 0.0 <= result["non_iid_p_value"] <= 1.0 and result["k"] == 6
    # The audit runs the same checks on its own graph and records them.
    store = make_store(tmp_path / "s.h5", x, labels)
    folder = run_audit(store, {"neighbours_engine": "exact", "map": "none"},
                       out_dir=tmp_path / "a", echo=quiet)
    checks = json.loads((folder / "summary.json").read_text())["cleanlab_graph_checks"]
    assert checks["k"] == 10 and 0.0 <= checks["non_iid_p_value"] <= 1.0


def test_rows_stored_in_order_of_similarity_are_flagged_non_iid():
    from pipeline.audit.cleanlab_graph import graph_checks
    from pipeline.audit.graph import NeighbourGraph
    from pipeline.audit.neighbours import prepare_vectors

    # Frames of a slow drift, stored in order: neighbours in feature space sit side by side.
    t = np.linspace(0, 1, 400)[:, None]
    rng = np.random.default_rng(1)
    x = np.hstack([np.cos(6 * t), np.sin(6 * t), t]) + rng.normal(0, 0.01, (400, 3))
    prepared, _, _ = prepare_vectors(x.astype(np.float32))
    graph = NeighbourGraph(*engines.neighbour_engine("exact").search(prepared, 10,
                                                                    progress=False))
    ordered = graph_checks(np.arange(400) % 2, graph)
    assert ordered["non_iid_flagged"] and ordered["non_iid_p_value"] < 0.05


def test_uniqueness_and_split_coverage_from_the_graph(tmp_path):
    from pipeline.audit.coverage import split_coverage, uniqueness
    from pipeline.audit.graph import NeighbourGraph
    from pipeline.audit.neighbours import prepare_vectors

    x, labels, _ = clustered(copies=False)
    prepared, _, _ = prepare_vectors(x)
    graph = NeighbourGraph(*engines.neighbour_engine("exact").search(prepared, 10,
                                                                    progress=False))
    spread = np.where(np.arange(N) % 5 == 0, "test", "train")
    one_sided = np.where((np.arange(N) % 5 == 0) & (labels == 0), "test", "train")
    assert split_coverage(graph, spread)["test"]["coverage"] > 0.8
    narrow = split_coverage(graph, one_sided)["test"]
    assert narrow["coverage"] < 0.7  # cluster b has no test rows at all
    # A copy lowers both rows' uniqueness; an isolated row is the most unique.
    before = uniqueness(graph)
    x[7] = x[3]
    x[11] = x[11] * 0 + 40.0
    prepared, _, _ = prepare_vectors(x)
    graph = NeighbourGraph(*engines.neighbour_engine("exact").search(prepared, 10,
                                                                    progress=False))
    score = uniqueness(graph)
    assert score.max() == score[11] == 1.0
    assert score[3] == score[7] and score[3] < np.percentile(score, 5)
    assert before[3] > np.percentile(before, 5)
    # The audit writes every row's score and the coverage in its summary.
    store = make_store(tmp_path / "s.h5", x, labels, split=one_sided)
    folder = run_audit(store, {"neighbours_engine": "exact", "map": "none"},
                       out_dir=tmp_path / "a", echo=quiet)
    rows = read_csv(folder / "uniqueness.csv")
    assert len(rows) == N and rows[0]["id"] == "row11"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["split_coverage"]["test"]["coverage"] < 0.7


def test_the_map_uses_pca_where_umap_is_missing(tmp_path, monkeypatch):
    from pipeline.audit.coverage import map_coordinates

    x, _, _ = clustered(n=200)
    monkeypatch.setitem(sys.modules, "umap", None)  # as on a machine without umap-learn
    xy, method = map_coordinates(x, "auto")
    assert method == "PCA" and xy.shape == (200, 2)
    # The two clusters land apart on the first axis.
    labels = np.arange(200) % 2
    assert abs(xy[labels == 0, 0].mean() - xy[labels == 1, 0].mean()) > 3 * xy[:, 0].std() / 2
    store = make_store(tmp_path / "s.h5")
    folder = run_audit(store, {"neighbours_engine": "exact"}, out_dir=tmp_path / "a",
                       echo=quiet)
    page = (folder / "report.html").read_text()
    assert "Map of the vectors (PCA, 600 rows)" in page and page.count("<circle") == 600
    assert "Split coverage" in page
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["map"] == {"method": "PCA", "rows": 600}


def test_pca_width_with_the_exact_engine_is_refused(tmp_path, capsys):
    import run_pipeline

    store = make_store(tmp_path / "s.h5")
    code = run_pipeline.main(["audit", "--store", str(store), "--neighbours-engine", "exact",
                              "--pca-width", "32", "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --pca-width") and "--neighbours-engine ivf" in err
    assert not (tmp_path / "a").exists()


def test_rows_hnsw_cannot_reach_still_find_each_other():
    """HNSW can prune every link into a point and its near-copy; neither is then returned by any
    search. Here the lists are built as such a search leaves them (each of rows 0 and 1 lacks
    the other, both rows are lost), and the exact scan among lost rows restores the pair."""
    from pipeline.audit.neighbours import prepare_vectors

    x, _, _ = clustered()
    prepared, _, _ = prepare_vectors(x)
    ref_idx, ref_dist = engines.neighbour_engine("exact").search(prepared, 5, progress=False)
    assert ref_idx[0, 0] == 1 and ref_idx[1, 0] == 0  # row 1 is row 0's noised copy
    idx, dist = ref_idx.copy(), ref_dist.copy()
    for a in (0, 1):
        idx[a] = np.concatenate([ref_idx[a, 1:], [-1]])
        dist[a] = np.concatenate([ref_dist[a, 1:], [2.0]])
    lost = np.array([0, 1, 57, 300])
    approximate.find_the_lost(prepared, lost, idx, dist, 5)
    assert (idx[[0, 1]] == ref_idx[[0, 1]]).all()
    assert np.allclose(dist[[0, 1]], ref_dist[[0, 1]], atol=1e-6)
    assert (idx[2:] == ref_idx[2:]).all() and (idx[57] == ref_idx[57]).all()
