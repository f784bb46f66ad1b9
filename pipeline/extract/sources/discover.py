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
from pipeline.outputs import MARKER, kind_of_mode
from pipeline.extract.sources.base import SPLIT_DIR_NAMES, SPLITS, Dataset, Sample, file_stamp

_SPLIT_RANK = {"train": 0, "val": 1, "test": 2, "": 3}
# The still images a frame folder (one clip, with leaf_dirs) may hold, and nothing else.
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# csv's default field limit (131,072 characters) is raised so that an over-long field gets our
# message with its row, not csv's; no path or label is anywhere near this long.
_FIELD_LIMIT = 1 << 24
MAX_PATH_CHARS = 4096  # PATH_MAX on Linux: a longer manifest path cannot name a file


def discover(data: str | Path, extensions: tuple, *, require_labels: bool = True,
             leaf_dirs: bool = False) -> Dataset:
    """Returns the dataset at `data` (folder or .csv); `Dataset.skipped` lists the folders left
    out because the tool wrote them (see `_ToolOutputs`).

    Args:
        data: a folder of class folders, a split folder layout, or a CSV manifest.
        extensions: lower-case file suffixes to take (".jpg", ...).
        require_labels: False lets a flat folder or single file through, unlabelled (predict).
        leaf_dirs: also take folders whose files are all frames (one clip per folder).
    """
    path = Path(data).expanduser()
    try:
        mode = os.stat(path).st_mode  # stat only: opening a FIFO would block
    except OSError:
        mode = None
    if mode is None:
        raise DataError(f"data not found: {data}. Pass a folder of class folders or a CSV "
                        "manifest with --data.")
    if kind_of_mode(mode):
        raise DataError(f"--data {data} is {kind_of_mode(mode)}, not a folder or a CSV manifest; "
                        "pass a folder of class folders or a CSV file saved on disk.")
    if path.is_file() and path.suffix.lower() == ".csv":
        return _from_manifest(path, require_labels)
    if path.is_file():
        if require_labels:
            raise DataError(f"--data {data} is a single file; training data must be a folder of "
                            "class folders or a CSV manifest with path,label columns.")
        return _finish(path.parent, [_sample(path, path.parent, "", "", "")], path.stem)
    return _from_folder(path, extensions, require_labels, leaf_dirs)


class _ToolOutputs:
    """Tells the folders the tool wrote and remembers each one. Folders the tool writes are
    never data, even inside the data folder (the run folders of a default `cache/` started
    there), and every one holds the ownership marker (pipeline/outputs.py). Nothing else is
    taken for the tool's output: a class folder holding a file named run.json or like a store,
    or serving as the cache folder, is still data."""

    def __init__(self):
        self.found: list[Path] = []

    def __call__(self, folder: Path) -> bool:
        if not (folder / MARKER).is_file():
            return False
        if folder not in self.found:
            self.found.append(folder)
        return True


def _sample(path: Path, root: Path, label: str, split: str, group: str) -> Sample:
    # abspath, not resolve(): a symlinked file keeps the name it has in the data folder.
    path, root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        rel = path.as_posix()
    return Sample(id=text_id(rel), path=path, label=text_id(label), split=split, group=group,
                  stamp=source_stamp(path))


def text_id(name: str) -> str:
    r"""A file name as valid UTF-8 text, for ids and labels.

    Bytes that are not UTF-8 (Python holds them as lone surrogates) are written as the four
    characters `\xNN`: `café.png` saved in Latin-1 gets the id `caf\xe9.png`. Lossless for every
    name that does not itself contain such a backslash sequence (two names that would meet are
    refused by the duplicate check)."""
    if name.isascii():
        return name
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def source_stamp(path: Path) -> str:
    """The stamp a store records for a source: a frame folder's from its files, else the
    file's own "size:mtime_ns" (export compares it to tell a file changed since extraction)."""
    return _folder_stamp(path) if path.is_dir() and not path.is_symlink() else file_stamp(path)


