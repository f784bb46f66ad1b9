"""`audit --cluster ray`: the neighbour search in shards on a Ray cluster's tasks.

This process (the driver) does everything a one-process audit does -- reading the store, the
prepared rows, the index, the exact distances of the candidates, every check and output --
except the search itself: the query rows are cut into blocks, and each Ray task searches its
block against the whole index (the exact engine: against every row, its blocks multiplied as
the one-process scan multiplies them). The lists come back in row order, so the graph, and
every pair, is the one a single process finds.

What a task needs travels through Ray's object store, so the nodes need no shared files: for
ivf and hnsw the serialized faiss index (a million rows at width 128: about 260 MB) once per
node and each shard's block of query rows; for the exact engine the prepared rows (N x D x 4
bytes, which --memory-limit-mb bounds). This project's folder is put on the tasks'
PYTHONPATH, so every node must find it at the same path.

    with shards_for(cfg) as shards:
        indices, distances = engine.search(prepared, k, shards=shards)
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.audit.passes import bar

INSTALL_HINT = "pip install -r requirements-cluster.txt"
SHARDS_PER_CPU = 2  # blocks per CPU of the cluster: a slow task costs little of the whole


class LocalShards:
    """No cluster: the engines search here, in their own loop."""

    remote = False
    parts = 1


def _run_shard(fn, shared, a, b, part, kwargs):
    return fn(shared, a, b, part, **kwargs)


class RayShards:
    """Runs `fn(shared, a, b, part, **kwargs)` for blocks a..b of the rows as Ray tasks."""

    remote = True

    def __init__(self, ray, progress: bool = False):
        self.ray, self.progress = ray, progress
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.parts = max(1, SHARDS_PER_CPU * cpus)
        root = str(Path(__file__).resolve().parents[2])
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        self._task = ray.remote(num_cpus=1)(_run_shard).options(runtime_env={"env_vars": env})

    def map(self, fn, shared, n: int, step: int, what: str, payload=None, **kwargs) -> list:
        """[fn's result for rows a..b, for a in 0, step, 2 step, ...], in row order.

        `shared` goes to the object store once; `payload(a, b)`, when given, is each task's own
        part (its query rows)."""
        ray = self.ray
        shared_ref = ray.put(shared)
        bounds = [(a, min(a + step, n)) for a in range(0, n, step)]
        pending = {self._task.remote(fn, shared_ref, a, b, payload(a, b) if payload else None,
                                     kwargs): t for t, (a, b) in enumerate(bounds)}
        results = [None] * len(bounds)
        with bar(n, f"{what} (Ray)", self.progress) as progress_bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    t = pending.pop(ref)
                    results[t] = ray.get(ref)
                    progress_bar.update(bounds[t][1] - bounds[t][0])
        return results


def import_ray():
    """Ray, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"--cluster ray needs Ray, which is not installed ({exc}): "
                          f"{INSTALL_HINT}") from None
    return ray


def check(cfg, n_rows: int, dim: int, exact: bool) -> None:
    """Before any pass: Ray is there, and the exact engine's rows fit the object store's share
    (--memory-limit-mb)."""
    if cfg.cluster != "ray":
        return
    import_ray()
    need_mb = n_rows * dim * 4 / (1 << 20)
    if exact and need_mb > cfg.memory_limit_mb:
        raise ConfigError(f"--cluster ray with the exact engine sends every prepared row to the "
                          f"cluster ({need_mb:,.0f} MB, above --memory-limit-mb "
                          f"{cfg.memory_limit_mb}); use --neighbours-engine ivf, or raise "
                          "--memory-limit-mb")


@contextmanager
def shards_for(cfg):
    """LocalShards, or RayShards on the cluster of --ray-address ($RAY_ADDRESS, else a local
    one started here and shut down after)."""
    if cfg.cluster != "ray":
        yield LocalShards()
        return
    from pipeline.extract.cluster import connect  # lazy: it loads h5py; extract's joining rules

    ray = import_ray()
    started_here = connect(ray, cfg.ray_address)
    try:
        yield RayShards(ray, cfg.progress)
    finally:
        if started_here:
            ray.shutdown()
