"""Options shared by the CLI and TOML config files.

Each command declares its options once, as a tuple of `Option`. From that one list we build the
argparse flags, validate config files and generate the command's typed settings class
(pipeline/settings.py), so a key in `configs/*.toml`, a flag on the command line and an attribute
can never drift apart. Precedence: built-in default < config file < command line.

Usage:
    add_options(parser, EXTRACT_OPTIONS)
    config = ExtractConfig.from_cli(parser.parse_args())
"""

from __future__ import annotations

import argparse
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from pipeline.errors import ConfigError


@dataclass(frozen=True)
class Option:
    """One option: its key in TOML (snake_case), flag on the CLI (--kebab-case), type and help."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple = ()
    positional: bool = False
    metavar: str | None = None
    aliases: tuple = field(default_factory=tuple)
    minimum: float | None = None  # smallest value allowed (a batch size of 0 is refused up front)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """Adds one flag per option. Defaults stay None so we can tell 'not given' from a value."""
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="TOML file with these options (flags given here override it)")
    for opt in options:
        kwargs: dict[str, Any] = {"help": _help_text(opt), "default": None}
        if opt.type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = opt.type
            kwargs["metavar"] = opt.metavar or opt.name.upper()
        if opt.positional:
            kwargs["nargs"] = "?"
            parser.add_argument(opt.name, **kwargs)
        else:
            parser.add_argument(opt.flag, *opt.aliases, dest=opt.name, **kwargs)


def _help_text(opt: Option) -> str:
    text = opt.help
    if opt.choices:
        text += f" (one of: {', '.join(map(str, opt.choices))})"
    if isinstance(opt.default, bool):  # a switch: the flag that gives the default
        text += f" [default: {opt.flag if opt.default else '--no-' + opt.flag[2:]}]"
    elif opt.default not in (None, "", ()):
        text += f" [default: {as_typed(opt.default)}]"
    return text


def as_typed(value: Any) -> str:
    """A default as a user types it on the command line: `256,128`, not `(256, 128)`."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def load_config_file(path: str | Path, section: str) -> dict:
    """Reads `[section]` of a TOML file; a file without section tables is read whole."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}. Pass an existing TOML file with --config.")
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    if section in doc and isinstance(doc[section], dict):
        return dict(doc[section])
    tables = [k for k, v in doc.items() if isinstance(v, dict)]
    if tables:
        raise ConfigError(f"config file {path} has no [{section}] table (found: {', '.join(tables)}); "
                          f"put the {section} options under [{section}].")
    return dict(doc)


def _coerce(opt: Option, value: Any, source: str) -> Any:
    if value is None:
        return None
    # Name the option as the user gave it: the flag on the command line, the key in a file.
    named = f"{opt.flag}" if source == "the command line" else f"option '{opt.name}' from {source}"
    try:
        if opt.type is bool and not isinstance(value, bool):
            raise TypeError
        if opt.type in (int, float) and isinstance(value, bool):
            raise TypeError
        value = opt.type(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{named} must be {opt.type.__name__}; received: {value!r}") from None
    if opt.choices and value not in opt.choices:
        raise ConfigError(f"{named} must be one of {', '.join(map(str, opt.choices))}; "
                          f"received: {value!r}")
    if opt.minimum is not None and value < opt.minimum:
        raise ConfigError(f"{named} must be at least {as_typed(opt.minimum)}; received: {value!r}")
    return value


def write_toml(path: str | Path, section: str, values: dict) -> None:
    """Writes a flat dict as one TOML table (the stdlib reads TOML but cannot write it)."""
    lines = [f"[{section}]"]
    for key, value in values.items():
        if value is None:
            continue  # TOML has no null; an absent key means "default"
        lines.append(f"{key} = {_toml_value(value)}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string
