"""Finds the samples of a data folder or CSV manifest.

Folder layouts (those of Keras' `image_dataset_from_directory`):
    root/<class>/<file>                       no split
    root/{train,val|validation,test}/<class>/<file>
Manifest: a CSV with columns `path,label` and optional `split`, `group`; paths are relative
to the CSV's folder (or absolute).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from pipeline.errors import DataError
from pipeline.extract.sources.base import SPLIT_DIR_NAMES, SPLITS, Dataset, Sample, file_stamp

_SPLIT_RANK = {"train": 0, "val": 1, "test": 2, "": 3}
# The still images a frame folder (one clip, with leaf_dirs) may hold, and nothing else.
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def discover(data: str | Path, extensions: tuple, *, require_labels: bool = True,
             leaf_dirs: bool = False) -> Dataset:
    """Returns the dataset at `data` (folder or .csv).

    Args:
        data: a folder of class folders, a split folder layout, or a CSV manifest.
        extensions: lower-case file suffixes to take (".jpg", ...).
        require_labels: False lets a flat folder or single file through, unlabelled (predict).
        leaf_dirs: also take folders whose files are all frames (one clip per folder).
    """
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(f"data not found: {data}. Pass a folder of class folders or a CSV "
                        "manifest with --data.")
    if path.is_file() and path.suffix.lower() == ".csv":
        return _from_manifest(path, require_labels)
    if path.is_file():
        if require_labels:
            raise DataError(f"--data {data} is a single file; training data must be a folder of "
                            "class folders or a CSV manifest with path,label columns.")
        return _finish(path.parent, [_sample(path, path.parent, "", "", "")], path.stem)
    return _from_folder(path, extensions, require_labels, leaf_dirs)


def _sample(path: Path, root: Path, label: str, split: str, group: str) -> Sample:
    # abspath, not resolve(): a symlinked file keeps the name it has in the data folder.
    path, root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        rel = path.as_posix()
    stamp = _folder_stamp(path) if path.is_dir() else file_stamp(path)
    return Sample(id=text_id(rel), path=path, label=text_id(label), split=split, group=group,
                  stamp=stamp)


def text_id(name: str) -> str:
    r"""A file name as valid UTF-8 text, for ids and labels.

    Bytes that are not UTF-8 (Python holds them as lone surrogates) are written as the four
    characters `\xNN`: `café.png` saved in Latin-1 gets the id `caf\xe9.png`. Lossless for every
    name that does not itself contain such a backslash sequence (two names that would meet are
    refused by the duplicate check)."""
    if name.isascii():
        return name
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _folder_stamp(folder: Path) -> str:
    """A frame folder's stamp from its files: a frame rewritten in place leaves the folder's
    own mtime as it was, but not its files' sizes and mtimes."""
    stats = [p.stat() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return (f"{len(stats)}:{sum(st.st_size for st in stats)}:"
            f"{max((st.st_mtime_ns for st in stats), default=0)}")


def _list_inputs(folder: Path, extensions: tuple, leaf_dirs: bool) -> list[Path]:
    found = []
    frame_folders: dict[Path, bool] = {}  # asked once per folder, not once per file in it

    def is_frame_folder(path: Path) -> bool:
        if path not in frame_folders:
            frame_folders[path] = _is_frame_folder(path, extensions)
        return frame_folders[path]

    for entry in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in entry.relative_to(folder).parts):
            continue
        if entry.is_file() and entry.suffix.lower() in extensions:
            if leaf_dirs and entry.parent != folder and is_frame_folder(entry.parent):
                continue  # frames of a clip folder are read together, not one by one
            found.append(entry)
        elif leaf_dirs and entry.is_dir() and is_frame_folder(entry):
            found.append(entry)
    return found


def _is_frame_folder(folder: Path, extensions: tuple) -> bool:
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return bool(files) and all(p.suffix.lower() in FRAME_EXTENSIONS for p in files) and \
        not any(p.is_dir() for p in folder.iterdir())


def _from_folder(root: Path, extensions: tuple, require_labels: bool, leaf_dirs: bool) -> Dataset:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_dirs = [(SPLIT_DIR_NAMES[p.name.lower()], p) for p in subdirs
                  if p.name.lower() in SPLIT_DIR_NAMES]
    layout = split_dirs if split_dirs else [("", root)]
    samples = []
    for split, folder in layout:
        class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if leaf_dirs:  # a class folder that is itself a clip of frames is no class folder
            class_dirs = [p for p in class_dirs if not _is_frame_folder(p, extensions)] or class_dirs
        for class_dir in class_dirs:
            for item in _list_inputs(class_dir, extensions, leaf_dirs):
                samples.append(_sample(item, root, class_dir.name, split, ""))
    if not require_labels and not split_dirs:  # predict: loose files beside subfolders count too
        loose = [p for p in _list_inputs(root, extensions, leaf_dirs) if p.parent == root]
        samples += [_sample(p, root, "", "", "") for p in loose]
    if not samples and not require_labels:
        samples = [_sample(p, root, "", "", "") for p in _list_inputs(root, extensions, leaf_dirs)]
    if not samples:
        kinds = ", ".join(sorted({e.lstrip('.') for e in extensions}))
        raise DataError(f"no input files found under {root} (looked for {kinds}); expected one "
                        "subfolder per class, optionally inside train/, val/ and test/.")
    return _finish(root, samples, root.name)


def _from_manifest(csv_path: Path, require_labels: bool) -> Dataset:
    root = csv_path.parent
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip().lower() for c in (reader.fieldnames or [])]
        if "path" not in columns or (require_labels and "label" not in columns):
            raise DataError(f"manifest {csv_path} needs columns path,label (optional: split, "
                            f"group); found: {', '.join(columns) or 'no header'}")
        samples = []
        for line_no, row in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            file = Path(row["path"])
            if not file.is_absolute() and ".." in file.parts:
                raise DataError(f"{csv_path}:{line_no}: {row['path']} points outside the "
                                "manifest's folder; keep the files below the manifest (paths "
                                "are relative to it) or give an absolute path.")
            file = file if file.is_absolute() else root / file
            if not file.exists():
                raise DataError(f"{csv_path}:{line_no}: file not found: {row['path']} "
                                "(paths are relative to the manifest's folder)")
            split = row.get("split", "").lower()
            split = SPLIT_DIR_NAMES.get(split, split)
            if split and split not in SPLITS:
                raise DataError(f"{csv_path}:{line_no}: split must be train, val or test; "
                                f"received: {row.get('split')!r}")
            samples.append(_sample(file, root, row.get("label", ""), split, row.get("group", "")))
    if not samples:
        raise DataError(f"manifest {csv_path} lists no files")
    return _finish(root, samples, csv_path.stem)


def _finish(root: Path, samples: list, name: str) -> Dataset:
    """Sorts samples into a stable order and derives the class names from the training labels."""
    samples.sort(key=lambda s: (_SPLIT_RANK[s.split], s.label, s.id))
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"the same file is listed twice: {dup}")
    has_train = any(s.split == "train" for s in samples)
    known = sorted({s.label for s in samples if s.label and (s.split == "train" or not has_train)})
    unseen = sorted({s.label for s in samples if s.label and s.label not in known})
    if unseen:
        raise DataError(f"label(s) {', '.join(unseen)} appear in val/test but not in train; "
                        "every class needs training examples.")
    return Dataset(root=Path(os.path.abspath(root)), samples=tuple(samples),
                   class_names=tuple(known), name=name)
