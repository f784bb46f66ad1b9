"""Options shared by the CLI and TOML config files.

Each command declares its options once, as a tuple of `Option`. From that one list we build the
argparse flags, validate config files and generate the command's typed settings class
(pipeline/settings.py), so a key in `configs/*.toml`, a flag on the command line and an attribute
can never drift apart. Precedence: built-in default < config file < command line.

The environment variables the tool reads are Options too (`ENVIRONMENT`), each read and checked
when it is used, never at import: a bad value is one error line naming the variable.

Usage:
    add_options(parser, EXTRACT_OPTIONS)
    config = ExtractConfig.from_cli(parser.parse_args())
    seconds = environment_value("PIPELINE_HUB_DOWNLOAD_SECONDS")
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from pipeline.errors import ConfigError
from pipeline.outputs import require_regular_file


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
    # The range of a number, or of each element of a list (hidden_units). Open ends exclude the
    # bound itself (a fraction in [0, 1)). NaN is always refused, infinity unless `allow_inf`.
    minimum: float | None = None  # smallest value allowed (a batch size of 0 is refused up front)
    maximum: float | None = None
    open_minimum: bool = False
    open_maximum: bool = False
    allow_inf: bool = False

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
    require_regular_file(path, "config file", fix="pass a TOML file saved on disk with --config.")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}. Pass an existing TOML file with --config.")
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}); save it "
                          "as UTF-8, which TOML requires.") from None
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
    # Name the option by its key (as the rules across options do), then where it came from:
    # the flag on the command line, the file, nothing for a library call.
    named = opt.name
    if source == "the command line":
        where = f" (given with {opt.flag})"
    else:
        library_call = source.startswith("the ") and source.endswith(" options")
        where = "" if library_call else f" (in {source})"
    try:
        if opt.type is bool and not isinstance(value, bool):
            raise TypeError
        if opt.type in (int, float) and isinstance(value, bool):
            raise TypeError
        if opt.type is int:
            value = integral(value)
        value = opt.type(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{named} must be {_kind(opt)}; received: {value!r}{where}") from None
    if opt.choices and value not in opt.choices:
        raise ConfigError(f"{named} must be one of {', '.join(map(str, opt.choices))}; "
                          f"received: {value!r}{where}")
    for number in (value if isinstance(value, (list, tuple)) else (value,)):
        problem = _out_of_range(opt, number)
        if problem:
            each = "each value of " if isinstance(value, (list, tuple)) else ""
            raise ConfigError(f"{each}{named} must be {problem}; received: "
                              f"{as_typed(value)}{where}")
    return value


def integral(value: Any) -> Any:
    """`value` as an int when it is a whole number (2, 2.0, "2"); a float with a fraction (2.9)
    or a non-finite one raises ValueError instead of being truncated."""
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        if not math.isfinite(value) or value != int(value):
            raise ValueError
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise TypeError


def _kind(opt: Option) -> str:
    if opt.type is int:
        return "a whole number"
    if opt.type is float:
        return "a number"
    return opt.type.__name__


def _out_of_range(opt: Option, value: Any) -> str:
    """What is wrong with one number (empty when it is fine or is not a number)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return ""
    if math.isnan(value) or (math.isinf(value) and not opt.allow_inf):
        return "a finite number" + (f", {_range_text(opt)}" if _range_text(opt) else "")
    low, high = opt.minimum, opt.maximum
    if (low is not None and (value < low or (opt.open_minimum and value == low))) or \
            (high is not None and (value > high or (opt.open_maximum and value == high))):
        return _range_text(opt)
    return ""


def _range_text(opt: Option) -> str:
    low, high = (None if v is None else f"{v:g}" for v in (opt.minimum, opt.maximum))
    if low is not None and high is not None:
        return (f"in {'(' if opt.open_minimum else '['}{low}, {high}"
                f"{')' if opt.open_maximum else ']'}")
    if low is not None:
        return f"{'above' if opt.open_minimum else 'at least'} {low}"
    if high is not None:
        return f"{'below' if opt.open_maximum else 'at most'} {high}"
    return ""


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


# --- Environment variables: every one the tool reads, checked when it is read ---

# The backends Keras 3 can import (it raises a ValueError on import for any other name).
KERAS_BACKENDS = ("tensorflow", "jax", "torch", "numpy", "openvino")
ENVIRONMENT = {opt.name: opt for opt in (
    Option("PIPELINE_HUB_DOWNLOAD_SECONDS", float, 120.0, "seconds a KerasHub preset's "
           "download or read may take", minimum=0, open_minimum=True),
    Option("PIPELINE_JOURNAL_ROWS", int, 256, "finished samples extract journals at a time",
           minimum=1),
    Option("PIPELINE_CPU_FLAGS", str, None, "space-separated CPU flags read instead of "
           "/proc/cpuinfo's (set, even empty, they win): which units --precision auto sees"),
    Option("KERAS_BACKEND", str, None, "the backend Keras loads", choices=KERAS_BACKENDS),
    Option("KERAS_HOME", str, None, "Keras' folder: keras.json and downloaded weights"),
    Option("CUDA_VISIBLE_DEVICES", str, None, "'' or -1: no GPU"),
    Option("RAY_ADDRESS", str, None, "the Ray cluster to join"),
    Option("DASK_SCHEDULER_ADDRESS", str, None, "the Dask scheduler to join"),
)}


def environment_value(name: str) -> Any:
    """The value of one of the `ENVIRONMENT` variables (its default when unset).

    Raises:
        ConfigError: the value is not of the variable's type, range or choices.
    """
    opt, text = ENVIRONMENT[name], os.environ.get(name)
    if text is None:
        return opt.default
    try:
        return _coerce(opt, text, "the environment")
    except ConfigError as exc:
        raise ConfigError(f"{exc}; set the variable so, or unset it") from None


def keras_home() -> Path:
    """Where Keras keeps keras.json and its downloads (as Keras itself decides it)."""
    home = environment_value("KERAS_HOME")
    if home is None:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    return Path(home).expanduser()


def check_keras_environment() -> None:
    """What Keras reads when it is imported, checked before it is: KERAS_BACKEND, and
    keras.json (a FIFO there would hang the import, a bad backend name stops it)."""
    if "keras" in sys.modules:
        return
    backend = environment_value("KERAS_BACKEND")
    settings = keras_home() / "keras.json"
    require_regular_file(settings, "keras.json (from KERAS_HOME)", fix="remove it, or set "
                         "KERAS_HOME to a folder whose keras.json is a regular file")
    if backend is None and settings.is_file():
        try:
            backend = json.loads(settings.read_text(encoding="utf-8")).get("backend")
        except (OSError, ValueError, AttributeError):
            return  # Keras ignores a keras.json it cannot read
        if backend is not None and backend not in KERAS_BACKENDS:
            raise ConfigError(f"{settings} names the Keras backend {backend!r:.40}, which Keras "
                              f"cannot load; set \"backend\" there to one of "
                              f"{', '.join(KERAS_BACKENDS)}")
