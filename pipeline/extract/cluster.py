"""Stage one on a Ray cluster: the files to extract, sharded over Ray Data actors.

`extract --cluster ray` runs everything of a one-process run on this machine (the driver) --
discovery, the cache key, the store lock, the journal index, the final assembly -- except the
forward pass: the files still to extract are cut into shards, and Ray Data's batch inference
(`map_batches` with a callable class on a fixed pool of N actors -- `compute=ActorPoolStrategy(
size=N)`, which replaced `concurrency=N` in Ray 2.51 -- with `num_gpus` per actor) hands the
shards to actors that each build the backbone once. An actor writes its finished samples with
the journal's own crash-safe part writer into a folder of its shard (`<parts>/shard-NNNNNN/`),
so a killed actor, worker or node costs at most its unpublished work: Ray restarts the actor and
retries the shard, which skips what the shard already published. The driver then moves the
published parts into the journal folder and assembles the one store as a one-process run does.

Every node must read the files and write the cache at the same paths (a shared filesystem, or
the same path on each node), and find this project at the same path (it is put on the actors'
PYTHONPATH).

Usage (inside `run_extraction`, when config.cluster is "ray"):
    feature_shape, rate, n = extract_on_cluster(todo, config, parts_dir, progress)

The actors receive the settings as `config.as_dict()`, rebuild them with
`ExtractConfig.from_mapping` and import `config.plugin` before they build the backbone.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from pipeline.config import environment_value
from pipeline.errors import ConfigError, EngineError, PipelineError
from pipeline.extract import journal
from pipeline.extract.engines import active_backend, get_engine, plugin_paths
from pipeline.extract.backbones import get_backbone
from pipeline.extract.forward_pass import build_model, extract_into_journal
from pipeline.extract.options import ExtractConfig
from pipeline.plugins import load_plugins
from pipeline.extract.sources import create_reader
from pipeline.extract.sources.base import Sample

SHARD_PREFIX = "shard-"
SHARDS_PER_ACTOR = 4  # small enough for the slowest actor to finish near the others
MAX_SHARD_BATCHES = 64  # a shard's padded last batch is a negligible share of its work
INSTALL_HINT = "pip install -r requirements-cluster.txt"


def import_ray():
    """Ray and Ray Data, or a ConfigError saying how to install them."""
    try:
        import ray
        import ray.data  # noqa: F401  (needs pyarrow: the ray[data] extra)
    except ImportError as exc:
        raise ConfigError(f"--cluster ray needs Ray Data, which is not installed ({exc}): "
                          f"{INSTALL_HINT}") from None
    return ray


def connect(ray, address: str | None) -> bool:
    """Joins `address` (else $RAY_ADDRESS), or starts a local cluster when none is named.

    Returns:
        True when this call started Ray (the caller shuts it down), False when Ray was
        already initialized in this process.
    """
    if ray.is_initialized():
        return False
    address = address or environment_value("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, logging_level="WARNING")
        else:  # "local": never silently join a cluster someone else started on this machine
            ray.init(address="local", include_dashboard=False, logging_level="WARNING")
    except (ConnectionError, TimeoutError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"cannot join the Ray cluster at {address!r}: {first}; start it with "
                          "`ray start --head` or pass another --ray-address") from None
    return True


def plan_actors(nodes: list[dict], actors: int | None, gpus_per_actor: float | None) -> tuple:
    """(actors, CPUs per actor, GPUs per actor) for the live nodes of a cluster (`ray.nodes()`).

    Defaults: one actor per GPU on a GPU cluster, else one per node; the CPUs are shared out
    evenly (fractions allowed), never more than the largest node has.
    """
    alive = [n for n in nodes if n.get("Alive")]
    cpus = [float(n["Resources"].get("CPU", 0)) for n in alive]
    gpus_total = sum(float(n["Resources"].get("GPU", 0)) for n in alive)
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if gpus_total else 0.0
    if gpus_per_actor < 0:
        raise ConfigError(f"gpus_per_actor must be >= 0; received: {gpus_per_actor}")
    if gpus_per_actor > 0 and not gpus_total:
        raise ConfigError(f"--gpus-per-actor {gpus_per_actor:g} asked for GPUs, but the Ray "
                          "cluster has none; pass --gpus-per-actor 0")
    if actors is None:
        actors = int(gpus_total // gpus_per_actor) if gpus_per_actor else len(alive)
    if actors < 1:
        raise ConfigError(f"actors must be at least 1; received: {actors}")
    if gpus_per_actor * actors > gpus_total:
        raise ConfigError(f"{actors} actor(s) x {gpus_per_actor:g} GPU need "
                          f"{actors * gpus_per_actor:g} GPUs; the cluster has {gpus_total:g}")
    if not cpus or not sum(cpus):
        raise ConfigError("the Ray cluster has no live node with CPUs")
    cpus_per_actor = min(sum(cpus) / actors, max(cpus))
    return actors, cpus_per_actor, gpus_per_actor


def shard(todo: list, batch_size: int, actors: int) -> list[list]:
    """Cuts the samples into shards of whole batches, so they form the one-process batches."""
    per_shard = math.ceil(len(todo) / (actors * SHARDS_PER_ACTOR))
    size = min(max(per_shard, 1), MAX_SHARD_BATCHES * batch_size)
    size = math.ceil(size / batch_size) * batch_size
    return [todo[i:i + size] for i in range(0, len(todo), size)]


def prepare(config, parts_dir: Path) -> None:
    """Before a cluster run indexes its journal: Ray must be there, and what the actors of an
    interrupted run published is taken in."""
    if config.cluster != "ray":
        raise ConfigError(f"cluster must be ray; received: {config.cluster!r}")
    import_ray()
    adopt_actor_parts(parts_dir)


def adopt_actor_parts(parts_dir: Path) -> None:
    """Moves the parts actors published in shard folders into the journal folder, numbered
    after its own, so `journal.index_parts` (and a one-process re-run) sees them.

    Only the driver calls this, holding the store's lock, while no actor runs. Each move is an
    atomic rename: a kill in between leaves every part in one of the two places.
    """
    shard_parts = sorted(parts_dir.glob(f"{SHARD_PREFIX}*/part-*.h5"))
    if shard_parts:
        number = journal.PartWriter(parts_dir).next_number
        for part in shard_parts:
            os.replace(part, parts_dir / f"part-{number:06d}.h5")
            number += 1
    for folder in parts_dir.glob(f"{SHARD_PREFIX}*"):
        for leftover in folder.iterdir():  # temporaries of a killed actor
            leftover.unlink(missing_ok=True)
        folder.rmdir()


def extract_on_cluster(todo: list, config, parts_dir: Path, progress: bool, echo=print,
                       prepared=None) -> tuple:
    """Extracts `todo` on Ray actors into the journal at `parts_dir` (see the module doc).

    `prepared` is what the engine prepared on the driver (the native engine's OpenVINO IR,
    whose files must be readable by every node, like the cache folder they live in).

    Returns:
        (feature_shape or None when every shard was already published, model inputs (images,
        or clips) per second of the whole cluster stage, actor start-up included, and how many
        inputs the actors ran).

    Raises:
        ConfigError: Ray is not installed, the cluster cannot be joined or cannot hold the
            actors asked for. Any PipelineError an actor raised (a weights file that does not
            fit, an engine that cannot run the backbone) is raised here as it was.
    """
    ray = import_ray()

    started_here = connect(ray, config.ray_address)
    try:
        actors, cpus, gpus = plan_actors(ray.nodes(), config.actors, config.gpus_per_actor)
        shards = shard(todo, config.batch_size, actors)
        echo(f"ray: {len(todo)} file(s) in {len(shards)} shard(s) on {actors} actor(s) "
             f"({cpus:g} CPU, {gpus:g} GPU each)")
        rows = [{"shard": k, "samples": json.dumps([[s.id, str(s.path), s.stamp] for s in part])}
                for k, part in enumerate(shards)]
        ray.data.DataContext.get_current().enable_progress_bars = progress
        root = str(Path(__file__).resolve().parents[2])  # this project, for the actors' imports
        paths = [root, os.environ.get("PYTHONPATH"), *plugin_paths()]  # and the plugins'
        env = {"KERAS_BACKEND": active_backend(), "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONPATH": os.pathsep.join(filter(None, paths))}
        if 0 < gpus < 1:  # actors share a GPU: JAX and TensorFlow must not each take it all
            env.update(XLA_PYTHON_CLIENT_PREALLOCATE="false", TF_FORCE_GPU_ALLOW_GROWTH="true")
        started = time.perf_counter()
        results = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            ShardExtractor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus, num_gpus=gpus or None, runtime_env={"env_vars": env},
            fn_constructor_kwargs={"config": config.as_dict(), "parts_dir": str(parts_dir),
                                   "prepared": prepared}).take_all()
        seconds = time.perf_counter() - started
    except Exception as exc:
        cause = _pipeline_error_in(exc)
        if cause is not None:
            raise cause from None
        raise
    finally:
        if started_here:
            ray.shutdown()
    adopt_actor_parts(parts_dir)
    shapes = [tuple(json.loads(r["feature_shape"])) for r in results]
    n_inputs = sum(int(r["n_inputs"]) for r in results)
    return (shapes[0] if shapes else None), (n_inputs / seconds if seconds > 0 else 0.0), n_inputs


def _pipeline_error_in(exc: BaseException) -> PipelineError | None:
    """The PipelineError an actor raised, found through Ray's wrappers (cause chains)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, PipelineError):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return None


