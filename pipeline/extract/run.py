"""Stage one: data source -> frozen backbone (inference mode) -> HDF5 feature store.

Usage:
    from pipeline.extract.run import run_extraction
    result = run_extraction({"data": "photos/", "backbone": "resnet50", "weights": "w.weights.h5"})
    print(result.path)
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pipeline.store import feature_store as fs
from pipeline.store import vector_identity
from pipeline.extract import journal
from pipeline.extract.backbones import get_backbone
from pipeline.extract.backbones.weights import RANDOM_INIT_SEED, weights_identity
from pipeline.config import write_toml
from pipeline.extract.engines import (PRECISIONS, active_backend, keras_backend_for,
                                      resolve_engine, run_in_worker)
from pipeline.errors import ConfigError
from pipeline.extract.forward_pass import extract_into_journal
from pipeline.extract.sources import create_reader, discover

CLIP_AGGREGATES = ("mean", "per_clip")


@dataclass
class ExtractResult:
    path: Path
    n_samples: int
    n_rows: int
    n_extracted: int
    n_failures: int
    seconds: float
    cache_hit: bool
    steady_rate: float = 0.0  # images (clips) per second after the first batch; 0: one batch
    n_inputs: int = 0  # model inputs run: images, or clips for a clip backbone
    kind: str = "image"  # the backbone's kind: what a model input is

    def summary(self) -> str:
        """One line: `extracted 6 files, 48 clips in 96.0s (0.5 clips/s, steady 0.6/s); ...`."""
        if self.cache_hit:
            head = ["cache hit: nothing to extract"]
        else:
            unit = "clips" if self.kind == "clip" else "images"
            rate = self.n_inputs / self.seconds if self.seconds > 0 else 0.0
            # `steady` (inputs per second after the first batch) is the figure benchmarks read;
            # the whole-command rate also pays for model building and compilation.
            steady = f", steady {self.steady_rate:.1f}/s" if self.steady_rate > 0 else ""
            head = [f"extracted {_count(self.n_extracted, 'file')}"]
            if self.kind == "clip":
                head.append(f"{_count(self.n_inputs, 'clip')}")
            head[-1] += f" in {self.seconds:.1f}s ({rate:.1f} {unit}/s{steady})"
        return (f"{', '.join(head)}; store holds {_count(self.n_rows, 'row')} from "
                f"{_count(self.n_samples, 'file')}, {_count(self.n_failures, 'failure')} "
                "recorded")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _versions() -> dict:
    import h5py
    import keras
    import PIL

    return {"keras": keras.__version__, "keras_backend": keras.backend.backend(),
            "numpy": np.__version__, "h5py": h5py.__version__, "pillow": PIL.__version__,
            "python": platform.python_version()}


def vector_settings(opts: dict, spec, reader, weights_id: str) -> dict:
    """The vectors' identity (pipeline/store/vector_identity.py): the cache key is its hash.
    Where the data lies is not part of it: a moved dataset keeps its vectors."""
    settings = {
        "backbone": spec.name,
        "weights": weights_id,
        "layer": opts["layer"],
        # Pooling changes only a pooled map: not C3D's `pooled`, which is fc6, a vector already.
        "pooling": opts["pooling"] if opts["layer"] == "pooled" and not spec.pooled_from
        else None,
        "input_shape": list(spec.input_shape_for(opts.get("input_size"))),
        "preprocess": spec.preprocess_name,
        "reader": reader.settings(),
        "dtype": opts["dtype"],
        "precision": opts.get("precision") or "float32",
    }
    if weights_id == "none":  # random init is seeded, but each backend draws differently
        settings["random_init"] = {"seed": RANDOM_INIT_SEED, "backend": active_backend()}
    if spec.kind == "clip":
        settings["aggregate"] = opts.get("aggregate") or "mean"
        settings["l2_normalize"] = bool(opts.get("l2_normalize"))
    return settings


def run_extraction(opts: dict, *, progress: bool = True, echo=print,
                   require_labels: bool = True) -> ExtractResult:
    """Extracts features for `opts["data"]` into the store for these settings.

    Unchanged files already in the store (or in the journal of an interrupted run) are not
    extracted again; new files are added, changed ones re-extracted, removed ones dropped.
    """
    started = time.perf_counter()
    if opts.get("precision") == "int8" and opts.get("engine") in (None, "auto"):
        opts = dict(opts, engine="openvino")  # int8 runs on the native OpenVINO engine only
    engine = resolve_engine(opts.get("engine"), str(opts.get("backbone", "")).lower(),
                            native_ok=not opts.get("mean_file") and
                            opts.get("precision") != "float16")
    if keras_backend_for(engine) != active_backend():  # Keras' backend is fixed per process
        fields = run_in_worker(opts, engine, progress, require_labels)
        return ExtractResult(**dict(fields, path=Path(fields["path"])))
    precision = opts.get("precision") or "float32"
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; "
                          f"received: {precision!r}")
    if precision == "int8" and engine != "openvino":
        raise ConfigError(f"--precision int8 runs on --engine openvino (received: engine "
                          f"{engine}); pass --engine openvino or --precision float32")
    spec = get_backbone(opts["backbone"])
    input_shape = spec.input_shape_for(opts.get("input_size"))
    reader = create_reader(spec, input_shape, opts)
    dataset = discover(opts["data"], reader.extensions, leaf_dirs=reader.leaf_dirs,
                       require_labels=require_labels)
    aggregate = opts.get("aggregate") or "mean"
    if aggregate not in CLIP_AGGREGATES:
        raise ConfigError(f"aggregate must be one of {', '.join(CLIP_AGGREGATES)}; "
                          f"received: {aggregate!r}")
    clip_rows = spec.kind == "clip" and aggregate == "per_clip"
    if clip_rows and opts.get("l2_normalize"):
        raise ConfigError("--l2-normalize normalises the per-video mean of --aggregate mean; with "
                          "--aggregate per_clip each clip's row is stored as it is. Leave out "
                          "--l2-normalize (normalise clip rows in stage two, e.g. grid-search's "
                          "l2_normalize preprocessing), or use --aggregate mean.")
    weights_id = weights_identity(opts["weights"])
    settings = vector_settings(opts, spec, reader, weights_id)
    if precision == "int8":  # the calibration images shape the int8 model: keyed
        from pipeline.extract.quantize import CalibrationPlan

        # predict passes the training store's calibration, so its int8 model is reused.
        settings["calibration"] = opts.get("calibration") or \
            CalibrationPlan(dataset.samples, opts).settings()
    key = vector_identity.vector_key(settings)
    path = fs.store_path(opts.get("cache_dir") or "cache", dataset.name, spec.name, opts["layer"], key)

    with fs.StoreLock(path):
        journal.clean_stale_files(path)
        old = _open_existing(path, key)
        done = journal.index_store(old) if old is not None else {}
        parts_dir = journal.parts_dir_for(path)
        if opts.get("cluster"):  # Ray is there; take in what an interrupted run's actors wrote
            from pipeline.extract import cluster

            cluster.prepare(opts, parts_dir)
        done.update(journal.index_parts(parts_dir))
        current = {s.id: s.stamp for s in dataset.samples}
        done = {sid: d for sid, d in done.items() if current.get(sid) == d.stamp}
        todo = [s for s in dataset.samples if s.id not in done]

        if old is not None and not todo and not parts_dir.exists() and \
                _same_contents(old, dataset, clip_rows):
            n_rows, n_fail = len(old), len(old.failures())
            old.close()
            echo(f"cache hit: {path.name} already holds these files with these settings "
                 "(no backbone run)")
            return ExtractResult(path, len(dataset.samples), n_rows, 0, n_fail,
                                 time.perf_counter() - started, True, kind=spec.kind)
        feature_shape = tuple(old.feature_shape) if old is not None else None
        steady_rate, n_inputs = 0.0, 0
        # An appended store keeps the guard measured when its int8 model was made.
        native_report = dict(old.provenance.get("int8_guard") or {}) if old is not None else {}
        if old is not None:
            old.close()

        if todo:
            echo(f"{len(todo)} of {len(dataset.samples)} file(s) to extract with {spec.name} "
                 f"({_weights_label(opts['weights'], weights_id)}), layer {opts['layer']}")
            native = None
            if engine == "openvino":
                from pipeline.extract.openvino_engine import prepare_ir

                native = prepare_ir(spec, reader, opts, settings, dataset.samples, echo)
                native_report.update(native.report)
            if opts.get("cluster"):  # the same journal, written by Ray actors
                from pipeline.extract.cluster import extract_on_cluster

                feature_shape, steady_rate, n_inputs = extract_on_cluster(
                    todo, opts, parts_dir, clip_rows, progress, echo, native=native)
            else:
                feature_shape, steady_rate, n_inputs = extract_into_journal(
                    todo, spec, reader, opts, parts_dir, clip_rows, progress, native=native)
        done.update(journal.index_parts(parts_dir))  # what this run just added
        done = {sid: d for sid, d in done.items() if current.get(sid) == d.stamp}
        if feature_shape is None:
            feature_shape = _feature_shape_from_parts(parts_dir)
        provenance = _provenance(settings, opts, dataset, weights_id, engine)
        if native_report:  # the int8 accuracy guard, measured when the model was quantized
            provenance["int8_guard"] = native_report
        journal.assemble(path, dataset, done, feature_shape=feature_shape or (0,),
                         dtype=opts["dtype"], clip_rows=clip_rows, key=key, provenance=provenance)
        journal.remove_parts(path)
        _write_resolved_config(path, opts)
        with fs.FeatureStore(path) as store:
            n_rows, n_fail = len(store), len(store.failures())
    return ExtractResult(path, len(dataset.samples), n_rows, len(todo), n_fail,
                         time.perf_counter() - started, False, steady_rate, n_inputs, spec.kind)


def _weights_label(weights: str, weights_id: str) -> str:
    if weights == "none":
        return "weights=none: RANDOM weights, not pretrained"
    if weights == "imagenet":
        return "weights=imagenet"
    return f"weights={Path(weights).name} {weights_id[:19]}"


def _open_existing(path: Path, key: str):
    if not path.exists():
        return None
    try:
        store = fs.FeatureStore(path)
    except Exception:
        return None  # unreadable: rebuilt from scratch (it holds nothing usable)
    if store.key != key:
        store.close()
        raise fs.StoreError(f"{path} was made with other settings (key {store.key[:10]}); "
                            "move it away or pass another --cache-dir.")
    return store


def _same_contents(store, dataset, clip_rows: bool) -> bool:
    """True when a re-assembly would write exactly what the store already holds."""
    if list(store.class_names) != list(dataset.class_names):
        return False
    if clip_rows != ("clip_index" in store.file):
        return False
    ids = store.column("ids")
    base = [journal.sample_id_of(i, clip_rows) for i in ids]
    failed = {sid for sid, _ in store.failures()}
    expected = [s.id for s in dataset.samples if s.id not in failed]
    if list(dict.fromkeys(base)) != expected:
        return False
    by_id = {s.id: s for s in dataset.samples}
    labels, split, group = store.column("labels"), store.column("split"), store.column("group")
    for row, sid in enumerate(base):
        s = by_id[sid]
        if labels[row] != dataset.label_index(s.label) or split[row] != s.split or \
                group[row] != (s.group or (s.id if clip_rows else "")):
            return False
    return len(failed) == len(dataset.samples) - len(expected)


def _feature_shape_from_parts(parts_dir: Path):
    import h5py

    for part in sorted(parts_dir.glob("part-*.h5")):
        with h5py.File(part, "r") as fh:
            if fh["features"].shape[0]:
                return tuple(fh["features"].shape[1:])
    return None


def _provenance(settings: dict, opts: dict, dataset, weights_id: str, engine: str) -> dict:
    fingerprint = fs.cache_key({"files": [(s.id, s.stamp) for s in dataset.samples]})
    prov = dict(settings)
    prov.update({
        vector_identity.KEY_FIELD: vector_identity.vector_key(settings),
        "data_root": str(dataset.root),  # for thumbnails and messages; not in the key
        "weights": weights_id,
        "weights_label": _weights_label(opts["weights"], weights_id),
        "pretrained": opts["weights"] != "none",
        "input_size": int(settings["input_shape"][-2]),
        "resize": settings["reader"].get("resize", ""),
        "source_fingerprint": fingerprint,
        "n_files": len(dataset.samples),
        "data_name": dataset.name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "engine": engine,
        "reader": settings["reader"],
        # The options that made these vectors, so predict/export can rebuild the same extractor.
        "extract_options": vector_identity.rebuild_options(opts),
    })
    return prov


def _write_resolved_config(path: Path, opts: dict) -> None:
    target = path.with_name(path.name[:-3] + ".config.toml")
    tmp = target.with_name(target.name + ".tmp")
    write_toml(tmp, "extract", {k: v for k, v in opts.items() if k != "config"})
    os.replace(tmp, target)
