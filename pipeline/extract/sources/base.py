"""What every data source hands to extraction: a list of `Sample`s and the class names."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pipeline.errors import DecodeError, ResourceError
from pipeline.outputs import kind_of_mode

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
    """The discovered input: where it lives, its samples in a fixed order, its class names, and
    the folders left out as the tool's own output (relative to the root)."""

    root: Path
    samples: tuple
    class_names: tuple
    name: str
    skipped: tuple = ()

    def label_index(self, label: str) -> int:
        return self.class_names.index(label) if label else -1


# OS errors that say nothing about a file's content: retried on the next run, never cached.
_ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOENT, errno.EMFILE, errno.ENFILE,
                       errno.ENOMEM, errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.EAGAIN}


def environment_problem(exc: BaseException, path) -> ResourceError | None:
    """A `ResourceError` when `exc` (raised while reading `path`) is the machine's fault, not
    the file's: permission denied, too many open files, out of memory, a vanished file.

    Content errors (not an image, truncated, unsupported) give None: those are recorded as the
    file's failure and cached; these must not be, or a file would stay "broken" for good.
    """
    if isinstance(exc, MemoryError):
        what = "out of memory"
    elif isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS:
        what = exc.strerror or errno.errorcode.get(exc.errno, "OS error")
    else:
        return None
    hint = {errno.ENOENT: "the file vanished after the run listed it",
            errno.EMFILE: "raise the open-file limit (ulimit -n) or pass fewer --workers",
            errno.ENFILE: "raise the open-file limit or pass fewer --workers"}.get(
        getattr(exc, "errno", None), "fix it")
    return ResourceError(f"cannot read {path}: {what} ({hint}). Nothing was recorded as broken; "
                         "run the same command again: finished files are kept.")


def file_stamp(path: Path) -> str:
    """"size:mtime_ns" of what `path` names; a link that leads nowhere is stamped by its target,
    so the file is looked at again once the target exists."""
    try:
        st = os.stat(path)
    except OSError:
        try:
            return f"link:{os.readlink(path)}"
        except OSError:
            return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def require_regular(path) -> None:
    """Refuses, before anything opens it, a path that is not a regular file or a folder: a
    FIFO or device would block or never end, a symlink loop or dangling symlink cannot be read.
    Only os.stat is called (it never blocks on a FIFO).

    Raises:
        DecodeError: the path is such a thing (recorded as the file's failure).
        ResourceError: the machine failed (permission denied, a file that vanished).
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DecodeError("symlink loop: the link leads back to itself; point it at a "
                              "file or remove it") from None
        if exc.errno == errno.ENOENT and os.path.islink(path):
            raise DecodeError(f"dangling symlink: its target {os.readlink(path)} does not "
                              "exist") from None
        raise environment_problem(exc, path) or exc from None
    kind = kind_of_mode(mode)
    if kind is not None:
        raise DecodeError(f"not a regular file ({kind}); only regular files and frame folders "
                          "are read")


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
        short_side: crop size -> the short side every frame is resized to, keeping its
            aspect ratio, before a centre crop (I3D: 256 at 224, a 224 frame too). None: every
            frame is resized to `resize_shape` and cropped at `crop_offsets` (C3D).
        default_stride: clip length -> frames between clip starts when `--stride` is not
            given (8 unless a recipe says otherwise, C3D's half-overlapping 16-frame clips;
            I3D: the clip length, windows side by side).
    """

    resize_shape: Callable[[int], tuple]
    crop_offsets: Callable[[int], tuple]
    resize: Callable[[Any, tuple], Any]
    resize_name: str
    mean_name: str
    load_mean: Callable[[str, tuple], Any] | None = None
    preprocess_with_mean: Callable[[Any, Any], Any] | None = None
    short_side: Callable[[int], int] | None = None
    default_stride: Callable[[int], int] = lambda frames: 8
