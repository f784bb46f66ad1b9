"""What the audit shows and records of its passes over the data: a progress bar with an ETA on a
terminal, and each pass's seconds for summary.json (`seconds_per_pass`).

    with bar(n, "digests", progress) as b: ... b.update(rows)
    times = PassTimes()
    with times("label probe"): ...
    times.as_dict()       # {"label probe": 12.3, ...}
"""

from __future__ import annotations

import time
from contextlib import contextmanager


def bar(total: int, what: str, enabled: bool, unit: str = "rows"):
    """A tqdm bar with an ETA, on a terminal only: a bar in a log or a captured stderr is noise
    that hides the one `error:` line a failure prints."""
    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit=unit, disable=None if enabled else True,
                leave=False, mininterval=1.0, unit_scale=True)


class PassTimes:
    """Seconds per named pass, in the order they first ran (a pass run twice adds up)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def as_dict(self) -> dict:
        return {name: round(s, 2) for name, s in self.seconds.items()}
