"""Stage one: data source -> frozen backbone (inference mode) -> HDF5 feature store.

Usage:
    from pipeline.extract.run import run_extraction
    store = run_extraction({"data": "photos/", "backbone": "resnet50", "weights": "w.weights.h5"})
    print(store.path)  # the result is path-like too: open_store(store), str(store)

The options are any subset of the `extract` options (the rest take the CLI's defaults) or an
`ExtractConfig`; both give the store the CLI gives for the same flags.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pipeline.store import feature_store as fs
from pipeline.store import integrity, space, vector_identity
from pipeline.extract import cluster, journal
from pipeline.extract.dataset_store import data_source, store_for
from pipeline.extract.backbones import get_backbone, kind_of
from pipeline.extract.backbones.imagenet_download import refuse_unreachable_imagenet
from pipeline.extract.backbones.weights import RANDOM_INIT_SEED, identity_for
from pipeline.config import write_toml
from pipeline.errors import ConfigError
from pipeline.extract.engines import (active_backend, auto_precision, choose_engine,
                                      run_in_worker)
from pipeline.extract.forward_pass import extract_into_journal
from pipeline.extract.options import ExtractConfig, check_batch_memory
from pipeline.extract.result import ExtractResult
from pipeline.extract.vector_checks import degenerate_vectors
from pipeline.outputs import MARKER
from pipeline.plugins import load_plugins
from pipeline.extract.sources import create_reader, discover, reader_class_for
from pipeline.extract.views import extract_views
from pipeline.extract.quantize import CalibrationPlan

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
        "input_shape": list(spec.input_shape_for(opts.get("input_size"), opts.get("frames"))),
        "preprocess": spec.preprocess_name,
        "reader": reader.settings(),
        "dtype": opts["dtype"],
        "precision": opts.get("precision") or "float32",
    }
    if settings["precision"] == "auto":  # a bug: the key holds what the backbone computed in
        raise ValueError("vector_settings needs the resolved precision, not 'auto'")
    if weights_id == "none":  # random init is seeded, but each backend draws differently
        settings["random_init"] = {"seed": RANDOM_INIT_SEED, "backend": active_backend()}
    settings.update(reader.aggregation_settings())  # clip readers: mean or per clip, L2
    settings.update(spec.identity)  # e.g. a KerasHub preset's architecture and token layout
    return settings


def run_extraction(config: ExtractConfig | Mapping, *, progress: bool | None = None, echo=print,
                   require_labels: bool = True, calibration: dict | None = None) -> ExtractResult:
    """Extracts features for `config.data` into the store for these settings.

    Unchanged files already in the store (or in the journal of an interrupted run) are not
    extracted again; new files are added, changed ones re-extracted, removed ones dropped.

    Args:
        config: an `ExtractConfig`, or a mapping of any subset of the extract options (the
            others take the CLI's defaults; a `config` key names a TOML file).
        progress: show a progress bar (default: `config.progress`).
        calibration: the calibration of an int8 store to reuse (predict passes the training
            store's, so its int8 model is reused); a mapping may carry it as `calibration`.

    Returns:
        The `ExtractResult`, which is path-like: the store's path.
    """
    if isinstance(config, Mapping) and "calibration" in config:
        config = dict(config)
        calibration = calibration or config.pop("calibration")
    cfg = ExtractConfig.from_mapping(config)
    if not cfg.data:
        raise ConfigError("extract needs data: a folder or CSV manifest (--data DIR_OR_CSV)")
    progress = cfg.progress if progress is None else progress
    started = time.perf_counter()
    load_plugins(cfg.plugin)  # before the backbone is looked up: it may be a plugin's
    # The inputs are listed and checked before any backend is imported (that takes tens of
    # seconds): a bad manifest is refused at once, and the file count is the first line.
    listed_by = reader_class_for(kind_of(cfg.backbone), cfg)
    dataset = _discover(cfg, listed_by, require_labels)
    echo(f"found {len(dataset.samples)} file(s) in {dataset.root}")
    if dataset.skipped:
        echo(f"skipped {len(dataset.skipped)} folder(s) that featcache wrote (they hold its "
             f"{MARKER} marker): {', '.join(dataset.skipped)}")
    engine = choose_engine(cfg)
    if engine.keras_backend != active_backend():  # Keras' backend is fixed per process
        fields = run_in_worker(cfg, engine.name, progress, require_labels, calibration)
        return ExtractResult(**dict(fields, path=Path(fields["path"])))
    asked_engine, cfg = cfg.engine, cfg.replace(engine=engine.name)
    spec = get_backbone(cfg.backbone)
    input_shape = spec.input_shape_for(cfg.input_size, cfg.frames)
    check_batch_memory(cfg.batch_size, input_shape)  # every axis, before anything is decoded
    reader = create_reader(spec, input_shape, cfg)
    if type(reader) is not listed_by:  # another reader lists other files: list them again
        dataset = _discover(cfg, reader, require_labels)
    clip_rows = reader.rows_per_file is None  # one row per clip, not per file
    weights_id = identity_for(spec, cfg.weights)
    cfg, settings, choice, engine = _settle_precision(cfg, engine, asked_engine, spec, reader,
                                                      weights_id, dataset.samples, echo)
    if cfg.precision == "int8":  # the calibration images shape the int8 model: keyed
        settings["calibration"] = calibration or \
            CalibrationPlan(dataset.samples, cfg.calibration_size, cfg.int8_min_cosine,
                            cfg.int8_refusal).settings()
    key = vector_identity.vector_key(settings)
    path = store_for(cfg.cache_dir or "cache", dataset, data_source(cfg.data), spec.name,
                     cfg.layer, key, echo)
    if spec.own_weights is None:  # a preset's own weights came with it (or failed already)
        refuse_unreachable_imagenet(cfg, path, spec)  # offline: now, not after building it

    with fs.StoreLock(path) as lock:
        if not lock.read_only:
            journal.clean_stale_files(path)
        old = _open_existing(path, key)
        done = journal.index_store(old, _damaged_rows(old, echo)) if old is not None else {}
        parts_dir = journal.parts_dir_for(path)
        if cfg.cluster:  # Ray is there; take in what an interrupted run's actors wrote
            cluster.prepare(cfg, parts_dir)
        done.update(journal.index_parts(parts_dir))
        current = {s.id: s.stamp for s in dataset.samples}
        done = {sid: d for sid, d in done.items() if current.get(sid) == d.stamp}
        todo = [s for s in dataset.samples if s.id not in done]

        if old is not None and not todo and not parts_dir.exists() and \
                _same_contents(old, dataset, clip_rows):
            echo(f"cache hit: {path.name} already holds these files with these settings "
                 "(no backbone run)")
            n_rows, n_fail = _counts_checked(old, cfg.weights, echo)
            old.close()
            return _with_views(ExtractResult(path, len(dataset.samples), n_rows, 0, n_fail,
                                             time.perf_counter() - started, True,
                                             kind=spec.kind, unit=reader.unit),
                               cfg, spec, reader, engine, settings, dataset, echo)
        if lock.read_only:  # nothing can be extracted into it
            if old is not None:
                old.close()
            raise fs.StoreError(
                f"--cache-dir {path.parent} is read-only and holds no complete store for these "
                f"files and settings ({len(todo)} of {len(dataset.samples)} file(s) to extract); "
                "pass a writable --cache-dir (a store made there can be copied into the shared "
                "one)")
        feature_shape = tuple(old.feature_shape) if old is not None else None
        steady_rate, n_inputs = 0.0, 0
        # An appended store keeps the guard measured when its int8 model was made.
        native_report = dict(old.provenance.get("int8_guard") or {}) if old is not None else {}
        if old is not None:
            old.close()

        if todo:
            echo(f"{len(todo)} of {len(dataset.samples)} file(s) to extract with {spec.name} "
                 f"({_weights_label(cfg.weights, weights_id)}), layer {cfg.layer}")
            prepared = engine.prepare(spec, reader, cfg, settings, dataset.samples, echo)
            native_report.update(getattr(prepared, "report", None) or {})
            if cfg.cluster:  # the same journal, written by Ray actors
                feature_shape, steady_rate, n_inputs = cluster.extract_on_cluster(
                    todo, cfg, parts_dir, progress, echo, prepared=prepared)
            else:
                feature_shape, steady_rate, n_inputs = extract_into_journal(
                    todo, spec, reader, cfg, parts_dir, progress, prepared=prepared)
        done.update(journal.index_parts(parts_dir))  # what this run just added
        done = {sid: d for sid, d in done.items() if current.get(sid) == d.stamp}
        if feature_shape is None:
            feature_shape = _feature_shape_from_parts(parts_dir)
        provenance = _provenance(settings, cfg.as_dict(), dataset, weights_id, engine.name)
        if cfg.plugin:  # predict and export import them again to rebuild this extractor
            provenance["extract_options"]["plugin"] = list(cfg.plugin)
        if native_report:  # the int8 accuracy guard, measured when the model was quantized
            provenance["int8_guard"] = native_report
        if choice.asked == "auto":  # what auto chose, why, and its guard's figures
            provenance["precision_choice"] = choice.record()
        journal.assemble(path, dataset, done, feature_shape=feature_shape or (0,),
                         dtype=cfg.dtype, clip_rows=clip_rows, key=key, provenance=provenance)
        journal.remove_parts(path)
        try:
            _write_resolved_config(path, cfg)
        except OSError as exc:
            if space.is_out_of_space(exc):
                raise space.out_of_space_error(path.parent, "writing the store's config "
                                               "(the store itself is complete)") from None
            raise
        with fs.FeatureStore(path) as store:
            n_rows, n_fail = _counts_checked(store, cfg.weights, echo)
    return _with_views(ExtractResult(path, len(dataset.samples), n_rows, len(todo), n_fail,
                                     time.perf_counter() - started, False, steady_rate, n_inputs,
                                     spec.kind, reader.unit),
                       cfg, spec, reader, engine, settings, dataset, echo)


def _settle_precision(cfg, engine, asked_engine, spec, reader, weights_id, samples, echo):
    """Resolves `--precision auto` (its bfloat16 measured against float32 by the engine first)
    and says which and why in one line; returns (config, vector settings, PrecisionChoice,
    engine)."""
    choice = auto_precision(cfg)
    cfg = cfg.replace(precision=choice.precision)
    settings = vector_settings(cfg.as_dict(), spec, reader, weights_id)
    if choice.needs_guard:  # counted in the run's time, like everything after `started`
        choice = choice.after_guard(engine.guard_bfloat16(spec, reader, cfg, settings, samples,
                                                          echo))
        if choice.precision != cfg.precision:
            cfg = cfg.replace(precision=choice.precision)
            settings = vector_settings(cfg.as_dict(), spec, reader, weights_id)
            if asked_engine == "auto":  # the engine was chosen for bfloat16: choose again
                again = choose_engine(cfg.replace(engine="auto"))
                if again.keras_backend == active_backend():
                    engine, cfg = again, cfg.replace(engine=again.name)
    if choice.asked == "auto":
        echo(choice.line())
    return cfg, settings, choice, engine


def _with_views(result: ExtractResult, cfg, spec, reader, engine, settings, dataset, echo):
    """With --views: the views store beside the plain one becomes the result (its path last)."""
    if not cfg.views:
        return result

    path, n_new, seconds = extract_views(cfg, spec, reader, engine, settings, result.path,
                                         dataset, echo)
    echo(f"views: {n_new} new view(s) extracted in {seconds:.1f}s; plain store {result.path.name}")
    result.path, result.n_rows = path, result.n_rows * (cfg.views + 1)
    result.plain_cache_hit = result.cache_hit
    result.n_views_extracted, result.views_seconds = n_new, seconds
    result.cache_hit = result.cache_hit and n_new == 0
    return result


def _counts_checked(store, weights: str, echo) -> tuple:
    """(rows, failures) of the store, after one warning line when its vectors carry (almost)
    nothing (vector_checks.py)."""
    warning = degenerate_vectors(store, weights)
    if warning:
        echo(warning)
    return len(store), len(store.failures())


def _discover(cfg: ExtractConfig, reader, require_labels: bool):
    """The dataset as `reader` (a reader or its class) sees it, never the folders the tool
    wrote (its run and audit folders may lie inside the data folder)."""
    return discover(cfg.data, reader.extensions, leaf_dirs=reader.leaf_dirs,
                    require_labels=require_labels)


def _weights_label(weights: str, weights_id: str) -> str:
    if weights == "none":
        return "weights=none: RANDOM weights, not pretrained"
    if weights == "imagenet":  # a KerasHub preset's own weights have their own identity
        return "weights=imagenet" if weights_id == "imagenet" else f"preset weights {weights_id}"
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


def _damaged_rows(store, echo) -> list:
    """Rows of an existing store that fail their checksum or hold NaN or inf: their files are
    extracted again, so a damaged store is repaired by the same command, never reused."""
    corrupt, non_finite = integrity.damaged_rows(store.file["features"])
    if corrupt or non_finite:
        echo(f"{store.path.name}: {len(corrupt) + len(non_finite)} damaged row(s) ("
             f"{len(corrupt)} failing their checksum, {len(non_finite)} NaN or inf); their files "
             "are extracted again")
    return sorted(set(corrupt) | set(non_finite))


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
        "data_source": data_source(opts["data"]),  # tells datasets of one name apart
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


def _write_resolved_config(path: Path, cfg: ExtractConfig) -> None:
    target = path.with_name(path.name[:-3] + ".config.toml")
    tmp = target.with_name(target.name + ".tmp")
    write_toml(tmp, "extract", cfg.as_dict())
    os.replace(tmp, target)
