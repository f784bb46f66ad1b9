"""Writing what a person or another command reads back, and where it goes.

Every stage writes JSON and plots through `write_json` and `pyplot`, so a JSON file is never
seen half-written and a plot never needs a display. Every command that makes or replaces a
folder goes through the location helpers below: output paths are checked before any work,
a folder is replaced only when a marker file says this tool wrote it, new run folders never
take an existing name, and scratch files live under the output folder, where the next run
removes those of dead runs. And before the tool reads a file a user names or can put in place (a
config, a weights file, a preset's files, a store, a run's files, an audit's tables, the graph
cache), `require_regular_file` looks at it with `os.stat`, which never blocks: reading a FIFO
waits for a writer and a device such as /dev/zero never ends, so either would hang the command.

Usage:
    write_json(run_dir / "metrics.json", metrics)
    plt = pyplot()
    check_writable_folder(out, "--out")
    with Scratch(out, "fit-head") as scratch:
        ...; publish_new_folder(scratch / "run", out, name)
    require_regular_file(path, "config file")   # ConfigError for a FIFO, a device, a socket
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

from pipeline.errors import ConfigError, OutputError


# --- Files the tool reads: only regular ones are opened ---

_SPECIAL_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                  (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def kind_of_mode(mode: int) -> str | None:
    """What a file of this `st_mode` is when it is neither regular nor a folder ("a FIFO")."""
    return next((name for test, name in _SPECIAL_KINDS if test(mode)), None)


def special_kind(path) -> str | None:
    """kind_of_mode of what `path` names; None when it cannot be looked at (a missing file:
    the caller's own check names it)."""
    try:
        return kind_of_mode(os.stat(path).st_mode)
    except (OSError, ValueError):
        return None


def require_regular_file(path, what: str, error: type = ConfigError,
                         fix: str = "pass a regular file there") -> None:
    """Raises `error` (a PipelineError class), naming `what` and ending with `fix`, when
    `path` is a FIFO, a device or a socket; it is never opened."""
    kind = special_kind(path)
    if kind is not None:
        raise error(f"{what} {path} is {kind}, not a regular file, and was not opened (reading "
                    f"it could wait forever); {fix}")


def write_json(path: str | Path, data: dict) -> None:
    """Writes `data` as indented JSON through a temporary file and `os.replace` (atomic)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n",
                       encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, as hex."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def class_names_sha256(class_names) -> str:
    """The sha256 of a list of class names (in order), as run.json records it."""
    return hashlib.sha256(json.dumps(list(class_names)).encode("utf-8")).hexdigest()


def run_digests(folder: str | Path, names, class_names) -> dict:
    """What run.json records so that predict and export can tell a run file edited or swapped
    after the run: the sha256 of each named file in `folder`, and of the class names."""
    return {"file_sha256": {name: file_sha256(Path(folder) / name) for name in names},
            "class_names_sha256": class_names_sha256(class_names)}


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only; never needs a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --- Output locations: checked before work, owned by a marker, never replaced unless ours ---

MARKER = ".featcache-output"  # written into every folder a command may later replace
SCRATCH = ".featcache-scratch"  # per-run scratch folders, under the output folder
_OWNER = "owner"


def check_writable_folder(folder: str | Path, flag: str, writable: bool = True) -> Path:
    """Refuses, before any work, a `folder` that cannot become a writable folder: a file on
    its path, or (with `writable`) a read-only or unwritable existing parent. Creates nothing.
    `writable=False` is for a folder that may be read from only (a shared read-only cache).

    Raises:
        OutputError: naming `flag` and what to pass instead.
    """
    folder = Path(folder).expanduser()
    for path in (folder, *folder.parents):
        if path.exists() or path.is_symlink():
            break
    if not path.is_dir():
        what = "is a file" if path == folder else f"lies below the file {path}"
        raise OutputError(f"{flag} {folder} {what}; this needs a folder: pass {flag} with a "
                          "folder path (a new one is created).")
    if writable and not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {folder}: {path} is not writable (read-only or "
                          f"without permission); pass {flag} with a folder you can write to.")
    return folder


def make_folder(folder: str | Path, flag: str) -> Path:
    """`check_writable_folder`, then creates it (and its parents)."""
    folder = check_writable_folder(folder, flag)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {folder} ({exc.strerror}); pass {flag} with a folder "
                          "you can write to.") from None
    return folder


def write_marker(folder: Path, command: str, **facts) -> None:
    """Marks `folder` as written by `command`: only such folders are ever replaced."""
    write_json(Path(folder) / MARKER, {"command": command, **facts})


def read_marker(folder: Path) -> dict | None:
    if special_kind(Path(folder) / MARKER):
        return None  # a FIFO under the marker's name is no marker of ours
    try:
        data = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_own_folder(folder: Path, command: str, legacy_names: frozenset = frozenset()) -> bool:
    """True for a folder `command` wrote: its marker names `command`, or (folders written
    before markers existed) it holds only `legacy_names`, `summary.json` among them."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return False
    marker = read_marker(folder)
    if marker is not None:
        return marker.get("command") == command
    names = {p.name for p in folder.iterdir()}
    return bool(legacy_names) and "summary.json" in names and names <= legacy_names


def check_replaceable(folder: Path, command: str, flag: str, example: str,
                      legacy_names: frozenset = frozenset()) -> Path:
    """Refuses an output folder `command` would replace unless it is new, empty or its own.

    Returns:
        The absolute folder path.

    Raises:
        OutputError: a file, the folder you are in (or one above it), or a folder holding
            files `command` did not write; the message says what to pass instead.
    """
    folder = Path(os.path.abspath(Path(folder).expanduser()))
    here = Path.cwd().resolve()
    resolved = folder.resolve()
    if resolved == here or resolved in here.parents:
        raise OutputError(f"{flag} {folder} is the folder you are in (or holds it), and {command} "
                          f"replaces its {flag} folder whole; pass a new folder, e.g. "
                          f"{flag} {example}.")
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{flag} {folder} is a file, and {command} writes a folder; nothing "
                          f"was changed. Pass a new folder, e.g. {flag} {example}.")
    check_writable_folder(folder.parent, flag)
    if folder.is_dir() and any(folder.iterdir()) and not is_own_folder(folder, command,
                                                                       legacy_names):
        shown = ", ".join(sorted(p.name for p in folder.iterdir())[:3])
        raise OutputError(f"{flag} {folder} holds files {command} did not write ({shown}, ...), "
                          f"and {command} replaces its {flag} folder whole, so it was left "
                          f"untouched; pass a new or empty folder, e.g. {flag} {example}.")
    check_writable_folder(folder, flag)
    return folder