def _folder_stamp(folder: Path) -> str:
    """A frame folder's stamp from its files: a frame rewritten in place leaves the folder's
    own mtime as it was, but not its files' sizes and mtimes."""
    stats = [p.stat() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return (f"{len(stats)}:{sum(st.st_size for st in stats)}:"
            f"{max((st.st_mtime_ns for st in stats), default=0)}")


def _entries(folder: Path, skip: _ToolOutputs) -> list[Path]:
    """Every path below `folder`, sorted, as rglob lists them (symlinked folders are not
    entered), leaving out hidden names and the folders the tool wrote."""
    found = []
    try:
        children = sorted(folder.iterdir())
    except OSError:
        return found
    for entry in children:
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and not entry.is_symlink():
            if skip(entry):
                continue
            found.append(entry)
            found += _entries(entry, skip)
        else:
            found.append(entry)
    return found


def _unreadable(entry: Path) -> bool:
    """A symlink loop, a dangling symlink, a FIFO or a device: listed, so that reading it
    records why it is no input instead of passing it over in silence."""
    try:
        return kind_of_mode(os.stat(entry).st_mode) is not None
    except OSError:
        return os.path.islink(entry)


def _list_inputs(folder: Path, extensions: tuple, leaf_dirs: bool,
                 skip: _ToolOutputs) -> list[Path]:
    found = []
    frame_folders: dict[Path, bool] = {}  # asked once per folder, not once per file in it

    def is_frame_folder(path: Path) -> bool:
        if path not in frame_folders:
            frame_folders[path] = _is_frame_folder(path, extensions)
        return frame_folders[path]

    for entry in sorted(_entries(folder, skip)):
        if entry.suffix.lower() in extensions and not entry.is_dir() and _unreadable(entry):
            found.append(entry)
        elif entry.is_file() and entry.suffix.lower() in extensions:
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


def _from_folder(root: Path, extensions: tuple, require_labels: bool,
                 leaf_dirs: bool) -> Dataset:
    skip = _ToolOutputs()
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and not skip(p))
    split_dirs = [(SPLIT_DIR_NAMES[p.name.lower()], p) for p in subdirs
                  if p.name.lower() in SPLIT_DIR_NAMES]
    layout = split_dirs if split_dirs else [("", root)]
    samples = []
    for split, folder in layout:
        class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
                            and not skip(p))
        if leaf_dirs:  # a class folder that is itself a clip of frames is no class folder
            class_dirs = [p for p in class_dirs if not _is_frame_folder(p, extensions)] or class_dirs
        for class_dir in class_dirs:
            for item in _list_inputs(class_dir, extensions, leaf_dirs, skip):
                samples.append(_sample(item, root, class_dir.name, split, ""))
    if not require_labels and not split_dirs:  # predict: loose files beside subfolders count too
        loose = [p for p in _list_inputs(root, extensions, leaf_dirs, skip) if p.parent == root]
        samples += [_sample(p, root, "", "", "") for p in loose]
    if not samples and not require_labels:
        samples = [_sample(p, root, "", "", "")
                   for p in _list_inputs(root, extensions, leaf_dirs, skip)]
    if not samples:
        kinds = ", ".join(sorted({e.lstrip('.') for e in extensions}))
        raise DataError(f"no input files found under {root} (looked for {kinds}); expected one "
                        "subfolder per class, optionally inside train/, val/ and test/.")
    # Named after the folder itself: `--data .` gives `photos-...h5`, not `-...h5`.
    skipped = tuple(sorted({p.relative_to(root).as_posix() for p in skip.found}))
    return _finish(root, samples, Path(os.path.abspath(root)).name or "data", skipped)


