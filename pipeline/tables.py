"""The one CSV writer and reader of the pipeline's own tables.

A spreadsheet runs a cell that starts with `=`, `+`, `-` or `@` (and, in some, a tab or a
carriage return) as a formula, so a class folder named `=HYPERLINK(...)` or a file named
`+cmd|...` would act when someone opens predictions.csv. Every string cell that would start with
one of those is written with a leading single quote (OWASP's rule for CSV injection); numbers
stay numbers (a negative score is not a formula). `read_rows` undoes exactly that, so the ids
our own readers look up come back as they were stored.

Usage:
    write_rows(path, header, rows)
    for row in read_rows(path): row["id"]
"""

from __future__ import annotations

import csv
import numbers
import re
from pathlib import Path
from typing import Iterable, Sequence

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"
# A cell that is a plain number as our writers format it (`-0.5`, `1e-07`): never a formula.
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _is_formula(text: str) -> bool:
    # Leading quotes are looked past, so a name that itself starts with `'=` is quoted once more
    # and reads back whole (the neutralising is reversible for every string).
    rest = text.lstrip(QUOTE)
    return rest.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(rest)


def safe_cell(value):
    """A cell as it may be written: a string that a spreadsheet would run gets a leading `'`."""
    if isinstance(value, str) and _is_formula(value):
        return QUOTE + value
    if isinstance(value, numbers.Number) or value is None:
        return value
    return value if isinstance(value, str) else safe_cell(str(value))


def original_cell(text: str) -> str:
    """The string `safe_cell` was given, from the cell it wrote."""
    if text.startswith(QUOTE) and _is_formula(text):
        return text[1:]
    return text


def write_rows(path, header: Sequence, rows: Iterable[Sequence]) -> None:
    """Writes a CSV (UTF-8, a header line, then the rows), every cell through `safe_cell`."""
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow([safe_cell(c) for c in header])
        for row in rows:
            out.writerow([safe_cell(c) for c in row])


def write_dicts(path, fieldnames: Sequence, rows: Iterable[dict]) -> None:
    """`write_rows` for rows given as dicts keyed by `fieldnames`."""
    write_rows(path, fieldnames, ([row.get(name, "") for name in fieldnames] for row in rows))


def read_rows(path) -> list[dict]:
    """The rows of a CSV written by `write_rows`, as dicts, every cell (and header) as given."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        return parse_rows(fh)


def parse_rows(lines: Iterable[str]) -> list[dict]:
    """`read_rows` of lines already open (e.g. after a file's comment line)."""
    reader = csv.reader(lines)
    header = [original_cell(c) for c in next(reader, [])]
    return [dict(zip(header, (original_cell(c) for c in row))) for row in reader]
