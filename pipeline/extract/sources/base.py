"""What every data source hands to extraction: a list of `Sample`s and the class names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

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


@dataclass(frozen=True)
class ClipRecipe:
    """How a clip backbone wants its frames prepared. The clip reader obeys it and knows no
    backbone, so a second clip backbone (an I3D, say) brings its own recipe, not a new reader.

    Attributes:
        resize_shape: crop size -> (height, width) every frame is resized to before the crop.
        crop_offsets: crop size -> (top, left) of the crop in the resized frame.
        resize: (uint8 frame, (height, width)) -> the resized frame; the same function for
            GIFs, frame folders and videos.
        resize_name: names `resize` (recorded in the cache key).
        mean_name: names the default mean subtraction (recorded in the cache key).
        load_mean: (path, input_shape) -> a mean cropped like the frames, for `--mean-file`.
        preprocess_with_mean: (clips, mean) -> model input, replacing the spec's preprocessing
            when a mean file is given.
    """

    resize_shape: Callable[[int], tuple]
    crop_offsets: Callable[[int], tuple]
    resize: Callable[[Any, tuple], Any]
    resize_name: str
    mean_name: str
    load_mean: Callable[[str, tuple], Any] | None = None
    preprocess_with_mean: Callable[[Any, Any], Any] | None = None
