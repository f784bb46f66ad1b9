"""Writes docs/benchmarks.md from benchmarks/results/*.csv: every figure with its machine and date.

    python tools/benchmarks_page.py            # rewrite the page
    python tools/benchmarks_page.py --check    # exit 1 if the page differs from the CSV files

One section per CSV file, one table row per CSV row, the columns as the benchmark wrote them
(benchmarks/machine.py adds the machine, cores, CPU flags, load before and after, date, commit
and command to every row). The page holds no prose of its own beyond what a section's script
says about itself in its first docstring line.
"""

from __future__ import annotations

import argparse
import ast
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
from tools.generated_page import write_or_check  # noqa: E402

PAGE = ROOT / "docs" / "benchmarks.md"

HEADER = """# Benchmarks

Generated from `benchmarks/results/*.csv` by `python tools/benchmarks_page.py`; do not edit by
hand. Each row is one run of the command in its `command` column, on the machine it names, with
the 1-minute load average before and after the run (a load above the number of cores means the
cores were shared, and wall times grow with it; CPU-seconds do not).
"""


def _script_summary(stem: str) -> str:
    """The first docstring line of benchmarks/<stem>.py, when that script exists."""
    script = ROOT / "benchmarks" / f"{stem}.py"
    if not script.is_file():
        return ""
    doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
    return doc.split("\n")[0]


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def csv_section(path: Path) -> str:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    lines = [f"## {path.stem}", ""]
    summary = _script_summary(path.stem)
    if summary:
        lines += [f"`benchmarks/{path.stem}.py`: {summary}", ""]
    if not rows:
        return "\n".join(lines + ["(no rows yet)", ""])
    header, body = rows[0], rows[1:]
    lines.append("| " + " | ".join(_cell(h) for h in header) + " |")
    lines.append("|" + " --- |" * len(header))
    for row in body:
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    lines.append("")
    return "\n".join(lines)


def render(results: Path = RESULTS) -> str:
    sections = [csv_section(path) for path in sorted(results.glob("*.csv"))]
    other = sorted(p.name for p in results.iterdir() if p.suffix != ".csv") \
        if results.is_dir() else []
    text = HEADER + "\n" + "\n".join(sections)
    if other:
        text += ("\n## Raw outputs\n\nKept as the scripts printed them (not yet CSV): "
                 + ", ".join(f"`benchmarks/results/{name}`" for name in other) + ".\n")
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    parser.add_argument("--page", type=Path, default=PAGE, help="page to write or check")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the CSV files")
    args = parser.parse_args(argv)
    return write_or_check(args.page, render(args.results), args.check, args.results,
                          "tools/benchmarks_page.py")


if __name__ == "__main__":
    sys.exit(main())