def publish_new_folder(tmp: Path, parent: Path, name: str) -> Path:
    """Renames the finished `tmp` folder to `parent/name`, or `name-2`, `name-3`, ... : the
    first name no other folder has. The name is reserved by an atomic `mkdir`, so two runs
    finishing at the same moment never take one name."""
    for n in range(1, 10_000):
        final = parent / (name if n == 1 else f"{name}-{n}")
        try:
            final.mkdir()
        except FileExistsError:
            continue
        os.replace(tmp, final)  # over our own empty reservation: atomic on POSIX
        return final
    raise OutputError(f"no free run-folder name for {name} in {parent}")


def replace_own_folder(tmp: Path, final: Path, scratch: Path) -> Path:
    """Puts the finished `tmp` at `final`, replacing an old folder already checked as ours
    (`check_replaceable`) in two renames; the old one is removed last."""
    old = scratch / "replaced"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


class Scratch:
    """A private scratch folder under `parent/.featcache-scratch/`, removed on exit.

    The owner file inside records pid and host and stays locked (an OS lock, dropped when
    the process dies, even by SIGKILL). Entering also removes the scratch folders of dead
    runs: ones on this host whose owner file nobody holds.
    """

    def __init__(self, parent: str | Path, command: str, flag: str = "--out"):
        self.root = Path(parent) / SCRATCH
        self.command, self.flag = command, flag
        self.path: Path | None = None
        self._fh = None

    def __enter__(self) -> Path:
        make_folder(self.root, self.flag)
        remove_dead_scratch(self.root)
        self.path = Path(tempfile.mkdtemp(prefix=f"{self.command}-{os.getpid()}-",
                                          dir=self.root))
        pending = self.path / f".{_OWNER}.new"
        self._fh = open(pending, "w")
        fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._fh.write(f"pid {os.getpid()} host {socket.gethostname()} {self.command}\n")
        self._fh.flush()
        os.replace(pending, self.path / _OWNER)  # the lock is on the file, not the name
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)
        self._fh.close()
        try:
            self.root.rmdir()  # only when no other run's scratch is there
        except OSError:
            pass


