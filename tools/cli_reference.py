"""Writes docs/reference/cli.md from the Option tables, so the CLI reference cannot drift.

    python tools/cli_reference.py            # rewrite the page
    python tools/cli_reference.py --check    # exit 1 if the page differs from the code

Each command's options come from the settings class its command module uses (the class is
generated from the command's Option table, pipeline/settings.py); positional arguments that are
not options (such as `info STORE`) come from the command's argparse parser. Nothing here lists
commands or options by hand: a new Option row appears on the page at the next run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools.generated_page import write_or_check  # noqa: E402

PAGE = ROOT / "docs" / "reference" / "cli.md"

from pipeline.config import ENVIRONMENT, as_typed  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from run_pipeline import COMMANDS  # noqa: E402

HEADER = """# CLI reference

Generated from the commands' option tables by `python tools/cli_reference.py`; do not edit by
hand (a test fails when this page and the code disagree).

Every command is `featcache COMMAND [options]` (or `python run_pipeline.py COMMAND [options]`).
Every option is also a key in the command's table of a TOML file given with `--config FILE`
(the key is the flag without `--`, with `_` for `-`); a flag given on the command line wins over
the file, and the file over the default. A switch `--name` has its opposite `--no-name`.
"""


def _cell(text) -> str:
    """Table-safe text: a `|` would end the cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(opt) -> str:
    if isinstance(opt.default, bool):
        return f"`{opt.flag}`" if opt.default else f"`--no-{opt.flag[2:]}`"
    if opt.default in (None, "", ()):
        return ""
    return f"`{_cell(as_typed(opt.default))}`"


def _limits(opt) -> str:
    parts = []
    if opt.choices:
        parts.append("one of " + ", ".join(f"`{c}`" for c in opt.choices))
    if getattr(opt, "minimum", None) is not None:
        bound = "above" if getattr(opt, "open_minimum", False) else "at least"
        parts.append(f"{bound} {as_typed(opt.minimum)}")
    if getattr(opt, "maximum", None) is not None:
        bound = "below" if getattr(opt, "open_maximum", False) else "at most"
        parts.append(f"{bound} {as_typed(opt.maximum)}")
    return "; ".join(parts)


def _type_name(opt) -> str:
    if opt.type is bool:
        return "switch"
    return getattr(opt.type, "__name__", str(opt.type)).replace("_", " ")


def _settings_classes(module) -> list:
    return [value for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, Settings) and value.OPTIONS]


def _positionals(module) -> list[tuple[str, str]]:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return [(action.dest, action.help or "") for action in parser._actions
            if not action.option_strings]


def command_section(name: str, module) -> str:
    lines = [f"## `{name}`", "", module.HELP[0].upper() + module.HELP[1:] + ".", ""]
    classes = _settings_classes(module)
    options = [opt for cls in classes for opt in cls.OPTIONS]
    positional = [(opt.name, opt.help) for opt in options if opt.positional]
    if not classes:
        positional = _positionals(module)
    for arg, help_text in positional:
        lines.append(f"Positional: `{arg.upper()}`: {help_text}.")
        lines.append("")
    flags = [opt for opt in options if not opt.positional]
    if classes:
        section = classes[0].SECTION
        lines += [f"TOML table: `[{section}]`. Options:", "",
                  "| flag | type | default | allowed | meaning |",
                  "| --- | --- | --- | --- | --- |"]
        lines.append("| `--config FILE` | path |  |  | TOML file with these options |")
        for opt in flags:
            flag = f"`{opt.flag}`" + "".join(f", `{a}`" for a in opt.aliases)
            lines.append(f"| {flag} | {_type_name(opt)} | {_default(opt)} | "
                         f"{_cell(_limits(opt))} | {_cell(opt.help)} |")
        lines.append("")
    return "\n".join(lines)


def environment_section() -> str:
    """The environment variables the tool reads (pipeline/config.py's ENVIRONMENT table)."""
    lines = ["## Environment variables", "",
             "Each is read when a command uses it, never when a module is imported; a value "
             "outside what is allowed is one `error:` line naming the variable.", "",
             "| variable | type | default | allowed | meaning |",
             "| --- | --- | --- | --- | --- |"]
    for opt in ENVIRONMENT.values():
        lines.append(f"| `{opt.name}` | {_type_name(opt)} | {_default(opt)} | "
                     f"{_cell(_limits(opt))} | {_cell(opt.help)} |")
    return "\n".join(lines) + "\n"


def render() -> str:
    sections = []
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"pipeline.commands.{module_name}")
        sections.append(command_section(name, module))
    return HEADER + "\n" + "\n".join(sections) + "\n" + environment_section()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    parser.add_argument("--page", type=Path, default=PAGE, help="page to write or check")
    args = parser.parse_args(argv)
    return write_or_check(args.page, render(), args.check, "the option tables",
                          "tools/cli_reference.py")


if __name__ == "__main__":
    sys.exit(main())
