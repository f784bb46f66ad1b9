"""Writes docs/reference/api.md from featcache.py, so the API reference cannot drift.

    python tools/api_reference.py            # rewrite the page
    python tools/api_reference.py --check    # exit 1 if the page differs from the code

Every name in `featcache.__all__` is listed with its signature (from `inspect`) and its
docstring; a class also lists its public methods and properties. Nothing is listed by hand.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools.generated_page import write_or_check  # noqa: E402

PAGE = ROOT / "docs" / "reference" / "api.md"

import featcache  # noqa: E402

HEADER = """# API reference

Generated from `featcache.py` by `python tools/api_reference.py`; do not edit by hand (a test
fails when this page and the code disagree). Examples: [the library guide](../library.md).
Settings taken as keyword arguments are the command's flags with `_` for `-`: see the
[CLI reference](cli.md).
"""


def _doc(obj) -> str:
    return inspect.cleandoc(obj.__doc__ or "").strip()


def _entry(name: str, obj, level: str = "##") -> list[str]:
    try:
        signature = str(inspect.signature(obj))
    except (TypeError, ValueError):
        signature = ""
    kind = "class " if inspect.isclass(obj) else ""
    lines = [f"{level} `{name}`", "", "```python", f"{kind}{name}{signature}", "```", ""]
    if _doc(obj):
        lines += [_doc(obj), ""]
    return lines


def _members(cls) -> list[str]:
    lines = []
    for name, member in vars(cls).items():
        if name.startswith("_") or name == "__init__":
            continue
        if isinstance(member, property):
            lines += [f"### `{cls.__name__}.{name}` (property)", ""]
            lines += [_doc(member.fget), ""] if _doc(member.fget) else []
        elif inspect.isfunction(member):
            lines += _entry(f"{cls.__name__}.{name}", member, "###")
    return lines


def render() -> str:
    lines = [HEADER]
    for name in featcache.__all__:
        if name == "__version__":
            continue
        obj = getattr(featcache, name)
        lines += _entry(name, obj)
        if inspect.isclass(obj) and obj.__module__ == "featcache":
            lines += _members(obj)
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    parser.add_argument("--page", type=Path, default=PAGE, help="page to write or check")
    args = parser.parse_args(argv)
    return write_or_check(args.page, render(), args.check, "featcache.py",
                          "tools/api_reference.py")


if __name__ == "__main__":
    sys.exit(main())
