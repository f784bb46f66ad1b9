"""`audit --cluster ray` on a real local Ray cluster: the search runs in shards on Ray tasks,
and the graph (every row's neighbours and distances) and every output pair are the ones one
process finds, for the exact engine and for ivf."""

import json

import h5py
import numpy as np
import pytest

from conftest import read_csv
from pipeline.audit.run import run_audit
from pipeline.store.feature_store import write_store

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -r "
                                        "requirements-cluster.txt runs the cluster tests")


@pytest.fixture(scope="module")
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def store_with_copies(path, n=5000, dim=32):
    """Rows in 4 classes, with a noised copy of every 25th row in the test split: enough rows
    for several scan blocks (2,048) and IVF lists, so the shards each hold a part."""
    rng = np.random.default_rng(3)
    labels = np.arange(n) % 4
    x = rng.normal(0, 1, (4, dim))[labels] + rng.normal(0, 1, (n, dim))
    split = np.array(["train"] * n, dtype=object)
    for i in range(1, n, 25):
        x[i] = x[i - 1] + rng.normal(0, 0.02, dim)
        labels[i] = labels[i - 1]
        split[i] = "test"
    return write_store(path, x.astype(np.float32), labels, class_names=list("abcd"),
                       split=split.tolist())


def graph_arrays(store):
    (graph,) = store.parent.glob(f"{store.stem}.neighbours-*.h5")
    with h5py.File(graph, "r") as fh:
        arrays = {name: fh[name][()] for name in ("indices", "distances")}
    graph.unlink()  # the next audit builds its own
    return arrays


@pytest.mark.parametrize("engine", ["exact", "ivf"])
def test_a_search_sharded_on_ray_finds_the_graph_one_process_finds(tmp_path, local_cluster,
                                                                   engine):
    store = store_with_copies(tmp_path / "s.h5")
    options = {"neighbours_engine": engine, "map": "none", "progress": False}
    here = run_audit(store, options, out_dir=tmp_path / "here", echo=lambda *_: None)
    one = graph_arrays(store)
    lines = []
    on_ray = run_audit(store, dict(options, cluster="ray"), out_dir=tmp_path / "ray",
                       echo=lines.append)
    sharded = graph_arrays(store)
    how = json.loads((on_ray / "summary.json").read_text())["neighbour_graph"]["how"]
    assert "shards on Ray" in how, how
    assert np.array_equal(sharded["indices"], one["indices"])
    assert np.allclose(sharded["distances"], one["distances"], atol=1e-6)
    assert read_csv(on_ray / "duplicates.csv") == read_csv(here / "duplicates.csv")
    assert len(read_csv(here / "duplicates.csv")) >= 190  # the planted copies (200) are there
