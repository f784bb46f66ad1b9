"""Stage one on a real local Ray cluster: the same store as one process, a killed actor costs
nothing but time, and no Ray means one error line saying what to install."""

import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.extract.run import run_extraction
from pipeline.store.feature_store import open_store
from tests.conftest import write_images

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -r "
                                        "requirements-cluster.txt runs the cluster tests")
pytest.importorskip("ray.data", reason="Ray Data needs pyarrow: pip install -r "
                                       "requirements-cluster.txt")

SIZE = 64  # big enough that a shard takes longer than finding and killing its actor


@pytest.fixture(scope="module")
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Images, a ResNet50 weights file with distinctive values, and the one-process store."""
    import keras

    root = tmp_path_factory.mktemp("cluster")
    data = write_images(root / "data", classes=("cat", "dog", "owl"), per_class=16,
                        size=(40, 56), ext=".jpg")
    app = keras.applications.ResNet50(include_top=False, weights=None,
                                      input_shape=(SIZE, SIZE, 3))
    rng = np.random.default_rng(0)
    for w in app.weights:
        if "moving_variance" not in w.path:
            w.assign(rng.normal(0, 0.05, w.shape).astype("float32") + np.asarray(w) * 0.5)
    weights = root / "resnet50.weights.h5"
    app.save_weights(weights)
    opts = {"data": str(data), "backbone": "resnet50", "weights": str(weights),
            "layer": "pooled", "pooling": "avg", "input_size": SIZE, "resize": "squash",
            "batch_size": 4, "workers": 2, "dtype": "float32"}
    reference = _run(dict(opts, cache_dir=str(root / "one")))
    return root, opts, _contents(reference.path)


def _run(opts):
    return run_extraction(opts, progress=False, echo=lambda *_: None)


def _contents(path):
    with open_store(path) as store:
        return {"key": store.key, "ids": list(store.column("ids")), "name": path.name,
                "stamps": list(store.column("stamps")),
                "labels": store.column("labels").tolist(),
                "features": store.read_rows(np.arange(len(store)))}


def _assert_same_store(got, expected):
    assert got["key"] == expected["key"]
    assert got["ids"] == expected["ids"]  # nothing lost, nothing twice, the same order
    assert got["labels"] == expected["labels"]
    np.testing.assert_allclose(got["features"], expected["features"], atol=1e-5, rtol=0)


def _publish_as_an_actor(store_dir, expected, n):
    """What an interrupted run's actor left: a published part of n samples in its shard folder
    (and the temporary of a part it was writing when killed)."""
    from pipeline.extract import journal
    from pipeline.extract.sources.base import Sample

    folder = journal.parts_dir_for(store_dir / expected["name"]) / "shard-000003"
    writer = journal.PartWriter(folder)
    for sid, stamp, row in zip(expected["ids"][:n], expected["stamps"], expected["features"]):
        writer.add(Sample(id=sid, path=Path(sid), stamp=stamp), row[None], [0])
    writer.flush()
    (folder / "part-000001.tmp").write_bytes(b"half a part")


def test_two_actors_make_the_one_process_store(local_cluster, setup):
    root, opts, expected = setup
    _publish_as_an_actor(root / "two", expected, n=5)  # the same command resumes it
    result = _run(dict(opts, cache_dir=str(root / "two"), cluster="ray", actors=2))
    assert result.n_extracted == len(expected["ids"]) - 5 and not result.cache_hit
    _assert_same_store(_contents(result.path), expected)
    assert not any(result.path.parent.glob(".*.parts"))  # the journal is gone once assembled
    again = _run(dict(opts, cache_dir=str(root / "two"), cluster="ray", actors=2))
    assert again.cache_hit


def _actor_pids():
    import psutil

    found = []
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "ShardExtractor" in " ".join(proc.cmdline()):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def test_killed_actor_loses_nothing(local_cluster, setup):
    root, opts, expected = setup
    cache = root / "killed"
    outcome = {}

    def extract():
        try:
            outcome["result"] = _run(dict(opts, cache_dir=str(cache), cluster="ray", actors=2))
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc

    worker = threading.Thread(target=extract)
    worker.start()
    killed, deadline = None, time.monotonic() + 300
    while killed is None and worker.is_alive() and time.monotonic() < deadline:
        # An actor has published work: kill one mid-run, the hard way.
        if any(cache.glob(".*.parts/shard-*/part-*.h5")):
            pids = _actor_pids()
            if pids:
                killed = pids[0]
                os.kill(killed, signal.SIGKILL)
                still_running = worker.is_alive()
        time.sleep(0.005)
    worker.join(timeout=600)
    assert "error" not in outcome, outcome.get("error")
    assert killed is not None and still_running, "no actor was killed while the run went on"
    assert outcome["result"].n_extracted == len(expected["ids"])
    _assert_same_store(_contents(outcome["result"].path), expected)


def test_without_ray_one_error_line_says_what_to_install(setup, monkeypatch, capsys):
    import run_pipeline

    root, opts, _ = setup
    for name in ("ray", "ray.data"):
        monkeypatch.setitem(sys.modules, name, None)  # as if Ray were not installed
    code = run_pipeline.main(["extract", "--data", opts["data"], "--backbone", "resnet50",
                              "--weights", opts["weights"], "--input-size", str(SIZE),
                              "--cache-dir", str(root / "noray"), "--no-progress",
                              "--cluster", "ray"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "pip install -r requirements-cluster.txt" in err[0]


def test_actor_plan_and_shards():
    from pipeline.errors import ConfigError
    from pipeline.extract.cluster import plan_actors, shard

    gpu_nodes = [{"Alive": True, "Resources": {"CPU": 16.0, "GPU": 8.0}}] * 2
    assert plan_actors(gpu_nodes, None, None) == (16, 2.0, 1.0)  # one actor per GPU
    assert plan_actors(gpu_nodes, None, 0.5) == (32, 1.0, 0.5)  # two share a GPU
    cpu_nodes = [{"Alive": True, "Resources": {"CPU": 4.0}}, {"Alive": False, "Resources": {}}]
    assert plan_actors(cpu_nodes, None, None) == (1, 4.0, 0.0)  # one per live node
    assert plan_actors(cpu_nodes, 3, None) == (3, 4 / 3, 0.0)
    with pytest.raises(ConfigError, match="need 17 GPUs; the cluster has 16"):
        plan_actors(gpu_nodes, 17, 1)
    with pytest.raises(ConfigError, match="has none; pass --gpus-per-actor 0"):
        plan_actors(cpu_nodes, 2, 1)

    todo = list(range(100))
    shards = shard(todo, batch_size=8, actors=2)
    assert [x for part in shards for x in part] == todo  # every sample once, in order
    assert all(len(part) % 8 == 0 for part in shards[:-1]) and len(shards) == 7
    assert max(len(part) for part in shard(list(range(10 ** 6)), 32, 2)) == 64 * 32
