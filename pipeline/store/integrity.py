"""What makes a store trustworthy: its root attributes and columns, and vectors that pass their
checksum and are finite.

Vectors are checked as they are read, once per read block (the block's maximum and minimum are
finite exactly when every value is: NaN propagates through both), so no command pays a second pass over a big store; only when a
block fails are its rows looked at one by one to name them. Stores written since the feature
dataset carries HDF5's fletcher32 checksum also catch flipped bits that leave a value finite;
older stores, without it, stay readable and are still checked for NaN and inf.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from pipeline.errors import StoreError

# Columns every store has, one value per row (clip_index too, when present).
ROW_COLUMNS = ("ids", "labels", "split", "group", "stamps")


def repair_hint(path: Path, provenance: dict | None,
                does: str = "it extracts the damaged rows again") -> str:
    """The command that makes the store again: extract's saved config when it is there."""
    config = path.with_name(path.name[:-3] + ".config.toml") if path.name.endswith(".h5") \
        else None
    if config is not None and config.is_file():
        return f"re-extract: `python run_pipeline.py extract --config {config}` ({does})"
    if isinstance(provenance, dict) and provenance.get("imported"):
        return (f"remove {path.name} and import the vectors again (`run_pipeline.py import` "
                "with the same files and --name)")
    if isinstance(provenance, dict) and provenance.get("backbone") == "external":
        return "write the store again with write_store from the vectors it was made from"
    return ("re-extract: run the `run_pipeline.py extract` command that made this store again "
            f"({does})")


REBUILDS = "it rebuilds the store"


def _attribute_error(path: Path, name: str, problem: str) -> StoreError:
    return StoreError(f"store {path} is damaged: attribute {name} {problem}; "
                      f"{repair_hint(path, None, REBUILDS)}")


def _json_attribute(path: Path, attrs, name: str, kind: type, what: str):
    if name not in attrs:
        raise _attribute_error(path, name, f"is missing (it should hold {what})")
    raw = attrs[name]
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str):
        raise _attribute_error(path, name, f"is a {type(raw).__name__}, not JSON text of {what}")
    try:
        value = json.loads(raw)
    except ValueError:
        raise _attribute_error(path, name, f"is not JSON (it should hold {what}): "
                                           f"{raw[:40]!r}") from None
    if not isinstance(value, kind):
        raise _attribute_error(path, name, f"holds a JSON {type(value).__name__}, not {what}: "
                                           f"{raw[:40]!r}")
    return value


def validate(path: Path, file: h5py.File) -> tuple[list, dict, str, np.ndarray]:
    """(class_names, provenance, cache_key, labels) of an open store, or a `StoreError` naming
    the first damaged attribute or column. Reads the labels column (one int per row) and the
    shapes of the others; never the vectors."""
    attrs = file.attrs
    names = _json_attribute(path, attrs, "class_names", list, "a list of class names")
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise _attribute_error(path, "class_names", f"is not a list of distinct class names: "
                                                    f"{json.dumps(names)[:60]}")
    provenance = _json_attribute(path, attrs, "provenance", dict, "an object of settings")
    key = attrs.get("cache_key")
    if isinstance(key, bytes):
        key = key.decode("utf-8", "replace")
    if not isinstance(key, str) or not key:
        raise _attribute_error(path, "cache_key", "is missing" if key is None else
                               f"is a {type(key).__name__}, not the key's hex text")
    n_rows = int(file["features"].shape[0])
    for column in ROW_COLUMNS + (("clip_index",) if "clip_index" in file else ()):
        dataset = file.get(column)
        if not isinstance(dataset, h5py.Dataset) or dataset.ndim != 1:
            raise StoreError(f"store {path} is damaged: column {column} is missing; "
                             f"{repair_hint(path, provenance, REBUILDS)}")
        if dataset.shape[0] != n_rows:
            raise StoreError(f"store {path} is damaged: column {column} has {dataset.shape[0]} "
                             f"values for {n_rows} rows; {repair_hint(path, provenance, REBUILDS)}")
    labels = file["labels"][:]
    outside = np.flatnonzero((labels < -1) | (labels >= len(names)))
    if len(outside):
        raise StoreError(f"store {path} is damaged: labels of {len(outside)} row(s) (first: row "
                         f"{outside[0]}, label {labels[outside[0]]}) lie outside class_names' "
                         f"{len(names)} classes; {repair_hint(path, provenance, REBUILDS)}")
    return names, provenance, key, labels


