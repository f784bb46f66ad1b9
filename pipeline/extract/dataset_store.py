"""Which store a dataset's vectors go to: its own, never that of another dataset.

A store is named `<data>-<backbone>-<layer>-<key10>.h5`, and the vector key leaves out where the
data lies, so a moved dataset finds its vectors again. Two datasets can share a name, though
(`photos/` in two places, `photos/` and `photos.csv`). Before a run takes the store at that path
it checks that the store holds this dataset: the same `--data` (folder or manifest), or mostly
the same files (ids whose size:mtime stamps are unchanged, as a moved dataset keeps them; a
dataset that gained or changed a few files is still the same one). A store of another dataset is
left as it is and the next name is tried: `<data>.2-...`, `<data>.3-...`.

    path = store_for("cache", dataset, "/abs/photos", "resnet50", "pooled", key, echo)
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import StoreError
from pipeline.extract import journal
from pipeline.store import feature_store as fs

# A store holds this dataset when at least this share of its files are among the dataset's
# files with the same stamps (or it was made from the same --data).
SAME_FILES_SHARE = 0.5


def data_source(data) -> str:
    """What `--data` names, absolute: the folder or the manifest (recorded in the store)."""
    return os.path.abspath(os.path.expanduser(str(data)))


def store_for(cache_dir, dataset, source: str, backbone: str, layer: str, key: str,
              echo=print) -> Path:
    """The path of `dataset`'s store for these settings: the first candidate name that holds
    this dataset, else the first that holds nothing yet."""
    others, number = [], 1
    while True:
        name = dataset.name if number == 1 else f"{dataset.name}.{number}"
        path = fs.store_path(cache_dir, name, backbone, layer, key)
        if not path.exists() or _holds(path, dataset, source):
            break
        others.append(path.name)
        number += 1
    if others:
        echo(f"{', '.join(others)} hold(s) the vectors of another dataset named {dataset.name} "
             f"(other files); left as it is, these files get their own store {path.name}")
    return path


def _holds(path: Path, dataset, source: str) -> bool:
    try:
        store = fs.FeatureStore(path)
    except StoreError:
        return True  # unreadable: it holds nothing usable and is made again, as before
    with store:
        recorded = store.provenance.get("data_source")
        if recorded is not None and recorded == source:
            return True
        if recorded is None and store.provenance.get("data_root") == str(dataset.root):
            return True  # made before stores recorded their --data: the same folder
        stored = {(sid, done.stamp) for sid, done in journal.index_store(store).items()}
    current = {(s.id, s.stamp) for s in dataset.samples}
    return bool(stored) and len(stored & current) >= SAME_FILES_SHARE * len(stored)
