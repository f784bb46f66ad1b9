"""What one extraction did (`run_extraction`'s result), and its one-line summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class ExtractResult:
    path: Path
    n_samples: int
    n_rows: int
    n_extracted: int
    n_failures: int
    seconds: float
    cache_hit: bool
    steady_rate: float = 0.0  # images (clips) per second after the first batch; 0: one batch
    n_inputs: int = 0  # model inputs run: images, or clips for a clip backbone
    kind: str = "image"  # the backbone's kind: what a model input is
    unit: str = "images"  # what a model input is called: the reader's unit
    # With --views: the plain store was a cache hit, and the views the backbone ran and in
    # what time (views reused from sibling stores are not counted).
    plain_cache_hit: bool = False
    n_views_extracted: int = 0
    views_seconds: float = 0.0

    def __fspath__(self) -> str:  # the store: `open_store(result)`, `Path(result)` work
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def summary(self) -> str:
        """One line: `extracted 6 files, 48 clips in 96.0s (0.5 clips/s, steady 0.6/s); ...`;
        with --views on a cached plain store `cache hit of the plain store; 12 views extracted
        in 0.5s (24.0 views/s); ...`."""
        if self.cache_hit:
            parts = ["cache hit: nothing to extract"]
        else:
            parts = ["cache hit of the plain store" if self.plain_cache_hit else
                     self._extracted()]
            if self.n_views_extracted:
                rate = self.n_views_extracted / self.views_seconds if self.views_seconds > 0 \
                    else 0.0
                parts.append(f"{_count(self.n_views_extracted, 'view')} extracted in "
                             f"{self.views_seconds:.1f}s ({rate:.1f} views/s)")
        return (f"{'; '.join(parts)}; store holds {_count(self.n_rows, 'row')} from "
                f"{_count(self.n_samples, 'file')}, {_count(self.n_failures, 'failure')} "
                "recorded")

    def _extracted(self) -> str:
        rate = self.n_inputs / self.seconds if self.seconds > 0 else 0.0
        # `steady` (inputs per second after the first batch) is the figure benchmarks read;
        # the whole-command rate also pays for model building and compilation.
        steady = f", steady {self.steady_rate:.1f}/s" if self.steady_rate > 0 else ""
        head = [f"extracted {_count(self.n_extracted, 'file')}"]
        if self.unit != "images":  # files hold several inputs: count those too
            head.append(f"{_count(self.n_inputs, self.unit[:-1])}")
        return f"{', '.join(head)} in {self.seconds:.1f}s ({rate:.1f} {self.unit}/s{steady})"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