def _row_ranges(rows) -> str:
    """`2, 5-9, 12` for sorted row indices (at most 8 ranges shown)."""
    ranges, rows = [], [int(r) for r in rows]
    for row in rows:
        if ranges and row == ranges[-1][1] + 1:
            ranges[-1][1] = row
        else:
            ranges.append([row, row])
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:8])
    return text + (f" and {len(ranges) - 8} more range(s)" if len(ranges) > 8 else "")


def unreadable_chunks(features: h5py.Dataset, lo: int, hi: int) -> list[int]:
    """Rows of the chunks between rows lo and hi (exclusive) that fail to read (checksum)."""
    per_chunk = int(features.chunks[0]) if features.chunks else max(hi - lo, 1)
    bad = []
    for start in range(lo // per_chunk * per_chunk, hi, per_chunk):
        stop = min(start + per_chunk, int(features.shape[0]))
        try:
            features[start:stop]
        except OSError:
            bad += range(start, stop)
    return bad


def corrupt_error(path: Path, features: h5py.Dataset, rows, provenance) -> StoreError:
    how = "fail their checksum" if features.fletcher32 else "cannot be read"
    return StoreError(f"store {path} is damaged: the vectors of rows {_row_ranges(rows)} {how} "
                      "(the file changed on disk); nothing was computed from them; "
                      f"{repair_hint(path, provenance)}")


def non_finite_rows(block: np.ndarray) -> np.ndarray:
    """Indices (into the block) of rows holding NaN or inf; empty for a clean block. The block's
    maximum and minimum are the cheap test; rows are looked at only when it fails."""
    if not block.size or (np.isfinite(block.max()) and np.isfinite(block.min())):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(~np.isfinite(block.reshape(len(block), -1)).all(axis=1))


def non_finite_error(path: Path, rows, provenance) -> StoreError:
    return StoreError(f"store {path} holds non-finite vectors (NaN or inf) in rows "
                      f"{_row_ranges(rows)}; nothing was computed from them; "
                      f"{repair_hint(path, provenance)}")


def checked(path: Path, features: h5py.Dataset, rows: np.ndarray, data_of, provenance):
    """`data_of()` (a read of `rows`), with a failed checksum or non-finite values turned into
    a `StoreError` naming the rows."""
    try:
        data = data_of()
    except OSError:
        rows = np.asarray(rows, dtype=np.int64)
        lo, hi = int(rows.min()), int(rows.max()) + 1
        bad = sorted(set(unreadable_chunks(features, lo, hi)) & set(rows.tolist()))
        raise corrupt_error(path, features, bad or [lo, hi - 1], provenance) from None
    bad = non_finite_rows(data)
    if len(bad):
        raise non_finite_error(path, np.unique(np.asarray(rows)[bad]), provenance)
    return data


def damaged_rows(features: h5py.Dataset, block_rows: int | None = None) -> tuple[list, list]:
    """(rows failing their checksum, rows holding NaN or inf) of a whole feature dataset, read
    block by block: what extract re-extracts and what `info` reports."""
    n = int(features.shape[0])
    per_chunk = int(features.chunks[0]) if features.chunks else 4096
    step = block_rows or per_chunk * max(1, 4096 // per_chunk)
    corrupt, non_finite = [], []
    for start in range(0, n, step):
        stop = min(n, start + step)
        try:
            block = features[start:stop]
        except OSError:
            bad = unreadable_chunks(features, start, stop)
            corrupt += bad
            good = np.setdiff1d(np.arange(start, stop), bad)
            block = features[good] if len(good) else np.zeros((0, *features.shape[1:]))
            non_finite += (good[non_finite_rows(block)]).tolist()
            continue
        non_finite += (start + non_finite_rows(block)).tolist()
    return corrupt, non_finite


class CheckedFeatures:
    """The feature dataset of an open store as an array-like whose reads are checked (slices
    and index arrays), for code that reads blocks itself (the audit). It holds the plain rows
    only: a store's augmented views are never compared with their own file."""

    def __init__(self, store):
        self._store = store
        self._features = store.file["features"]
        self.shape = (len(store), *self._features.shape[1:])
        self.dtype, self.chunks = self._features.dtype, self._features.chunks

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, index):
        if isinstance(index, slice):
            index = slice(*index.indices(len(self)))  # never past the plain rows
            rows = np.arange(index.start, index.stop, index.step)
            if not len(rows):
                return self._features[index]
            return checked(self._store.path, self._features, rows,
                           lambda: self._features[index], self._store.provenance)
        return self._store.read_rows(np.asarray(index), self.dtype)
