"""The one CSV writer and reader of the pipeline's own tables.

A spreadsheet runs a cell that starts with `=`, `+`, `-` or `@` (and, in some, a tab or a
carriage return) as a formula, so a class folder named `=HYPERLINK(...)` or a file named
`+cmd|...` would act when someone opens predictions.csv. A spreadsheet whose list separator is
`;` (German or French Excel) also cuts `a;=1+1.png` into the cells `a` and `=1+1.png`, and it
does so even inside double quotes when the quoted cell is not the first of its line; a tab or
a line break cuts cells in other readings. So every part of a string cell that starts the cell
or follows a `;`, a tab or a line break gets a leading single quote when it would start a
formula (OWASP's rule for CSV injection); numbers stay numbers (a negative score is not a
formula), except at the start of a line, where a `;` reading would run `-1,3,0` as one cell.
And every cell holding a separator (`,` or `;`), a line break, a double quote or a formula
character anywhere is written between double quotes (OWASP asks for both). `read_rows` undoes
exactly the quotes added, so the ids our own readers look up come back as they were.

Usage:
    write_rows(path, header, rows)
    for row in read_rows(path): row["id"]
    rows = read_rows(path, required=("id", "group"))   # TableError when edited out of shape
"""

from __future__ import annotations

import csv
import numbers
import re
from pathlib import Path
from typing import Iterable, Sequence

from pipeline.outputs import require_regular_file

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"
# A cell that is a plain number as our writers format it (`-0.5`, `1e-07`): never a formula.
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
# Where a reading with another separator (or one that breaks lines) starts a new cell.
_CELL_BREAK = re.compile(r"([;\t\r\n])")
# A cell holding one of these is written between double quotes.
_NEEDS_QUOTES = frozenset(',;"\r\n\t=+-@')


def _parts(text: str) -> list[str]:
    """The cell cut where another reading starts a new cell: [part, break, part, ...]."""
    return _CELL_BREAK.split(text)


def _needs_quote(parts: list[str], i: int, first: bool) -> bool:
    """Whether a reading that starts a cell at part `i` starts a formula there. Such a cell
    may run on past the next break (a `;` reading runs past a tab) and into the next cells, so
    it is judged on the text from here on, looking past leading quotes (a `'` the name itself
    starts with is quoted once more). Only a whole cell that is a plain number is let through,
    and not at the start of a line. Quotes added to later parts never change the answer, which
    makes the quoting reversible."""
    rest = "".join(parts[i:])
    return rest.lstrip("'\"").startswith(FORMULA_STARTS) and \
        (i > 0 or first or not _NUMBER.fullmatch(rest))


def safe_cell(value, first: bool = False):
    """A cell as it may be written: each part of a string that a spreadsheet would run (at the
    start, or after a `;`, a tab or a line break) gets a leading `'`. `first`: the cell starts
    its line, where a signed number is quoted too."""
    if value is None or (isinstance(value, numbers.Number) and not
                         (first and str(value).startswith(FORMULA_STARTS))):
        return value
    if not isinstance(value, str):
        return safe_cell(str(value), first)
    parts = _parts(value)
    for i in range(0, len(parts), 2):  # the odd items are the breaks themselves
        if _needs_quote(parts, i, first):
            parts[i] = QUOTE + parts[i]
    return "".join(parts)


def original_cell(text: str, first: bool = False) -> str:
    """The string `safe_cell` was given, from the cell it wrote."""
    parts = _parts(text)
    for i in range(0, len(parts), 2):
        if parts[i].startswith(QUOTE) and _needs_quote(parts, i, first):
            parts[i] = parts[i][1:]
    return "".join(parts)


def _field(value, first: bool = False) -> str:
    """One written field: numbers bare, strings quoted when they hold a separator, a quote, a
    line break or a formula character (a string that is a plain number excepted)."""
    cell = safe_cell(value, first)
    if cell is None:
        return ""
    text = str(cell)
    if isinstance(cell, str) and _NEEDS_QUOTES.intersection(text) and \
            not _NUMBER.fullmatch(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def _line(cells: Sequence) -> str:
    return ",".join(_field(c, first=i == 0) for i, c in enumerate(cells)) + "\r\n"


def write_rows(path, header: Sequence, rows: Iterable[Sequence]) -> None:
    """Writes a CSV (UTF-8, a header line, then the rows), every cell through `safe_cell`."""
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        fh.write(_line(header))
        for row in rows:
            fh.write(_line(row))


def write_dicts(path, fieldnames: Sequence, rows: Iterable[dict]) -> None:
    """`write_rows` for rows given as dicts keyed by `fieldnames`."""
    write_rows(path, fieldnames, ([row.get(name, "") for name in fieldnames] for row in rows))


class TableError(ValueError):
    """A CSV that is not in the shape it was written in; the message says what and where."""


def read_rows(path, required: Sequence = ()) -> list[dict]:
    """The rows of a CSV written by `write_rows`, as dicts, every cell (and header) as given.

    Args:
        required: columns the header must hold; given, every row must also have as many cells
            as the header (a blank line is passed over).

    Raises:
        ConfigError: `path` is a FIFO or a device (never opened: the read could block).
        TableError: the file is not UTF-8, lacks a required column or has a row of another
            length.
    """
    require_regular_file(path, "CSV file")
    with Path(path).open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        try:
            header = _cells_of(next(reader, []))
            missing = [name for name in required if name not in header]
            if missing:
                raise TableError(f"its header has no column {missing[0]!r} (it has: "
                                 f"{', '.join(header)[:120]})")
            rows = []
            for row in reader:
                if required and row and len(row) != len(header):
                    raise TableError(f"line {reader.line_num} has {len(row)} cell(s) where its "
                                     f"header has {len(header)}")
                rows.append(dict(zip(header, _cells_of(row))))
        except UnicodeDecodeError:
            raise TableError(f"it is not UTF-8 text ({_first_bad_byte(path)})") from None
        except csv.Error as exc:
            raise TableError(f"line {reader.line_num} cannot be read as CSV ({exc})") from None
    return rows


def _first_bad_byte(path) -> str:
    data = Path(path).read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        return f"line {line}, byte {exc.start}"
    return "it changed while read"


def _cells_of(row: list) -> list:
    return [original_cell(c, first=i == 0) for i, c in enumerate(row)]