def _from_manifest(csv_path: Path, require_labels: bool) -> Dataset:
    root = csv_path.parent
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            samples = _manifest_rows(csv_path, csv.DictReader(fh), require_labels)
    except UnicodeDecodeError:
        line_no, byte = _first_line_not_utf8(csv_path)
        raise DataError(f"{csv_path}:{line_no}: the manifest is not UTF-8 text (that row holds "
                        f"byte 0x{byte:02x}, e.g. Latin-1 or Windows-1252); save it as UTF-8 "
                        "(\"CSV UTF-8\" in spreadsheet programs) and run again.") from None
    if not samples:
        raise DataError(f"manifest {csv_path} lists no files")
    return _finish(root, samples, csv_path.stem)


def _first_line_not_utf8(csv_path: Path) -> tuple:
    """(line number, first odd byte) of the first line of a file that is not UTF-8."""
    with csv_path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return line_no, raw[exc.start]
    return 1, 0


def _manifest_rows(csv_path: Path, reader, require_labels: bool) -> list:
    root = csv_path.parent
    old_limit = csv.field_size_limit(_FIELD_LIMIT)
    try:
        try:
            fieldnames = reader.fieldnames
        except csv.Error as exc:
            raise DataError(f"{csv_path}:1: not a readable CSV header ({exc})") from None
        columns = [c.strip().lower() for c in (fieldnames or [])]
        if "path" not in columns or (require_labels and "label" not in columns):
            raise DataError(f"manifest {csv_path} needs columns path,label (optional: split, "
                            f"group); found: {', '.join(columns) or 'no header'}")
        samples = []
        rows = enumerate(reader, start=2)
        while True:
            try:
                line_no, row = next(rows)
            except StopIteration:
                break
            except csv.Error as exc:
                raise DataError(f"{csv_path}:{reader.line_num}: not a readable CSV row ({exc}); "
                                "check its quotes and separators.") from None
            samples.append(_manifest_sample(csv_path, root, line_no, row, require_labels))
    finally:
        csv.field_size_limit(old_limit)
    return samples


def _manifest_sample(csv_path: Path, root: Path, line_no: int, row: dict,
                     require_labels: bool) -> Sample:
    where = f"{csv_path}:{line_no}"
    row = {k.strip().lower(): (v or "").strip() for k, v in row.items()
           if isinstance(k, str) and k and isinstance(v, (str, type(None)))}
    for column, value in row.items():
        if len(value) > MAX_PATH_CHARS:
            raise DataError(f"{where}: the {column} field is {len(value):,} characters long (at "
                            f"most {MAX_PATH_CHARS:,}); fix that row of the manifest.")
    if not row.get("path"):
        raise DataError(f"{where}: empty path; give each row the file's path (relative to the "
                        "manifest's folder) or delete the row.")
    if require_labels and not row.get("label"):
        raise DataError(f"{where}: empty label for {row['path']}; give the row its class, or "
                        "delete the row.")
    file = Path(row["path"])
    if not file.is_absolute() and ".." in file.parts:
        raise DataError(f"{where}: {row['path']} points outside the manifest's folder; keep the "
                        "files below the manifest (paths are relative to it) or give an "
                        "absolute path.")
    file = file if file.is_absolute() else root / file
    try:
        os.lstat(file)  # a symlink that leads nowhere is listed (and recorded as a failure)
    except OSError as exc:
        what = "file not found" if isinstance(exc, FileNotFoundError) else \
            f"cannot look at the file ({exc.strerror})"
        raise DataError(f"{where}: {what}: {row['path'][:200]} (paths are relative to the "
                        "manifest's folder)") from None
    split = row.get("split", "").lower()
    split = SPLIT_DIR_NAMES.get(split, split)
    if split and split not in SPLITS:
        raise DataError(f"{where}: split must be train, val or test; received: "
                        f"{row.get('split')!r}")
    return _sample(file, root, row.get("label", ""), split, row.get("group", ""))


def _finish(root: Path, samples: list, name: str, skipped: tuple = ()) -> Dataset:
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
                   class_names=tuple(known), name=name, skipped=skipped)
