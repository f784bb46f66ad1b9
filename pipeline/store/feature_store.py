"""The HDF5 feature store: schema, cache key, atomic writing and the read API.

One file per cache key. Datasets (one row per sample, or per clip with `clip_index`):
    features    float32|float16 (N, *feature_shape), chunked by rows, each chunk with a
                fletcher32 checksum (stores written before it lack it and stay readable)
    labels      int64, index into attrs["class_names"] (-1 = unlabelled)
    ids         UTF-8, path relative to the data root (`path#clip3` for clip rows)
    split       UTF-8, "train" | "val" | "test" | ""
    group       UTF-8, video / subject / source ("" = none)
    stamps      UTF-8, "size:mtime_ns" of the source file when it was read
    clip_index  int32, only when clips are stored one row each
    view        int32, only in a store of augmented views: 0 = the plain view (those rows
                come first), 1..K = augmented views of the plain row with the same id
    failures/{ids,stamps,reasons}   files that could not be decoded, with why
Root attributes: schema_version, cache_key, class_names (JSON), provenance (JSON) and the
provenance fields one by one for h5dump/HDFView users. For a store made by extract, cache_key
(and the provenance's `vector_key`) is the vectors' identity (`vector_identity.vector_key`):
what made the vectors, never where the data lay; the files are guarded row by row by `stamps`.

Writing never touches the final file in place: `StoreWriter` writes `<name>.tmp-<pid>` and
renames it over the final name only after closing it, so a crash leaves the old store or the
new one, never half of either.

Usage:
    with open_store("cache/flowers-resnet50-pooled-1a2b3c4d5e.h5") as store:
        X, y = store.load("train")
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from pipeline.errors import StoreError
from pipeline.outputs import hold_exclusive_lock, release_lock_file, require_regular_file
from pipeline.store import integrity, space
from pipeline.store.diagnose import not_a_store_message
from pipeline.store.row_index import RowIndex, plain_count

SCHEMA_VERSION = 1
STR = h5py.string_dtype("utf-8")
_META_COLUMNS = ("ids", "labels", "split", "group", "stamps")


def cache_key(settings: dict) -> str:
    """sha256 of everything that changes the vectors (canonical JSON, sorted keys)."""
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def store_path(cache_dir: str | Path, data_name: str, backbone: str, layer: str, key: str) -> Path:
    """`cache/<data>-<backbone>-<layer>-<key10>.h5`: readable, and unique per settings."""
    safe = lambda s: "".join(c if c.isalnum() or c in "-_." else "_" for c in s)  # noqa: E731
    return Path(cache_dir) / f"{safe(data_name)}-{safe(backbone)}-{safe(layer)}-{key[:10]}.h5"


def _chunk_rows(feature_shape: tuple, itemsize: int) -> int:
    row_bytes = int(np.prod(feature_shape, dtype=np.int64)) * itemsize
    return int(max(1, min(4096, (1 << 20) // max(row_bytes, 1))))


class StoreLock:
    """An exclusive lock beside the store. The OS drops it when the holder dies, even by SIGKILL;
    a holder that ends normally or with an error also removes the `.lock` file."""

    def __init__(self, path: Path):
        self.path = Path(str(path) + ".lock")
        self._fh = None

    def __enter__(self):
        self.read_only = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a+")
        except OSError as exc:
            if space.is_out_of_space(exc):
                raise space.out_of_space_error(self.path.parent, "creating the lock") from None
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            # A read-only cache (a shared one, mounted read-only): nothing can be written into
            # it, so nothing is locked; a complete store in it is still read. `read_only` tells
            # the caller to write nothing.
            self._fh, self.read_only = None, True
            return self
        self._fh = hold_exclusive_lock(self._fh, self.path, lambda holder: StoreError(
            f"store {self.path.name[:-5]} is being written by {holder}; wait for that extract "
            "to finish (or use another --cache-dir)."))
        try:  # who holds it, for the message of a second extract; the flock is the lock
            self._fh.seek(0)
            self._fh.truncate()
            self._fh.write(f"pid {os.getpid()}")
            self._fh.flush()
        except OSError:  # a full disk: the lock holds all the same
            pass
        return self

    def __exit__(self, *exc):
        if self._fh is None:  # a read-only cache: nothing was locked
            return
        release_lock_file(self._fh, self.path)


class StoreWriter:
    """Writes a store to a temporary file and publishes it atomically on `commit()`.

    Rows can be appended in chunks (`append`) or scattered into a preallocated file
    (`n_rows=...`, `write_features`), so memory stays bounded whatever the size.
    """

    def __init__(self, path: str | Path, feature_shape: tuple, dtype: str = "float32",
                 n_rows: int | None = None, clip_rows: bool = False, view_rows: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_path = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        self.file = h5py.File(self.tmp_path, "w")
        self.feature_shape = tuple(int(d) for d in feature_shape)
        self.n = 0 if n_rows is None else int(n_rows)
        dt = np.dtype(dtype)
        chunk = _chunk_rows(self.feature_shape, dt.itemsize)
        if n_rows:  # a small store gets small chunks, not a mostly empty 1 MiB one
            chunk = min(chunk, int(n_rows))
        self.file.create_dataset("features", shape=(self.n, *self.feature_shape), dtype=dt,
                                 maxshape=(None, *self.feature_shape),
                                 chunks=(chunk, *self.feature_shape), fletcher32=True)
        for name in _META_COLUMNS:
            kind = np.int64 if name == "labels" else STR
            self.file.create_dataset(name, shape=(self.n,), dtype=kind, maxshape=(None,),
                                     chunks=(4096,))
        for name, wanted in (("clip_index", clip_rows), ("view", view_rows)):
            if wanted:
                self.file.create_dataset(name, shape=(self.n,), dtype=np.int32,
                                         maxshape=(None,), chunks=(4096,))

    def write_features(self, rows: np.ndarray, features: np.ndarray) -> None:
        """Writes `features` into rows `rows` (any order) of a preallocated store."""
        rows = np.asarray(rows)
        order = np.argsort(rows, kind="stable")
        rows, features = rows[order], features[order]
        if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
            self.file["features"][rows[0]:rows[-1] + 1] = features
        elif len(rows):
            self.file["features"][rows] = features

    def write_columns(self, **columns) -> None:
        """Writes whole metadata columns (`ids=`, `labels=`, ...) of a preallocated store."""
        for name, values in columns.items():
            self.file[name][:] = _as_column(name, values)

    def append(self, features: np.ndarray, **columns) -> None:
        """Appends a chunk of rows; `columns` gives ids, labels, split, group, stamps."""
        k = len(features)
        start, self.n = self.n, self.n + k
        for name in self.file:
            if isinstance(self.file[name], h5py.Dataset):
                self.file[name].resize(self.n, axis=0)
        self.file["features"][start:self.n] = features
        for name, values in columns.items():
            self.file[name][start:self.n] = _as_column(name, values)

    def write_failures(self, ids, stamps, reasons) -> None:
        group = self.file.require_group("failures")
        for name, values in (("ids", ids), ("stamps", stamps), ("reasons", reasons)):
            group.create_dataset(name, data=np.asarray(list(values), dtype=object), dtype=STR)

    def commit(self, key: str, class_names, provenance: dict) -> Path:
        """Writes the attributes, fsyncs and renames the temporary file over the final path."""
        attrs = self.file.attrs
        attrs["schema_version"] = SCHEMA_VERSION
        attrs["cache_key"] = key
        attrs["class_names"] = json.dumps(list(class_names))
        attrs["provenance"] = json.dumps(provenance, sort_keys=True, default=str)
        for field, value in provenance.items():
            if isinstance(value, (str, int, float, bool)):
                attrs[field] = value
        if "failures" not in self.file:
            self.write_failures([], [], [])
        self.file.close()
        with open(self.tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp_path, self.path)
        _fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        space.discard(self.file, self.tmp_path)


def _as_column(name: str, values) -> np.ndarray:
    """Numbers stay numbers; every other column is UTF-8 text (object array for h5py)."""
    return np.asarray(values, dtype=None if name in ("labels", "clip_index", "view") else object)


def read_feature_rows(features: h5py.Dataset, rows: np.ndarray, dtype=np.float32) -> np.ndarray:
    """`features[rows]` in the order given, repeats allowed: h5py itself only reads strictly
    increasing indices, and a contiguous range is read as one slice (far faster)."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return np.zeros((0, *features.shape[1:]), dtype=dtype)
    order = np.argsort(rows, kind="stable")
    uniq, inverse = np.unique(rows[order], return_inverse=True)
    if uniq[-1] - uniq[0] + 1 == len(uniq):
        data = features[uniq[0]:uniq[-1] + 1][inverse]
    else:
        data = features[uniq][inverse]
    out = np.empty_like(data, dtype=dtype)
    out[order] = data
    return out


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _decode(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


class FeatureStore:
    """Read access to one store. Arrays come back as numpy; nothing is loaded until asked."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        require_regular_file(self.path, "store", StoreError, "pass a store extract made")
        if not self.path.is_file():
            raise StoreError(f"feature store not found: {path}. Run `run_pipeline.py extract` "
                             "first; it prints the store's path as its last line.")
        try:
            self.file = h5py.File(self.path, "r")
        except OSError:
            raise StoreError(not_a_store_message(self.path, SCHEMA_VERSION)) from None
        version = self.file.attrs.get("schema_version")
        if version != SCHEMA_VERSION or "features" not in self.file:
            self.file.close()
            raise StoreError(not_a_store_message(self.path, SCHEMA_VERSION))
        try:
            self.class_names, self.provenance, self.key, labels = \
                integrity.validate(self.path, self.file)
        except BaseException:
            self.file.close()
            raise
        self._full, self._columns = {"labels": labels}, {}  # all rows; plain rows only
        # Augmented views follow the plain rows: len, column() and vectors see one per file.
        self.n_plain = plain_count(self.path, self.file)
        self.groups_from = "the store"  # or what `use_groups` read them from
        self._row_index: RowIndex | None = None

    # -- metadata ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.n_plain

    @property
    def feature_shape(self) -> tuple:
        return tuple(self.file["features"].shape[1:])

    def column(self, name: str) -> np.ndarray:
        """A metadata column (`ids`, `labels`, `split`, `group`, `stamps`, `clip_index`) of
        the plain rows."""
        if name not in self._columns:
            self._columns[name] = self.full_column(name)[:self.n_plain]
        return self._columns[name]

    def full_column(self, name: str) -> np.ndarray:
        """A column over every row, augmented views included (`view`: 0 where none)."""
        if name not in self._full:
            if name == "view" and name not in self.file:
                return np.zeros(self.file["features"].shape[0], dtype=np.int32)
            if name not in self.file:
                raise StoreError(f"store {self.path.name} has no column '{name}'")
            raw = self.file[name][:]
            self._full[name] = raw if raw.dtype.kind in "iuf" else np.array(_decode(raw), dtype=object)
        return self._full[name]

    @property
    def row_index(self) -> RowIndex:
        """Plain row, file, group and views of every row (built again after `use_groups`)."""
        if self._row_index is None:
            self._row_index = RowIndex.of(self)
        return self._row_index

    @property
    def n_views(self) -> int:
        """Augmented views per file (0: a store without views)."""
        return int(self.full_column("view").max(initial=0))

    def use_groups(self, groups, source: str) -> None:
        """Reads `groups` (one name per row, "" = none) as this store's group column from now
        on, e.g. the audit's suggested groups (`--groups-from-audit`); `source` says where
        they came from. The file is not changed."""
        groups = np.asarray(groups, dtype=object)
        if groups.shape != (len(self),):
            raise StoreError(f"{source} has {len(groups)} group(s) for the {len(self)} rows of "
                             f"{self.path.name}")
        self._columns["group"] = groups
        self.groups_from, self._row_index = source, None

    @property
    def splits(self) -> list[str]:
        """The non-empty splits present, in train/val/test order."""
        present = set(self.column("split").tolist())
        return [s for s in ("train", "val", "test") if s in present]

    def indices(self, split: str | None = None) -> np.ndarray:
        """Row indices of one split (None: all rows)."""
        if split is None:
            return np.arange(len(self))
        return np.flatnonzero(self.column("split") == split)

    def failures(self) -> list[tuple[str, str]]:
        group = self.file.get("failures")
        if group is None or "ids" not in group:
            return []
        return list(zip(_decode(group["ids"][:]), _decode(group["reasons"][:])))

    # -- data -------------------------------------------------------------------------------
    def read_rows(self, rows: np.ndarray, dtype=np.float32) -> np.ndarray:
        """Features of the given rows, in the order given; a `StoreError` naming the rows when
        they fail their checksum or hold NaN or inf."""
        features = self.file["features"]
        if not len(rows):
            return read_feature_rows(features, rows, dtype)
        return integrity.checked(self.path, features, rows,
                                 lambda: read_feature_rows(features, rows, dtype),
                                 self.provenance)

    @property
    def vectors(self) -> integrity.CheckedFeatures:
        """The feature dataset as an array-like whose slices are checked like `read_rows`."""
        return integrity.CheckedFeatures(self)

    def load(self, split: str | None = None, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels of one split (or all rows) as arrays in memory."""
        rows = self.indices(split)
        return self.read_rows(rows, dtype), self.column("labels")[rows]

    def iter_batches(self, split: str | None = None, batch_size: int = 1024,
                     rows: np.ndarray | None = None, dtype=np.float32) -> Iterator:
        """Yields (features, labels) batches without loading the whole split."""
        rows = self.indices(split) if rows is None else np.asarray(rows)
        labels = self.column("labels")
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            yield self.read_rows(chunk, dtype), labels[chunk]

    def close(self) -> None:
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_store(path: str | Path) -> FeatureStore:
    """Opens a store for reading; raises `StoreError` with the fix when it cannot."""
    return FeatureStore(path)


def write_store(path: str | Path, features, labels, *, class_names, ids=None, split=None,
                group=None, provenance: dict | None = None, chunk_rows: int = 8192) -> Path:
    """Writes a complete store from arrays (or an iterator of feature chunks, with `n_rows`).

    For tests, benchmarks and users with vectors from elsewhere. `features` may be an array or
    a callable `features(start, stop) -> array`, so a huge synthetic store never sits in memory.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    get = features if callable(features) else (lambda a, b: np.asarray(features[a:b]))
    first = np.asarray(get(0, min(n, 1)))
    ids = list(ids) if ids is not None else [f"row{i}" for i in range(n)]
    split = list(split) if split is not None else [""] * n
    group = list(group) if group is not None else [""] * n
    writer = StoreWriter(path, first.shape[1:], dtype=str(first.dtype if first.dtype in
                                                         (np.float16, np.float32) else "float32"))
    try:
        for start in range(0, n, chunk_rows):
            stop = min(n, start + chunk_rows)
            writer.append(np.asarray(get(start, stop)), ids=ids[start:stop],
                          labels=labels[start:stop], split=split[start:stop],
                          group=group[start:stop], stamps=[""] * (stop - start))
        prov = {"backbone": "external", "layer": "given", "weights": "unknown"}
        prov.update(provenance or {})
        key = cache_key({"written_by": "write_store", **prov, "n": n})
        return writer.commit(key, class_names, prov)
    except BaseException as exc:
        writer.abort()
        if space.is_out_of_space(exc):
            raise space.out_of_space_error(writer.path.parent, "writing the store") from None
        raise
