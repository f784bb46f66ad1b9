"""Where grid-search's fits run: joblib's own process pool, or a Ray or Dask cluster.

scikit-learn's route past one machine is a joblib backend, so the search code stays the same and
only the pool changes: `loky` (default) is this machine's cores; `ray` registers Ray's joblib
backend (`ray.util.joblib.register_ray`) and runs the fits as Ray tasks; `dask` runs them on a
`distributed` cluster, with the features and labels scattered to the workers once
(`parallel_config("dask", scatter=[X, y])`) instead of shipped with every fit. The candidates,
the folds (made here, before any fit) and the seeds are the same on every backend, so the scores
are too. The cluster code is imported only when asked for: one machine needs neither package.

Which cluster: Ray uses the Ray already initialized in this process, else joins $RAY_ADDRESS,
else starts a local one; Dask uses the `distributed` client already made in this process, else
joins the scheduler at $DASK_SCHEDULER_ADDRESS, else starts a local cluster of 2 worker processes.
Every worker must import this project at the same path as here (a local cluster started here
has it on its path). The top-k refits after the search run on this machine.

Usage:
    with joblib_backend("dask", X, y):
        results = Parallel(n_jobs=-1)(delayed(fit)(X, y, ...) for ...)
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from pipeline.config import environment_value
from pipeline.errors import ConfigError

BACKENDS = ("loky", "ray", "dask")
INSTALL_HINT = "pip install -r requirements-cluster.txt"
LOCAL_DASK_WORKERS = 2


def streams_results(name: str) -> bool:
    """Whether joblib can hand results back one by one (`return_as="generator"`) on `name`:
    Ray's backend cannot, so its results arrive together (launching stays lazy either way)."""
    return name != "ray"


@contextmanager
def joblib_backend(name: str, X, y):
    """Runs joblib's `Parallel` calls inside the block on backend `name`.

    Args:
        name: one of BACKENDS.
        X, y: the arrays every fit reads (scattered once to Dask workers).

    Raises:
        ConfigError: an unknown backend, or its package is not installed.
    """
    if name not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}; received: {name!r}")
    if name == "loky":
        yield
    elif name == "ray":
        with _ray_backend():
            yield
    else:
        with _dask_backend(X, y):
            yield


def _project_env() -> dict:
    root = str(Path(__file__).resolve().parents[2])
    return {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
            "TF_CPP_MIN_LOG_LEVEL": "2"}


@contextmanager
def _ray_backend():
    try:
        import ray
        from ray.util.joblib import register_ray
    except ImportError as exc:
        raise ConfigError(f"--backend ray needs Ray, which is not installed ({exc}): "
                          f"{INSTALL_HINT}") from None
    from joblib import parallel_config

    started_here = not ray.is_initialized()
    if started_here:
        address = environment_value("RAY_ADDRESS")
        ray.init(address=address or "local", logging_level="WARNING",
                 runtime_env={"env_vars": _project_env()},
                 **({} if address else {"include_dashboard": False}))
    try:
        register_ray()
        with parallel_config(backend="ray"):
            yield
    finally:
        if started_here:
            ray.shutdown()


@contextmanager
def _dask_backend(X, y):
    try:
        import distributed
    except ImportError as exc:
        raise ConfigError(f"--backend dask needs dask.distributed, which is not installed "
                          f"({exc}): {INSTALL_HINT}") from None
    from joblib import parallel_config

    owned = []  # what this call started, closed on the way out
    try:
        client = distributed.get_client()
    except ValueError:  # no client in this process
        address = environment_value("DASK_SCHEDULER_ADDRESS")
        if address:
            client = distributed.Client(address)
        else:  # its worker processes are spawned with this process's sys.path
            cluster = distributed.LocalCluster(n_workers=LOCAL_DASK_WORKERS, threads_per_worker=1,
                                               processes=True, dashboard_address=None)
            owned.append(cluster)
            client = distributed.Client(cluster)
        owned.insert(0, client)
    try:
        with parallel_config(backend="dask", scatter=[X, y]):
            yield
    finally:
        for thing in owned:
            thing.close()
