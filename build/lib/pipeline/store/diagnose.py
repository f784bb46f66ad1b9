"""Why a file is not a usable feature store, said without destroying the user's own files.

`open_store` asks here when a path cannot be read as a store. Only a file the tool itself made
(our file name pattern and our root attributes) is ever called stale and safe to rebuild; a
user's CSV manifest, photo or other HDF5 file is named for what it is, with what was expected.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py

# `cache/<data>-<backbone>-<layer>-<key10>.h5`, as `store_path` names every store.
_STORE_NAME = re.compile(r"^.+-.+-.+-[0-9a-f]{10}\.h5$")
_MAGIC = ((b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG", "a PNG image"), (b"GIF8", "a GIF"),
          (b"RIFF", "a RIFF file (WebP, AVI or WAV)"), (b"PK\x03\x04", "a zip archive (a .keras "
          "model?)"))
EXPECTED = ("info, fit-head and grid-search expect a feature store (.h5) made by "
            "`run_pipeline.py extract`, which prints its path as its last line")


def describe_file(path: Path) -> str:
    """A few words on what a file that is not HDF5 looks like (`a CSV file`, `a JPEG image`)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if not head:
        return "an empty file"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if path.suffix.lower() == ".csv" or (b"," in head and b"\x00" not in head):
        return "a CSV file (a manifest is passed to extract with --data)"
    return "text" if b"\x00" not in head else "a binary file of another kind"


def made_by_us(path: Path, attrs) -> bool:
    """Our file name pattern and our root attributes: only then is a file ours to rebuild."""
    if not _STORE_NAME.match(path.name) or "cache_key" not in attrs:
        return False
    try:
        return isinstance(json.loads(attrs.get("provenance", "")), dict)
    except (TypeError, ValueError):
        return False


def not_a_store_message(path: Path, schema_version: int) -> str:
    """The one-line reason `path` cannot be opened as a store of `schema_version`."""
    if not h5py.is_hdf5(path):
        return f"{path} is not an HDF5 file: it looks like {describe_file(path)}. {EXPECTED}."
    try:
        with h5py.File(path, "r") as fh:
            attrs = dict(fh.attrs)
            has_features = "features" in fh
    except OSError as exc:
        return (f"{path} is an HDF5 file that cannot be read ({str(exc).splitlines()[0]}); it is "
                "damaged or still being written. If extract made it, run the same extract "
                f"command again. {EXPECTED}.")
    version = attrs.get("schema_version")
    if version is None or not has_features:
        return (f"{path} is an HDF5 file but not a feature store (no schema_version attribute or "
                f"features dataset). {EXPECTED}.")
    if made_by_us(path, attrs):
        return (f"{path} is a feature store of schema {version}; this version reads "
                f"{schema_version}. Run the same extract command again to rebuild it (this "
                "file can then be deleted).")
    return (f"{path} has store schema {version!r}, this version reads {schema_version}; run "
            "extract again to make a store this version reads.")
