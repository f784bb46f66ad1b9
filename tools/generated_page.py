"""Writes a generated documentation page, or with --check says whether it is current: the one
rule of the reference and benchmarks pages (tests/test_docs.py checks each with --check)."""

from __future__ import annotations

import sys
from pathlib import Path


def write_or_check(page: Path, text: str, check: bool, source: str, script: str) -> int:
    """0 after writing `page` (or finding it current with `check`); 1 when `check` finds it
    stale, with one error line naming `source` (what it is made from) and the `script`."""
    if check:
        current = page.read_text(encoding="utf-8") if page.is_file() else ""
        if current != text:
            print(f"error: {page} is out of date with {source}; run `python {script}` to "
                  "regenerate it", file=sys.stderr)
            return 1
    else:
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(text, encoding="utf-8")
    print(page)
    return 0
