"""One row of the fault table (tests/faults/test_fault_table.py): a command line, the exit status
it must end with and the words its message must hold, plus an optional check that nothing the
user had was lost.

Rows live in `rows_<family>.py` modules beside this one. Each such module defines
`build(root: Path) -> dict` (the files its rows need, written once under `root`; the values fill
`{placeholders}` in the argv) and `CASES`, a list of `Fault`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Fault:
    id: str
    argv: list
    words: str = ""          # must appear in the `error:` line (status 2) or on stderr (status 0)
    status: int = 2          # 2: refused with one `error:` line; 0: done, maybe with a warning
    after: Callable | None = None  # after(files) -> None: asserts what must still be there
    stdin: str | None = None
    env: dict = field(default_factory=dict)  # environment variables set while the row runs
