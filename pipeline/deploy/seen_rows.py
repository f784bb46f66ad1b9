"""Which scored rows the run itself saw: rows of its own store, by split.

A scored row is one of the run's rows when its file is the same (same id relative to the data
root and same size:mtime stamp) or when its vector is bit for bit a row of the run's store
(the same file copied elsewhere, since predict's vectors carry the training store's key).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline.deploy.run_files import same_store_as_the_run
from pipeline.errors import StoreError
from pipeline.outputs import require_regular_file
from pipeline.store.feature_store import open_store
from pipeline.tables import read_rows

SPLITS = ("train", "val", "test")


def _row_digests(store) -> list[bytes]:
    digests = []
    for features, _ in store.iter_batches(batch_size=4096):
        digests += [hashlib.sha1(row.tobytes()).digest() for row in features]
    return digests


def _held_out_ids(run_dir: Path) -> dict:
    """{id: "val" | "test"} from fit-head's predictions_<split>.csv files, when present."""
    held = {}
    for split in ("val", "test"):
        path = run_dir / f"predictions_{split}.csv"
        require_regular_file(path, "run file", fix="run fit-head again.")
        if path.is_file():
            held.update({row["id"]: split for row in read_rows(path)})
    return held


def rows_of_the_run(run_dir, info: dict, store, trained_path) -> dict | None:
    """{"train": n, "val": n, "test": n, "new": n} over the rows of `store` (predict's own), or
    None when the run's store (`trained_path`, None when not found) is gone or holds other
    files than when the run was made.

    The split is the one the run used: fit-head's validation and test predictions name theirs;
    otherwise the store's split column (blank = train)."""
    counts = dict.fromkeys((*SPLITS, "new"), 0)
    try:
        trained = open_store(trained_path) if trained_path else None
    except StoreError:
        trained = None
    if trained is None or not same_store_as_the_run(trained, info):
        if trained is not None:
            trained.close()
        return None
    with trained:
        held = _held_out_ids(Path(run_dir))
        ids, split = trained.column("ids"), trained.column("split")
        split_of = [held.get(i) or (s if s in SPLITS else "train") for i, s in zip(ids, split)]
        by_file = dict(zip(zip(ids, trained.column("stamps")), split_of))
        by_vector = dict(zip(_row_digests(trained), split_of))
    stamps = store.column("stamps")
    for row_id, stamp, digest in zip(store.column("ids"), stamps, _row_digests(store)):
        found = by_file.get((row_id, stamp)) if stamp else None
        counts[found or by_vector.get(digest, "new")] += 1
    return counts
