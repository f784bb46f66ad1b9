"""Cached augmented views: K seeded augmentations of every file, stored beside its plain row.

`extract --views K --augment RECIPE` first makes (or finds) the plain store exactly as without
views, then writes `<plain store>-views<K>-<key10>.h5`: a copy of the plain rows (view 0) and
K augmented views of each file after them (views 1..K, the file's id, label, split and group).
The key of the view rows is the vectors' identity plus the recipe and the view seed; view v of a
file is the same whatever K, so a larger K reuses every view any sibling store of the same key
holds and runs the backbone for the new views only. The plain store is never changed, and the
views store's own key (what predict and export compare) is the plain rows' key.

Finished views are journaled as plain extraction journals finished files (journal.py: part
files beside the views store, the view number in the `clip_index` column), so an interrupted
run (Ctrl-C, SIGKILL, a full disk) keeps them and the same command extracts only the views
still missing. The views store is then written chunk by chunk from the parts and the sibling
stores: no more than one chunk of views is held in memory.

    path, n_new, seconds = extract_views(cfg, spec, reader, engine, settings, plain_path,
                                         dataset, echo)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from pipeline.config import environment_value
from pipeline.errors import ConfigError, PipelineError, StoreError
from pipeline.extract import journal
from pipeline.extract.augment import augment_chunks, parse_recipe, view_rng
from pipeline.extract.prefetch import OrderedPrefetcher
from pipeline.store import feature_store as fs
from pipeline.store import space, vector_identity
from pipeline.extract.forward_pass import build_model

_COLUMNS = ("ids", "labels", "split", "group", "stamps")
_CHUNK = 4096  # rows read and written at a time
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


def _read_views(keys: list, known: dict, parts_dir: Path, dtype) -> np.ndarray:
    """The vectors of `keys`, in that order, read source by source: a sibling store (checked
    reads) or a part of this store's journal."""
    out = None
    by_source: dict = {}
    for i, key in enumerate(keys):
        by_source.setdefault(known[key][1], []).append(i)
    for source, at in by_source.items():
        rows = np.array([known[keys[i]][2] for i in at], dtype=np.int64)
        if source.parent == parts_dir:
            vectors = journal.read_part_rows(source, rows, dtype)
        else:
            with fs.FeatureStore(source) as store:
                vectors = store.read_rows(rows, dtype)
        if out is None:
            out = np.empty((len(keys), *vectors.shape[1:]), dtype=dtype)
        out[at] = vectors
    return out


def _same_plain(path: Path, plain) -> bool:
    """True when the views store at `path` was made from exactly these plain rows."""
    try:
        with fs.FeatureStore(path) as store:
            return len(store) == len(plain) and all(
                np.array_equal(store.column(c), plain.column(c)) for c in _COLUMNS)
    except StoreError:
        return False


def _run_views(todo: list, recipe, cfg, model, reader, spec, writer) -> None:
    """Extracts each (sample, [views]) in `todo` into the journal `writer`: each file decoded
    once, its views drawn from their own seeded generators, batched through the backbone; a
    view is journaled as soon as all its inputs ran, published every PIPELINE_JOURNAL_ROWS views or 5
    seconds, and on a clean stop (Ctrl-C, an error) before it ends."""
    input_shape = tuple(spec.input_shape_for(cfg.input_size))
    pre = getattr(reader, "preprocess", None)
    batch = np.zeros((cfg.batch_size, *input_shape), dtype=np.float32 if pre else np.uint8)
    owners: list = []  # (index in todo, view) of each filled batch row
    outputs: dict = {}  # (index, view) -> its inputs' vectors so far
    expected: dict = {}  # (index, view) -> how many inputs it has
    last_flush = time.monotonic()
    journal_rows = environment_value("PIPELINE_JOURNAL_ROWS")

    def chunks(item):
        sample, views = item
        decoded = list(reader.read(sample.path))
        for v in views:
            view = np.concatenate(augment_chunks(recipe, decoded,
                                                 view_rng(cfg.view_seed, sample.id, v)))
            yield np.asarray(pre(view.astype(np.float32)), np.float32) if pre else view

    def run_batch():
        nonlocal last_flush
        feats = np.asarray(model.predict_on_batch(batch))
        for row, owner in enumerate(owners):
            outputs.setdefault(owner, []).append(feats[row])
        finished = {owner for owner in owners if len(outputs[owner]) == expected[owner]}
        owners.clear()
        for index, v in sorted(finished):
            rows = reader.aggregate(np.stack(outputs.pop((index, v))).astype(np.float32))
            writer.add(todo[index][0], rows[:1], [v])
            del expected[(index, v)]
        if writer.pending >= journal_rows or time.monotonic() - last_flush > 5:
            writer.flush()
            last_flush = time.monotonic()

    counts = {}
    workers = cfg.workers or max(2, min(32, os.cpu_count() or 2))
    try:
        for index, event, payload in OrderedPrefetcher(todo, chunks, workers=workers):
            sample, views = todo[index]
            if event == "fail":
                raise StoreError(f"{sample.id} decoded for its plain row but not now "
                                 f"({payload}); extract again without --views to refresh the "
                                 "store first")
            if event != "chunk":
                continue
            v = views[counts.get(index, 0)]
            counts[index] = counts.get(index, 0) + 1
            expected[(index, v)] = len(payload)
            for item in payload:
                batch[len(owners)] = item
                owners.append((index, v))
                if len(owners) == cfg.batch_size:
                    run_batch()
        if owners:
            batch[len(owners):] = 0
            run_batch()
    except (PipelineError, KeyboardInterrupt):
        writer.flush()  # a clean stop keeps every finished view for the next run
        raise
    writer.flush()