def remove_dead_scratch(root: Path) -> list[Path]:
    """Removes the scratch folders under `root` whose owner is dead: same host, and its owner
    file unlocked. Another host's folders, and folders without an owner file yet, are kept."""
    removed = []
    host = socket.gethostname()
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        owner = folder / _OWNER
        try:
            words = owner.read_text(encoding="utf-8").split()
        except OSError:
            continue
        if len(words) < 4 or words[3] != host:
            continue
        with open(owner, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # alive
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def hold_exclusive_lock(fh, path: Path, busy):
    """Takes the exclusive OS lock of the open lock file `fh` (at `path`) and returns the file
    that holds it; the OS drops it when the holder dies, even by SIGKILL. When another process
    holds it, raises `busy(holder)` (holder: the text that process wrote into the file).

    The previous holder may remove the file between our open and our lock: then the lock is on
    a name nobody else can see, so the new file at `path` is opened and locked instead."""
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise busy(holder) from None
        try:
            if os.path.samestat(os.fstat(fh.fileno()), os.stat(path)):
                return fh
        except FileNotFoundError:
            pass
        fh.close()
        fh = open(path, "a+")


def release_lock_file(fh, path: Path) -> None:
    """Removes the lock file while still holding it (no one else holds this file), then
    unlocks; closing may fail on a full disk, which loses nothing."""
    path.unlink(missing_ok=True)
    fcntl.flock(fh, fcntl.LOCK_UN)
    try:
        fh.close()
    except OSError:
        pass


class FolderLock:
    """An exclusive OS lock `.NAME.lock` beside an output folder, as extract locks a store:
    a second run writing the same folder is refused; the lock goes when its holder dies."""

    def __init__(self, folder: Path, command: str):
        self.path = Path(folder).with_name(f".{Path(folder).name}.lock")
        self.folder, self.command = Path(folder), command
        self._fh = None

    def __enter__(self):
        def busy(holder):
            return OutputError(f"{self.folder} is being written by another {self.command} "
                               f"({holder}); wait for it to finish, or pass another --out.")

        self._fh = hold_exclusive_lock(open(self.path, "a+"), self.path, busy)
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"pid {os.getpid()} host {socket.gethostname()}")
        self._fh.flush()
        return self

    def __exit__(self, *exc):
        release_lock_file(self._fh, self.path)


def check_own_file(path: Path, flag: str, is_ours, what: str, example: str) -> Path:
    """Refuses to overwrite an existing `path` that `is_ours(path)` does not recognise (a
    file this tool wrote), or a folder where a file is needed."""
    path = Path(path)
    require_regular_file(path, flag, OutputError, f"pass {flag} with a new file name for the "
                         f"{what}.")
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a folder; pass the path of the {what} to write, "
                          f"e.g. {flag} {path / example}.")
    if path.exists() and not is_ours(path):
        raise OutputError(f"{flag} {path} is a file this tool did not write, so it was left "
                          f"untouched; pass {flag} with a new file name for the {what}.")
    check_writable_folder(path.parent, flag)
    return path


def is_own_csv(path: Path, first_column: str, needed_column: str) -> bool:
    """A CSV whose header starts with `first_column` and holds `needed_column`."""
    if special_kind(path):
        return False
    try:
        with Path(path).open(encoding="utf-8", newline="") as fh:
            header = fh.readline().strip().split(",")
    except (OSError, UnicodeDecodeError):
        return False
    return bool(header) and header[0] == first_column and needed_column in header


def is_own_json(path: Path, *keys: str) -> bool:
    """A JSON object holding every one of `keys`."""
    if special_kind(path):
        return False
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and all(k in data for k in keys)
