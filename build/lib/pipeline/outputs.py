"""Writing what a person or another command reads back: JSON documents and plots.

Every stage writes through these two helpers, so a JSON file is never seen half-written and a
plot never needs a display.

Usage:
    write_json(run_dir / "metrics.json", metrics)
    plt = pyplot()
"""

from __future__ import annotations

import json
import os
from pathlib import Path


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


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only; never needs a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
