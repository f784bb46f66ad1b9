"""Cached augmented views: K seeded augmentations of every file, stored beside its plain row.

`extract --views K --augment RECIPE` first makes (or finds) the plain store exactly as without
views, then writes `<plain store>-views<K>-<key10>.h5`: a copy of the plain rows (view 0) and
K augmented views of each file after them (views 1..K, the file's id, label, split and group).
The key of the view rows is the vectors' identity plus the recipe and the view seed; view v of a
file is the same whatever K, so a larger K reuses every view any sibling store of the same key
holds and runs the backbone for the new views only. The plain store is never changed, and the
views store's own key (what predict and export compare) is the plain rows' key.

    path, n_new = extract_views(cfg, spec, reader, engine, settings, plain_path, dataset, echo)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, StoreError
from pipeline.extract.augment import augment_chunks, parse_recipe, view_rng
from pipeline.extract.prefetch import OrderedPrefetcher
from pipeline.store import feature_store as fs
from pipeline.store import vector_identity
from pipeline.extract.journal import clean_stale_files
from pipeline.extract.forward_pass import build_model

_COLUMNS = ("ids", "labels", "split", "group", "stamps")
# How a view's random choices are drawn, in the view rows' identity: 2 draws once per file and
# view for all its chunks (views keyed without it were drawn per chunk and are made again).
DRAW_VERSION = 2


def views_identity(settings: dict, recipe_text: str, seed: int) -> dict:
    """The identity of the view rows: the plain rows' identity plus the recipe, the seed and
    how views are drawn."""
    return {**settings, "views": {"recipe": parse_recipe(recipe_text).canonical(),
                                  "seed": int(seed), "draw": DRAW_VERSION}}


def views_path(plain_path: Path, count: int, view_key: str) -> Path:
    return plain_path.with_name(f"{plain_path.stem}-views{int(count)}-{view_key[:10]}.h5")


def check_views_reader(reader) -> None:
    if reader.rows_per_file is None:
        raise ConfigError("--views needs one row per file: with --aggregate per_clip a file has "
                          "several rows; use --aggregate mean, or leave out --views")


def _known_views(plain_path: Path, view_key: str) -> dict:
    """(id, view) -> (stamp, store path, row) of every view a sibling store of this key holds."""
    known = {}
    for sibling in sorted(plain_path.parent.glob(f"{plain_path.stem}-views*-{view_key[:10]}.h5")):
        try:
            with fs.FeatureStore(sibling) as store:
                view, ids = store.full_column("view"), store.full_column("ids")
                stamps = store.full_column("stamps")
                for row in range(store.n_plain, len(view)):
                    known[(ids[row], int(view[row]))] = (stamps[row], sibling, row)
        except StoreError:
            continue  # unreadable or damaged: its views are extracted again
    return known


def _read_known(needed: list, known: dict) -> dict:
    """The vectors of reused views, read store by store (checked reads)."""
    out, by_store = {}, {}
    for key in needed:
        by_store.setdefault(known[key][1], []).append(key)
    for path, keys in by_store.items():
        with fs.FeatureStore(path) as store:
            rows = np.array([known[k][2] for k in keys], dtype=np.int64)
            for k, vec in zip(keys, store.read_rows(rows)):
                out[k] = vec
    return out


def _same_plain(path: Path, plain) -> bool:
    """True when the views store at `path` was made from exactly these plain rows."""
    try:
        with fs.FeatureStore(path) as store:
            return len(store) == len(plain) and all(
                np.array_equal(store.column(c), plain.column(c)) for c in _COLUMNS)
    except StoreError:
        return False


def _run_views(todo: list, recipe, cfg, model, reader, spec, echo) -> dict:
    """(id, view) -> vector for each (sample, [views]) in `todo`: each file decoded once, its
    views drawn from their own seeded generators, batched through the backbone."""
    input_shape = tuple(spec.input_shape_for(cfg.input_size))
    pre = getattr(reader, "preprocess", None)
    batch = np.zeros((cfg.batch_size, *input_shape), dtype=np.float32 if pre else np.uint8)
    owners: list = []  # (id, view) of each filled batch row
    outputs: dict = {}

    def chunks(item):
        sample, views = item
        decoded = list(reader.read(sample.path))
        for v in views:
            view = np.concatenate(augment_chunks(recipe, decoded,
                                                 view_rng(cfg.view_seed, sample.id, v)))
            yield np.asarray(pre(view.astype(np.float32)), np.float32) if pre else view

    def run_batch():
        feats = np.asarray(model.predict_on_batch(batch))
        for row, owner in enumerate(owners):
            outputs.setdefault(owner, []).append(feats[row])
        owners.clear()

    counts = {}
    workers = cfg.workers or max(2, min(32, os.cpu_count() or 2))
    for index, event, payload in OrderedPrefetcher(todo, chunks, workers=workers):
        sample, views = todo[index]
        if event == "fail":
            raise StoreError(f"{sample.id} decoded for its plain row but not now ({payload}); "
                             "extract again without --views to refresh the store first")
        if event != "chunk":
            continue
        v = views[counts.get(index, 0)]
        counts[index] = counts.get(index, 0) + 1
        for item in payload:
            batch[len(owners)] = item
            owners.append((sample.id, v))
            if len(owners) == cfg.batch_size:
                run_batch()
    if owners:
        batch[len(owners):] = 0
        run_batch()
    return {key: reader.aggregate(np.stack(rows).astype(np.float32))[0]
            for key, rows in outputs.items()}


def extract_views(cfg, spec, reader, engine, settings: dict, plain_path: Path, dataset,
                  echo=print) -> tuple[Path, int, float]:
    """Writes (or finds) the views store of `plain_path`; (its path, views the backbone ran,
    seconds of that run)."""
    check_views_reader(reader)
    recipe = parse_recipe(cfg.augment)
    identity = views_identity(settings, cfg.augment, cfg.view_seed)
    view_key = vector_identity.vector_key(identity)
    path = views_path(plain_path, cfg.views, view_key)
    with fs.StoreLock(path), fs.FeatureStore(plain_path) as plain:
        clean_stale_files(path)  # a killed run's temporary file (the lock is ours)
        ids, stamps = plain.column("ids"), plain.column("stamps")
        known = _known_views(plain_path, view_key)
        wanted = [(sid, v) for v in range(1, cfg.views + 1) for sid in ids]
        stamp_of = dict(zip(ids, stamps))
        fresh = {k for k in wanted if k in known and known[k][0] == stamp_of[k[0]]}
        missing = [k for k in wanted if k not in fresh]
        if not missing and path.exists() and _same_plain(path, plain):
            echo(f"cache hit: {path.name} already holds {cfg.views} view(s) of each file "
                 "(no backbone run)")
            return path, 0, 0.0
        by_id = {s.id: s for s in dataset.samples}
        todo_views: dict = {}
        for sid, v in missing:
            todo_views.setdefault(sid, []).append(v)
        todo = [(by_id[sid], sorted(vs)) for sid, vs in todo_views.items()]
        vectors = _read_known(sorted(fresh), known)
        seconds = 0.0
        if todo:
            echo(f"{len(missing)} view(s) of {len(todo)} file(s) to extract ({recipe.canonical()}"
                 f"; {len(fresh)} reused)")

            model = build_model(spec, reader, cfg,
                                engine.prepare(spec, reader, cfg, settings, dataset.samples, echo))
            started = time.perf_counter()
            vectors.update(_run_views(todo, recipe, cfg, model, reader, spec, echo))
            seconds = time.perf_counter() - started
        _write(path, plain, wanted, vectors, cfg, identity, view_key)
    return path, len(missing), seconds


def _write(path: Path, plain, wanted: list, vectors: dict, cfg, identity, view_key) -> None:
    """The plain rows as they are, then the views in `wanted` order; published atomically."""
    row_of = {sid: i for i, sid in enumerate(plain.column("ids"))}
    features = plain.file["features"]
    writer = fs.StoreWriter(path, plain.feature_shape, dtype=str(features.dtype),
                            view_rows=True)
    try:
        columns = {c: plain.column(c) for c in _COLUMNS}
        if len(plain):
            writer.append(plain.read_rows(np.arange(len(plain)), features.dtype),
                          view=np.zeros(len(plain), np.int32), **columns)
        for start in range(0, len(wanted), 4096):
            part = wanted[start:start + 4096]
            rows = np.array([row_of[sid] for sid, _ in part], dtype=np.int64)
            writer.append(np.stack([vectors[k] for k in part]).astype(features.dtype),
                          view=np.array([v for _, v in part], np.int32),
                          **{c: values[rows] for c, values in columns.items()})
        failures = plain.file["failures"]
        writer.write_failures(*(fs._decode(failures[n][:]) for n in ("ids", "stamps", "reasons")))
        provenance = dict(plain.provenance)
        provenance["views"] = {**identity["views"], "count": int(cfg.views), "key": view_key}
        writer.commit(plain.key, plain.class_names, provenance)
    except BaseException:
        writer.abort()
        raise
