"""`vectors`: a store's vectors and rows as Parquet (pandas, DuckDB, Polars read it) or as an
.npy array with its CSV table beside it.

Each row carries id, label (its class name, blank when unlabelled), class (the label's index,
-1 when unlabelled), split, group, and view in a store of augmented views: the columns `import`
reads, so `import` of this file gives back the same store. Rows are written in blocks, and to a
temporary name renamed at the end: an existing file is never replaced, and a failed write
leaves nothing.

    path = export_vectors({"store": "cache/s.h5", "format": "parquet"})
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, OutputError
from pipeline.interop.options import VectorsConfig
from pipeline.store.feature_store import open_store
from pipeline.tables import write_rows

BLOCK_ROWS = 8192


def export_vectors(options) -> Path:
    """Writes the vectors of `options.store` and returns the file's path.

    Args:
        options: a `VectorsConfig`, or a mapping of any `vectors` options (`store` required).
    """
    cfg = VectorsConfig.from_mapping(options)
    if not cfg.store:
        raise ConfigError("vectors needs --store STORE (the .h5 path extract or import printed)")
    with open_store(cfg.store) as store:
        out = Path(cfg.out) if cfg.out else store.path.with_name(
            f"{store.path.name.removesuffix('.h5')}.vectors.{cfg.format}")
        targets = [out] + ([out.with_suffix(".csv")] if cfg.format == "npy" else [])
        for target in targets:
            if target.exists() or target.is_symlink():
                raise OutputError(f"--out {target} exists; vectors never replaces a file: "
                                  "give a new --out path, or remove that file first")
        out.parent.mkdir(parents=True, exist_ok=True)
        columns = row_columns(store)
        write = _write_parquet if cfg.format == "parquet" else _write_npy
        tmp = [t.with_name(f"{t.name}.tmp-{os.getpid()}") for t in targets]
        try:
            write(store, columns, *tmp)
            for done, target in zip(tmp, targets):
                os.replace(done, target)
        finally:
            for leftover in tmp:
                leftover.unlink(missing_ok=True)
    return out


def row_columns(store) -> dict:
    """Every row's id, label, class, split and group (and view when the store has views)."""
    classes = store.full_column("labels")
    names = np.array(list(store.class_names) + [""], dtype=object)  # -1 reads as ""
    index = store.row_index
    columns = {"id": store.full_column("ids").tolist(), "label": names[classes].tolist(),
               "class": classes.astype(np.int64), "split": store.full_column("split")[index.plain],
               "group": store.column("group")[index.plain]}
    columns["split"], columns["group"] = columns["split"].tolist(), columns["group"].tolist()
    if store.n_views:
        columns["view"] = store.full_column("view").astype(np.int32)
    return columns


def _blocks(store):
    n = store.file["features"].shape[0]
    for start in range(0, n, BLOCK_ROWS):
        stop = min(n, start + BLOCK_ROWS)
        yield start, stop, store.read_rows(np.arange(start, stop))


def _write_parquet(store, columns: dict, path: Path) -> None:
    import pyarrow as pa  # lazy: pyarrow is heavy; only these writers need it
    import pyarrow.parquet as pq

    dim = int(np.prod(store.feature_shape))
    fields = [pa.field(name, pa.int32() if name == "view" else pa.int64() if name == "class"
                       else pa.string()) for name in columns]
    schema = pa.schema(fields + [pa.field("vector", pa.list_(pa.float32(), dim))])
    with pq.ParquetWriter(path, schema) as writer:
        for start, stop, block in _blocks(store):
            flat = pa.array(np.ascontiguousarray(block, dtype=np.float32).reshape(-1))
            vectors = pa.FixedSizeListArray.from_arrays(flat, dim)
            arrays = [pa.array(values[start:stop], type=f.type)
                      for f, values in zip(fields, columns.values())]
            writer.write_batch(pa.record_batch(arrays + [vectors], schema=schema))


def _write_npy(store, columns: dict, path: Path, table: Path) -> None:
    n = store.file["features"].shape[0]
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                      shape=(n, *store.feature_shape))
    for start, stop, block in _blocks(store):
        array[start:stop] = block
    array.flush()
    del array
    write_rows(table, list(columns), zip(*(list(values) for values in columns.values())))
