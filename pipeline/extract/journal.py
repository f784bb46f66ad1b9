"""The extraction journal: finished work saved in small part files while a store is built.

Each part is a complete HDF5 file published with an atomic rename, so a kill at any moment
(SIGKILL included) loses at most the part being written. On the next run the parts and the
previous store are indexed; samples whose file stamp still matches are not extracted again,
and `assemble` merges both into the new store in the dataset's order. A views store
(views.py) journals its views the same way, one row per (file, view), indexed by
`index_view_parts`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from pipeline.errors import EngineError
from pipeline.store.feature_store import STR, FeatureStore, StoreWriter, read_feature_rows
from pipeline.store import space
from pipeline.store.integrity import non_finite_rows

_CLIP_SEP = "#clip"


def parts_dir_for(store: Path) -> Path:
    return store.with_name(f".{store.name}.parts")


def sample_id_of(row_id: str, is_clip_row: bool) -> str:
    return row_id.rsplit(_CLIP_SEP, 1)[0] if is_clip_row else row_id


@dataclass
class Done:
    """Where the finished rows of one sample live, or why it failed."""

    stamp: str
    source: Path | None = None  # the part or store file holding the rows
    rows: list = field(default_factory=list)
    clip_index: list = field(default_factory=list)
    failure: str | None = None


def clean_stale_files(store: Path) -> None:
    """Removes temporaries of runs that died; only called while holding the store's lock."""
    for tmp in store.parent.glob(f"{store.name}.tmp-*"):
        tmp.unlink(missing_ok=True)
    parts = parts_dir_for(store)
    if parts.is_dir():
        for tmp in parts.glob("*.tmp"):
            tmp.unlink(missing_ok=True)


def index_store(store: FeatureStore, damaged=()) -> dict[str, Done]:
    """Finished samples of an existing store, keyed by sample id; a sample with a row in
    `damaged` (rows that fail their checksum or hold NaN or inf) is not finished."""
    done: dict[str, Done] = {}
    clip = "clip_index" in store.file
    clip_index = store.column("clip_index") if clip else None
    for row, (row_id, stamp) in enumerate(zip(store.column("ids"), store.column("stamps"))):
        entry = done.setdefault(sample_id_of(row_id, clip), Done(stamp=stamp, source=store.path))
        entry.rows.append(row)
        entry.clip_index.append(int(clip_index[row]) if clip else 0)
    group = store.file.get("failures")
    if group is not None and "ids" in group:
        for sample_id, stamp, reason in zip(group["ids"][:], group["stamps"][:],
                                            group["reasons"][:]):
            done[sample_id.decode()] = Done(stamp=stamp.decode(), failure=reason.decode())
    if len(damaged):
        ids = store.column("ids")
        for row in damaged:
            done.pop(sample_id_of(ids[row], clip), None)
    return done


def index_parts(parts_dir: Path) -> dict[str, Done]:
    """Finished samples recorded in part files (later parts win)."""
    done: dict[str, Done] = {}
    if not parts_dir.is_dir():
        return done
    for part in sorted(parts_dir.glob("part-*.h5")):
        try:
            with h5py.File(part, "r") as fh:
                sample_ids = [s.decode() for s in fh["sample_ids"][:]]
                stamps = [s.decode() for s in fh["stamps"][:]]
                clip_index = fh["clip_index"][:]
                for row, (sid, stamp) in enumerate(zip(sample_ids, stamps)):
                    if sid not in done or done[sid].source != part:
                        done[sid] = Done(stamp=stamp, source=part)
                    done[sid].rows.append(row)
                    done[sid].clip_index.append(int(clip_index[row]))
                for sid, stamp, reason in zip(fh["fail_ids"][:], fh["fail_stamps"][:],
                                              fh["fail_reasons"][:]):
                    done[sid.decode()] = Done(stamp=stamp.decode(), failure=reason.decode())
        except (OSError, KeyError):
            part.unlink(missing_ok=True)  # unreadable: its samples are simply extracted again
    return done


def index_view_parts(parts_dir: Path) -> dict[tuple[str, int], tuple[str, Path, int]]:
    """(sample id, view) -> (stamp, part, row) of the views journaled in `parts_dir` (a views
    store's journal keeps the view number in the `clip_index` column; later parts win)."""
    done = {}
    for part in sorted(parts_dir.glob("part-*.h5")) if parts_dir.is_dir() else ():
        try:
            with h5py.File(part, "r") as fh:
                for row, (sid, stamp, view) in enumerate(zip(
                        fh["sample_ids"][:], fh["stamps"][:], fh["clip_index"][:])):
                    done[(sid.decode(), int(view))] = (stamp.decode(), part, row)
        except (OSError, KeyError):
            part.unlink(missing_ok=True)  # unreadable: its views are simply extracted again
    return done


def read_part_rows(part: Path, rows: np.ndarray, dtype=np.float32) -> np.ndarray:
    """The vectors of `rows` of one part file, in the order given."""
    with h5py.File(part, "r") as fh:
        return read_feature_rows(fh["features"], rows, dtype)


