"""A full disk while a store or its journal is written: recognised in any of the forms h5py
raises it, cleaned up so HDF5 can close its file, and said as one line with the fix.

A half-written HDF5 file on a full disk cannot even be closed (closing writes metadata, which
fails again, and a later close at exit can crash the library), so the space is freed first by
truncating the temporary file, then the file is closed and removed.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from pipeline.errors import StoreError

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXT = ("No space left on device", "Disk quota exceeded", "errno = 28")


def is_out_of_space(exc: BaseException | None) -> bool:
    """True when `exc` (or an exception it was raised from or during) is a full disk."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            return True
        if isinstance(exc, (OSError, RuntimeError)) and any(t in str(exc) for t in _NO_SPACE_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def out_of_space_error(folder: Path, what: str) -> StoreError:
    return StoreError(f"no space left in {folder} while {what}; free space there (or pass "
                      "another --cache-dir) and re-run the same command: the files finished "
                      "so far are kept and not extracted again")


def discard(h5file, tmp_path: Path) -> None:
    """Closes and removes a temporary HDF5 file that may have met a full disk."""
    try:
        os.truncate(tmp_path, 0)  # frees the space, so the close below can write its metadata
    except OSError:
        pass
    try:
        if h5file is not None:
            h5file.close()
    except Exception:  # noqa: BLE001 - the file is being thrown away; the first error is the one
        pass
    tmp_path.unlink(missing_ok=True)
