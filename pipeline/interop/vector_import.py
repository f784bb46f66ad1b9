"""`import`: a feature store from vectors made elsewhere, so fit-head, grid-search and audit
take them as they take extract's stores.

The store's identity (`vector_identity.vector_key`) is the input files' sha256 and the user's
`--name`: the same files under the same name are the same store (found again, not rewritten).
Every column is checked before a byte is written, and each block of vectors as it is copied;
the store is written by the store's own writer (a temporary file renamed at the end), so a
refusal or a crash leaves no store behind. There is no backbone behind these vectors: predict
and export refuse a run fitted on them (pipeline/deploy/prediction.py says why).

    path = import_vectors({"vectors": "emb.parquet", "name": "clip-vit-b32"})
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, DataError, StoreError
from pipeline.interop.options import ImportConfig
from pipeline.interop.vector_files import open_source
from pipeline.store import integrity, space
from pipeline.store.feature_store import StoreLock, StoreWriter, open_store, store_path
from pipeline.store.vector_identity import KEY_FIELD, vector_key

SPLITS = ("train", "val", "test", "")


def import_vectors(options) -> Path:
    """Writes (or finds) the store of the vectors `options` name and returns its path.

    Args:
        options: an `ImportConfig`, or a mapping of any `import` options (`vectors` and `name`
            are required; the rest take the CLI's defaults).
    """
    cfg = ImportConfig.from_mapping(options)
    if not cfg.vectors or not cfg.name or not str(cfg.name).strip():
        raise ConfigError("import needs --vectors FILE and --name NAME (a name for what made "
                          "the vectors)")
    source = open_source(cfg)
    rows = checked_rows(source)
    identity = {"imported": {"name": cfg.name, "sha256": source.digest()}}
    key = vector_key(identity)
    path = store_path(cfg.cache_dir, cfg.name, "imported", "vectors", key)
    with StoreLock(path) as lock:
        if path.is_file():  # the same files under the same name: the store is already made
            open_store(path).close()
            return path
        if lock.read_only:
            raise StoreError(f"--cache-dir {cfg.cache_dir} is read-only; give a writable one")
        provenance = {"backbone": "imported", "layer": "vectors", **identity,
                      "imported_from": {"vectors": str(Path(cfg.vectors).resolve()),
                                        "table": cfg.table and str(Path(cfg.table).resolve()),
                                        "dataset": cfg.dataset},
                      KEY_FIELD: key, "dtype": "float32",
                      "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        return _write(path, source, rows, key, provenance)


def _write(path: Path, source, rows: dict, key: str, provenance: dict) -> Path:
    views = rows.pop("view", None)
    class_names = rows.pop("class_names")
    writer = StoreWriter(path, source.shape, n_rows=source.n_rows, view_rows=views is not None)
    try:
        copied = 0
        for start, block in source.blocks():
            bad = integrity.non_finite_rows(block)
            if len(bad):
                raise DataError(f"{source.name}: row {start + int(bad[0])} holds NaN or inf "
                                f"({len(bad)} such row(s) in rows {start}-{start + len(block) - 1}"
                                "); replace or drop them and import again")
            writer.write_features(np.arange(start, start + len(block)), block)
            copied += len(block)
        if copied != source.n_rows:
            raise DataError(f"{source.name}: read {copied} vectors where it declares "
                            f"{source.n_rows}; the file is damaged")
        writer.write_columns(**rows, stamps=[""] * source.n_rows,
                             **({"view": views} if views is not None else {}))
        return writer.commit(key, class_names, provenance)
    except BaseException as exc:
        writer.abort()
        if space.is_out_of_space(exc):
            raise space.out_of_space_error(path.parent, "writing the store") from None
        raise


def checked_rows(source) -> dict:
    """The store's columns (ids, labels, split, group, class_names, view) from the input's, or a
    `DataError` naming the first bad row or column."""
    cols, n, where = source.columns, source.n_rows, source.name
    ids = [str(v) for v in cols["id"]]
    if len(ids) != n:
        raise DataError(f"{where}: {len(ids)} id(s) for {n} vector(s)")
    blank = next((i for i, v in enumerate(ids) if not v.strip()), None)
    if blank is not None:
        raise DataError(f"{where}: row {blank} has a blank id; give every row an id")
    views = _views(cols, n, where)
    n_plain = n if views is None else int((views == 0).sum())
    seen: dict = {}
    for row, value in enumerate(ids[:n_plain]):
        if value in seen:
            raise DataError(f"{where}: id {value!r} is on rows {seen[value]} and {row}; "
                            "ids must be unique")
        seen[value] = row
    lost = next((i for i in range(n_plain, n) if ids[i] not in seen), None)
    if lost is not None:
        raise DataError(f"{where}: view row {lost} has id {ids[lost]!r}, which no plain row has")
    split = [str(v).strip() for v in cols.get("split", [""] * n)]
    wrong = next((i for i, v in enumerate(split) if v not in SPLITS), None)
    if wrong is not None:
        raise DataError(f"{where}: row {wrong} has split {split[wrong]!r}; a split is train, "
                        "val, test or blank")
    labels, class_names = _labels(cols, n, where)
    group = [str(v) for v in cols.get("group", [""] * n)]
    rows = {"ids": ids, "labels": labels, "split": split, "group": group,
            "class_names": class_names}
    if views is not None:
        rows["view"] = views
    return rows


def _views(cols: dict, n: int, where: str):
    if "view" not in cols:
        return None
    try:
        views = np.array([int(v or 0) for v in cols["view"]], dtype=np.int32)
    except ValueError:
        raise DataError(f"{where}: column 'view' holds a value that is not a whole number") \
            from None
    n_plain = int((views == 0).sum())
    if (views[:n_plain] != 0).any() or (views[n_plain:] <= 0).any():
        raise DataError(f"{where}: view rows (view > 0) must all follow the plain rows (view 0)")
    return views if n_plain < n else None


def _labels(cols: dict, n: int, where: str) -> tuple[np.ndarray, list]:
    """Each row's class index (-1: unlabelled) and the class names: in the order of a `class`
    column that numbers them one to one (what `vectors` writes), else sorted."""
    if "label" not in cols:
        return np.full(n, -1, dtype=np.int64), []
    names = [str(v).strip() for v in cols["label"]]
    present = sorted({v for v in names if v}, key=_class_order)
    if not present:
        raise DataError(f"{where}: the label column is blank in every row; give each row its "
                        "class name (blank only where a row is unlabelled)")
    numbered = _numbered_classes(cols.get("class"), names, len(present))
    order = numbered or present
    index = {name: i for i, name in enumerate(order)}
    return np.array([index.get(v, -1) for v in names], dtype=np.int64), order


def _numbered_classes(numbers, names, k: int):
    if numbers is None:
        return None
    by_number: dict = {}
    for number, name in zip(numbers, names):
        if name:
            by_number.setdefault(str(number), set()).add(name)
    if sorted(by_number) != sorted(str(i) for i in range(k)) or \
            any(len(v) != 1 for v in by_number.values()):
        return None
    return [next(iter(by_number[str(i)])) for i in range(k)]


def _class_order(name: str):
    """Class names that are whole numbers sort as numbers (2 before 10), the rest as text."""
    return (0, int(name), "") if name.lstrip("-").isdigit() else (1, 0, name)
