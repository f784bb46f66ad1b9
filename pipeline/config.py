"""Options shared by the CLI and TOML config files.

Each command declares its options once, as a tuple of `Option`. From that one list we build the
argparse flags *and* validate config files, so a key in `configs/*.toml` and a flag on the
command line can never drift apart. Precedence: built-in default < config file < command line.

Usage:
    opts = resolve_options(args, EXTRACT_OPTIONS, section="extract")
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


def resolve_options(args: argparse.Namespace | dict, options: Sequence[Option],
                    section: str, config_path: str | Path | None = None) -> dict:
    """Merges defaults, the config file and the CLI into one validated dict."""
    cli = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    config_path = config_path or cli.get("config")
    by_name = {opt.name: opt for opt in options}
    resolved = {opt.name: opt.default for opt in options}
    if config_path:
        for key, value in load_config_file(config_path, section).items():
            key = key.replace("-", "_")
            if key not in by_name:
                raise ConfigError(f"unknown option '{key}' in {config_path} [{section}]; "
                                  f"valid options: {', '.join(sorted(by_name))}")
            resolved[key] = _coerce(by_name[key], value, source=str(config_path))
    for name, opt in by_name.items():
        if cli.get(name) is not None:
            resolved[name] = _coerce(opt, cli[name], source="the command line")
    return resolved


def with_defaults(options: dict | None, option_list: Sequence[Option], command: str) -> dict:
    """Options given to a library entry point (`fit_head(...)`, `run_grid_search(...)`), checked
    like the CLI's: unknown keys refused, types and choices validated, the rest defaulted."""
    by_name = {opt.name: opt for opt in option_list}
    given = {k: v for k, v in (options or {}).items() if k != "config"}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        raise ConfigError(f"unknown {command} option(s) {', '.join(unknown)}; valid: "
                          f"{', '.join(sorted(by_name))}")
    resolved = {name: opt.default for name, opt in by_name.items()}
    for name, value in given.items():
        if value is not None:
            resolved[name] = _coerce(by_name[name], value, source=f"the {command} options")
    return resolved


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
