"""Vectors made elsewhere, read in blocks so a file far larger than memory imports.

Two shapes of input:
  - an array file (.npy and HDF5 read a block at a time; .npz, compressed, read whole) whose
    rows a CSV table describes, one line per vector in the same order;
  - a Parquet file holding a vector column beside the id, label, split and group columns.

`open_source(cfg)` returns a `VectorSource`: the row count, one vector's shape, the table's
columns by role (id, label, split, group; class and view when the file was written by
`vectors`) and `blocks()`, which yields (first row, float32 block) pairs. Nothing here checks
the values: vector_import.py does, with the row numbers these give.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from pipeline.errors import DataError
from pipeline.tables import TableError, read_rows

BLOCK_ROWS = 8192
BOM = "\ufeff"
ARRAY_SUFFIXES = (".npy", ".npz", ".h5", ".hdf5")
# Columns `vectors` writes beside those the flags name: kept so a round trip loses nothing.
EXTRA_COLUMNS = ("class", "view")


@dataclass
class VectorSource:
    """One input's rows: `columns` maps a role (id, label, split, group, class, view) to one
    value per row; a role the input lacks is absent."""

    name: str
    n_rows: int
    shape: tuple
    blocks: Callable[[], Iterator[tuple[int, np.ndarray]]]
    columns: dict = field(default_factory=dict)
    files: tuple = ()

    def digest(self) -> str:
        """sha256 over the bytes of every file read: the vectors' half of the store's identity."""
        sha = hashlib.sha256()
        for path in self.files:
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    sha.update(chunk)
        return sha.hexdigest()


def roles(cfg) -> dict:
    """role -> the column name that holds it."""
    return {"id": cfg.id_column, "label": cfg.label_column, "split": cfg.split_column,
            "group": cfg.group_column, **{extra: extra for extra in EXTRA_COLUMNS}}


def _regular_file(path: str, flag: str) -> Path:
    found = Path(path)
    if not found.is_file():
        raise DataError(f"{flag} {path}: no such file, or not a regular file; give the path "
                        "of a file")
    return found


def open_source(cfg) -> VectorSource:
    """The input `cfg.vectors` names, with its table (`cfg.table`) for an array file."""
    path = _regular_file(cfg.vectors, "--vectors")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        if cfg.table:
            raise DataError(f"--vectors {path.name} is Parquet: it holds its own id, label, split "
                            "and group columns; leave --table out (name other columns with "
                            "--id-column, --label-column, ...)")
        return _parquet_source(path, cfg)
    if suffix not in ARRAY_SUFFIXES:
        raise DataError(f"--vectors {path}: {suffix or 'no suffix'} is not a vectors file this "
                        "imports; give a .parquet file, or a .npy, .npz or HDF5 (.h5, .hdf5) "
                        "file with --table")
    if not cfg.table:
        raise DataError(f"--vectors {path.name} holds vectors only: give --table CSV with "
                        "id,label[,split][,group], one line per vector in the same order")
    table = _regular_file(cfg.table, "--table")
    array = _array(path, suffix, cfg.dataset)
    if array.ndim < 2 or array.dtype.kind not in "fiu" or not array.shape[0]:
        raise DataError(f"--vectors {path.name} holds a {array.dtype} array of shape "
                        f"{array.shape}; give one row of numbers per vector (rows x dimensions)")
    columns = _table_columns(table, cfg)
    if len(columns["id"]) != array.shape[0]:
        raise DataError(f"{path.name} holds {array.shape[0]} vector(s) but {table.name} has "
                        f"{len(columns['id'])} row(s); give one table line per vector, in the "
                        "vectors' order")

    def blocks():
        for start in range(0, array.shape[0], BLOCK_ROWS):
            yield start, np.asarray(array[start:start + BLOCK_ROWS], dtype=np.float32)

    return VectorSource(path.name, int(array.shape[0]), tuple(array.shape[1:]), blocks,
                        columns, (path, table))


def _array(path: Path, suffix: str, dataset: str | None):
    if suffix == ".npy":
        try:
            return NpyRows(path)
        except ValueError as exc:
            raise DataError(f"--vectors {path.name} is not a numeric .npy array ({exc})") from None
    if suffix == ".npz":
        try:
            archive = np.load(path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise DataError(f"--vectors {path.name} is not a readable .npz archive ({exc})") \
                from None
        names = list(archive.files)
        if dataset is None and len(names) != 1:
            raise DataError(f"--vectors {path.name} holds arrays {', '.join(names)}; name the "
                            "vectors with --dataset NAME")
        if (dataset or names[0]) not in names:
            raise DataError(f"--dataset {dataset}: {path.name} has no such array; it holds "
                            f"{', '.join(names)}")
        return archive[dataset or names[0]]
    import h5py  # lazy: h5py is heavy and only HDF5 input needs it here

    try:
        file = h5py.File(path, "r")
    except OSError:
        raise DataError(f"--vectors {path.name} is not a readable HDF5 file; give .npy, .npz, "
                        ".parquet or HDF5 vectors") from None
    found = []
    file.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset)
                    else None)
    if not dataset or not isinstance(file.get(dataset), h5py.Dataset):
        file.close()
        raise DataError(f"--vectors {path.name} is HDF5: give --dataset PATH, the dataset holding "
                        f"the vectors (it holds: {', '.join(found[:8]) or 'no dataset'})")
    return file[dataset]


class NpyRows:
    """An .npy file's rows read by plain file reads: unlike a memory map, the rows read do not
    stay mapped into the process, so reading a file of any size keeps memory at one block."""

    def __init__(self, path: Path):
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(fh)
            self.offset = fh.tell()
        if fortran or dtype.hasobject:
            raise ValueError("a C-ordered array of numbers is needed; save it with np.save("
                             "path, np.ascontiguousarray(vectors))")
        self.path, self.shape, self.dtype = path, tuple(shape), dtype
        self.ndim = len(self.shape)
        self.row_items = int(np.prod(self.shape[1:], dtype=np.int64)) if self.ndim else 0

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.shape[0])
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + start * self.row_items * self.dtype.itemsize)
            data = np.fromfile(fh, dtype=self.dtype, count=(stop - start) * self.row_items)
        if data.size != (stop - start) * self.row_items:
            raise DataError(f"{self.path.name} ends before row {stop - 1}: the file is cut short "
                            "(save the vectors again)")
        return data.reshape(stop - start, *self.shape[1:])


def _table_columns(table: Path, cfg) -> dict:
    try:
        rows = read_rows(table)
    except TableError as exc:  # not UTF-8, or not CSV: the message says where
        raise DataError(f"--table {table.name}: {exc}; save it as CSV UTF-8") from None
    if rows and next(iter(rows[0]), "").startswith(BOM):  # saved as "CSV UTF-8" by a spreadsheet
        rows = [{key.removeprefix(BOM): value for key, value in row.items()} for row in rows]
    header = list(rows[0]) if rows else _header(table)
    for role in ("id", "label"):
        if roles(cfg)[role] not in header:
            raise DataError(f"{table.name} has no '{roles(cfg)[role]}' column (its header: "
                            f"{', '.join(header)}); give id,label[,split][,group], or name the "
                            f"column with --{role}-column")
    return {role: [row.get(name) or "" for row in rows]
            for role, name in roles(cfg).items() if name in header}


def _header(table: Path) -> list:
    with table.open(encoding="utf-8") as fh:
        return [cell.strip().removeprefix(BOM) for cell in fh.readline().rstrip("\r\n").split(",")]


def _parquet_source(path: Path, cfg) -> VectorSource:
    import pyarrow as pa  # lazy: pyarrow is heavy; only Parquet input needs it
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        # Without pre-buffering, one row group at a time is held, not several read ahead.
        parquet = pq.ParquetFile(path, pre_buffer=False)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"--vectors {path.name} is not a readable Parquet file ({exc})") from None
    schema = parquet.schema_arrow
    vector = cfg.vector_column
    for role, name in (("vector", vector), ("id", cfg.id_column)):
        if name not in schema.names:
            raise DataError(f"{path.name} has no '{name}' column (it has: "
                            f"{', '.join(schema.names)}); name it with --{role}-column")
    kind = schema.field(vector).type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)
            or pa.types.is_fixed_size_list(kind)) or not (
            pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)):
        raise DataError(f"{path.name}: column '{vector}' is {kind}; give a list or fixed-size "
                        "list of numbers per row")
    present = {role: name for role, name in roles(cfg).items() if name in schema.names}
    table = parquet.read(columns=list(present.values()))
    columns = {role: ["" if v is None else v for v in table.column(name).to_pylist()]
               for role, name in present.items()}
    n = parquet.metadata.num_rows
    if not n:
        raise DataError(f"{path.name} has no rows")
    if pa.types.is_fixed_size_list(kind):
        dim = kind.list_size
    else:
        first = next(parquet.iter_batches(batch_size=1, columns=[vector])).column(0)[0]
        dim = len(first) if first.is_valid else 0

    def blocks():
        start = 0
        for batch in parquet.iter_batches(batch_size=BLOCK_ROWS, columns=[vector],
                                          use_threads=False):
            values = batch.column(0)
            lengths = pc.fill_null(pc.list_value_length(values), -1).to_numpy(
                zero_copy_only=False)
            wrong = np.flatnonzero(lengths != dim)
            if len(wrong):
                row = start + int(wrong[0])
                held = "no vector" if lengths[wrong[0]] < 0 else f"{lengths[wrong[0]]} values"
                raise DataError(f"{path.name}: row {row} (column '{vector}') holds {held} where "
                                f"row 0 holds {dim}; every vector needs the same length")
            flat = values.flatten().to_numpy(zero_copy_only=False)
            yield start, np.asarray(flat, dtype=np.float32).reshape(len(values), dim)
            start += len(values)

    return VectorSource(path.name, n, (dim,), blocks, columns, (path,))