class PartWriter:
    """Buffers finished samples and publishes them as numbered part files."""

    def __init__(self, parts_dir: Path):
        self.dir = parts_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        existing = sorted(self.dir.glob("part-*.h5"))
        self.next_number = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        self._reset()

    def _reset(self):
        self.features, self.sample_ids, self.stamps, self.clip_index = [], [], [], []
        self.failures: list[tuple[str, str, str]] = []

    @property
    def pending(self) -> int:
        return len(self.sample_ids) + len(self.failures)

    def add(self, sample, rows: np.ndarray, clip_index) -> None:
        """Buffers one sample's rows; NaN or inf in them stops the run (nothing of that sample
        is kept, every finished sample is): such vectors would poison every later stage."""
        if len(non_finite_rows(rows)):
            raise EngineError(
                f"the backbone produced non-finite vectors (NaN or inf) for {sample.id}; nothing "
                "was stored for it and the files finished so far are kept. Check the weights "
                "(--weights) and run the backbone at full precision (--precision float32)")
        self.features.append(rows)
        self.sample_ids += [sample.id] * len(rows)
        self.stamps += [sample.stamp] * len(rows)
        self.clip_index += list(clip_index)

    def add_failure(self, sample, reason: str) -> None:
        # A reason may quote a file name that is not UTF-8: keep it storable as text.
        reason = reason.encode("utf-8", "backslashreplace").decode("utf-8")
        self.failures.append((sample.id, sample.stamp, reason))

    def flush(self) -> None:
        if not self.pending:
            return
        final = self.dir / f"part-{self.next_number:06d}.h5"
        tmp = final.with_suffix(".tmp")
        fh = None
        try:
            fh = h5py.File(tmp, "w")
            feats = np.concatenate(self.features) if self.features else np.zeros((0, 1), np.float32)
            fh.create_dataset("features", data=feats)
            fh.create_dataset("sample_ids", data=np.asarray(self.sample_ids, dtype=object), dtype=STR)
            fh.create_dataset("stamps", data=np.asarray(self.stamps, dtype=object), dtype=STR)
            fh.create_dataset("clip_index", data=np.asarray(self.clip_index, dtype=np.int32))
            for i, name in enumerate(("fail_ids", "fail_stamps", "fail_reasons")):
                fh.create_dataset(name, data=np.asarray([f[i] for f in self.failures], dtype=object),
                                  dtype=STR)
            fh.close()
            with open(tmp, "rb") as raw:
                os.fsync(raw.fileno())
        except BaseException as exc:
            space.discard(fh, tmp)  # the samples stay buffered; published parts are untouched
            if space.is_out_of_space(exc):
                raise space.out_of_space_error(self.dir.parent, "writing the journal") from None
            raise
        os.replace(tmp, final)
        self.next_number += 1
        self._reset()


def assemble(store_path: Path, dataset, done: dict[str, Done], *, feature_shape: tuple,
             dtype: str, clip_rows: bool, key: str, provenance: dict) -> Path:
    """Writes the new store from finished rows (old store and parts) in the dataset's order."""
    plan, columns = [], {k: [] for k in ("ids", "labels", "split", "group", "stamps", "clip_index")}
    failures = []
    for sample in dataset.samples:
        entry = done[sample.id]
        if entry.failure is not None:
            failures.append((sample.id, sample.stamp, entry.failure))
            continue
        order = np.argsort(entry.clip_index, kind="stable")
        for j in order:
            plan.append((entry.source, entry.rows[j], len(columns["ids"])))
            cid = entry.clip_index[j]
            columns["ids"].append(f"{sample.id}{_CLIP_SEP}{cid}" if clip_rows else sample.id)
            columns["labels"].append(dataset.label_index(sample.label))
            columns["split"].append(sample.split)
            columns["group"].append(sample.group or (sample.id if clip_rows else ""))
            columns["stamps"].append(sample.stamp)
            columns["clip_index"].append(cid)
    try:
        writer = StoreWriter(store_path, feature_shape, dtype, n_rows=len(plan),
                             clip_rows=clip_rows)
    except BaseException as exc:
        space.discard(None, store_path.with_name(f"{store_path.name}.tmp-{os.getpid()}"))
        if space.is_out_of_space(exc):
            raise space.out_of_space_error(store_path.parent, "assembling the store") from None
        raise
    try:
        if not clip_rows:
            columns.pop("clip_index")
        writer.write_columns(**columns)
        by_source: dict[Path, list] = {}
        for source, src_row, dst_row in plan:
            by_source.setdefault(source, []).append((src_row, dst_row))
        for source, pairs in by_source.items():
            pairs.sort()
            with h5py.File(source, "r") as fh:
                for start in range(0, len(pairs), 2048):
                    chunk = np.asarray(pairs[start:start + 2048])
                    data = read_feature_rows(fh["features"], chunk[:, 0], dtype)
                    writer.write_features(chunk[:, 1], data)
        writer.write_failures(*(zip(*failures) if failures else ([], [], [])))
        return writer.commit(key, dataset.class_names, provenance)
    except BaseException as exc:
        writer.abort()
        if space.is_out_of_space(exc):
            raise space.out_of_space_error(store_path.parent, "assembling the store") from None
        raise


def remove_parts(store: Path) -> None:
    shutil.rmtree(parts_dir_for(store), ignore_errors=True)
