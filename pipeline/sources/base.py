"""What every data source hands to extraction: a list of `Sample`s and the class names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "val", "test")
SPLIT_DIR_NAMES = {"train": "train", "val": "val", "validation": "val", "test": "test"}


@dataclass(frozen=True)
class Sample:
    """One input file.

    Attributes:
        id: its path relative to the data root, with forward slashes (stable across machines).
        path: absolute path to read.
        label: class name, or "" when unlabelled (e.g. `predict`).
        split: "train", "val", "test" or "" (no split given).
        group: the video, subject or source it came from ("" when unknown).
        stamp: "size:mtime_ns", so a changed file is re-extracted.
    """

    id: str
    path: Path
    label: str = ""
    split: str = ""
    group: str = ""
    stamp: str = ""


@dataclass(frozen=True)
class Dataset:
    """The discovered input: where it lives, its samples in a fixed order, its class names."""

    root: Path
    samples: tuple
    class_names: tuple
    name: str

    def label_index(self, label: str) -> int:
        return self.class_names.index(label) if label else -1


def file_stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"