def extract_views(cfg, spec, reader, engine, settings: dict, plain_path: Path, dataset,
                  echo=print) -> tuple[Path, int, float]:
    """Writes (or finds) the views store of `plain_path`; (its path, views the backbone ran,
    seconds of that run)."""
    check_views_reader(reader)
    recipe = parse_recipe(cfg.augment)
    identity = views_identity(settings, cfg.augment, cfg.view_seed)
    view_key = vector_identity.vector_key(identity)
    path = views_path(plain_path, cfg.views, view_key)
    parts_dir = journal.parts_dir_for(path)
    with fs.StoreLock(path), fs.FeatureStore(plain_path) as plain:
        journal.clean_stale_files(path)  # a killed run's temporary files (the lock is ours)
        ids, stamps = plain.column("ids"), plain.column("stamps")
        stamp_of = dict(zip(ids, stamps))

        def finished() -> dict:
            """Views of these files' current stamps in sibling stores or this journal."""
            known = {**_known_views(plain_path, view_key), **journal.index_view_parts(parts_dir)}
            return {k: where for k, where in known.items() if stamp_of.get(k[0]) == where[0]}

        known = finished()
        wanted = [(sid, v) for v in range(1, cfg.views + 1) for sid in ids]
        missing = [k for k in wanted if k not in known]
        if not missing and path.exists() and _same_plain(path, plain):
            journal.remove_parts(path)  # a run stopped after writing the store left these
            echo(f"cache hit: {path.name} already holds {cfg.views} view(s) of each file "
                 "(no backbone run)")
            return path, 0, 0.0
        by_id = {s.id: s for s in dataset.samples}
        todo_views: dict = {}
        for sid, v in missing:
            todo_views.setdefault(sid, []).append(v)
        todo = [(by_id[sid], sorted(vs)) for sid, vs in todo_views.items()]
        seconds = 0.0
        if todo:
            echo(f"{len(missing)} view(s) of {len(todo)} file(s) to extract ({recipe.canonical()}"
                 f"; {len(wanted) - len(missing)} reused)")
            model = build_model(spec, reader, cfg,
                                engine.prepare(spec, reader, cfg, settings, dataset.samples, echo))
            started = time.perf_counter()
            _run_views(todo, recipe, cfg, model, reader, spec, journal.PartWriter(parts_dir))
            seconds = time.perf_counter() - started
            known = finished()
        _write(path, plain, wanted, known, parts_dir, cfg, identity, view_key)
        journal.remove_parts(path)
    return path, len(missing), seconds


def _write(path: Path, plain, wanted: list, known: dict, parts_dir: Path, cfg, identity,
           view_key) -> None:
    """The plain rows as they are, then the views in `wanted` order, read from where they are
    `known` a chunk at a time; published atomically. A full disk is one line, and the journal
    stays for the next run."""
    row_of = {sid: i for i, sid in enumerate(plain.column("ids"))}
    dtype = plain.file["features"].dtype
    try:
        writer = fs.StoreWriter(path, plain.feature_shape, dtype=str(dtype), view_rows=True)
    except BaseException as exc:
        space.discard(None, path.with_name(f"{path.name}.tmp-{os.getpid()}"))
        if space.is_out_of_space(exc):
            raise space.out_of_space_error(path.parent, "writing the views store") from None
        raise
    try:
        columns = {c: plain.column(c) for c in _COLUMNS}
        for start in range(0, len(plain), _CHUNK):
            rows = np.arange(start, min(start + _CHUNK, len(plain)))
            writer.append(plain.read_rows(rows, dtype), view=np.zeros(len(rows), np.int32),
                          **{c: values[rows] for c, values in columns.items()})
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start:start + _CHUNK]
            rows = np.array([row_of[sid] for sid, _ in chunk], dtype=np.int64)
            writer.append(_read_views(chunk, known, parts_dir, np.float32).astype(dtype),
                          view=np.array([v for _, v in chunk], np.int32),
                          **{c: values[rows] for c, values in columns.items()})
        failures = plain.file["failures"]
        writer.write_failures(*(fs._decode(failures[n][:]) for n in ("ids", "stamps", "reasons")))
        provenance = dict(plain.provenance)
        provenance["views"] = {**identity["views"], "count": int(cfg.views), "key": view_key}
        writer.commit(plain.key, plain.class_names, provenance)
    except BaseException as exc:
        writer.abort()
        if space.is_out_of_space(exc):
            raise space.out_of_space_error(path.parent, "writing the views store") from None
        raise