class ShardExtractor:
    """A Ray Data actor: builds the backbone once, then extracts whole shards.

    Runs the chosen engine (KERAS_BACKEND is set in its runtime environment) and precision, and
    sizes its decode workers and TensorFlow's thread pools to the CPUs Ray gave it.
    """

    def __init__(self, config: dict, parts_dir: str, prepared=None):
        import ray

        config = ExtractConfig.from_mapping(config)
        load_plugins(config.plugin)  # before the backbone is looked up: it may be a plugin's
        cores = max(1, round(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
        engine = get_engine(config.engine)
        if engine.keras_backend != active_backend():
            raise EngineError(f"actor runs Keras on {active_backend()!r}, asked for "
                              f"{config.engine!r}")
        engine.limit_threads(cores)
        self.config = config.replace(workers=config.workers or max(2, min(32, cores)))
        self.parts_dir = Path(parts_dir)
        self.spec = get_backbone(config.backbone)
        self.reader = create_reader(self.spec, self.spec.input_shape_for(config.input_size, config.frames),
                                    self.config)
        self.prepared = prepared
        self.model = build_model(self.spec, self.reader, self.config, prepared)
        shape = getattr(self.model, "feature_shape", None) or self.model.output.shape[1:]
        self.feature_shape = json.dumps([int(d) for d in shape])

    def __call__(self, batch: dict) -> dict:
        out = {"shard": [], "feature_shape": [], "n_inputs": []}
        for number, samples in zip(batch["shard"], batch["samples"]):
            folder = self.parts_dir / f"{SHARD_PREFIX}{int(number):06d}"
            done = journal.index_parts(folder)  # a retried shard skips what it published
            todo = [Sample(id=sid, path=Path(path), stamp=stamp)
                    for sid, path, stamp in json.loads(samples)
                    if sid not in done or done[sid].stamp != stamp]
            n_inputs = 0
            if todo:
                _, _, n_inputs = extract_into_journal(todo, self.spec, self.reader, self.config,
                                                      folder, False, self.prepared, self.model)
            out["shard"].append(int(number))
            out["n_inputs"].append(n_inputs)
            out["feature_shape"].append(self.feature_shape)
        return out
