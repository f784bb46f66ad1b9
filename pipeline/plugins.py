"""Plugins: the user's modules that register backbones, readers or engines.

    python run_pipeline.py extract --data clips/ --backbone my_net --plugin my_pkg.backbones
    python run_pipeline.py predict --run RUN --data new/ --plugin my_pkg.backbones

A plugin is an importable module that, when imported, calls `register_backbone` (or
`register_reader`, `register_engine`). It is named with `--plugin MODULE[,MODULE]` (the TOML key
`plugin = ["..."]`), or installed as an entry point of the `featcache.plugins` group (loaded by
every run). The engine worker process and the Ray actors import the same plugins before they
build the backbone, so a registration made in the user's process is seen everywhere.

The plugins named are recorded with the store's extract options, but a store or run folder
only names them: predict and export import a module only when the user names it too (or has
installed it as an entry point), since a shared run folder must not choose code to run.
"""

from __future__ import annotations

import argparse
import importlib
import re
import traceback
from importlib import metadata

from pipeline.errors import ConfigError, PipelineError

ENTRY_POINT_GROUP = "featcache.plugins"
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
# Modules imported by load_plugins in this process: named plugins and entry points' modules.
_LOADED: set = set()


class ModuleNameError(argparse.ArgumentTypeError, ValueError):
    """Not a module name: argparse says this message, a TOML file's check the type's name."""


def plugin_names(value) -> tuple:
    """`a,b` / ["a", "b"] / None -> ("a", "b"): the type of the `plugin` option."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    names = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(item)
        name = item.strip()
        if name and not _MODULE_NAME.fullmatch(name):  # `.relative`, a path, `a-b`
            raise ModuleNameError(f"{name!r} is not a module name; name each plugin as Python "
                                  "imports it (my_pkg.backbones), not as a path or a relative "
                                  "name")
        if name and name not in names:
            names.append(name)
    return tuple(names)


plugin_names.__name__ = ("an absolute module name (my_pkg.backbones) or a comma-separated list "
                         "of them")  # for ConfigError


def load_plugins(names=()) -> list[str]:
    """Imports each named module once, then the `featcache.plugins` entry points.

    Returns:
        The names of the modules and entry points imported by this call.

    Raises:
        ConfigError: a named module or an entry point cannot be imported, or fails while it is
            imported (the message says which module and why, in one line).
    """
    loaded = []
    for name in plugin_names(names):
        if name in _LOADED:
            continue
        _import(name, f"plugin module '{name}'", lambda: importlib.import_module(name))
        _LOADED.add(name)
        loaded.append(name)
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = f"entry point {entry.name}"
        if key not in _LOADED:
            _import(entry.module, f"{ENTRY_POINT_GROUP} {key} ({entry.value})", entry.load)
            _LOADED.update((key, entry.module))
            loaded.append(key)
    return loaded


def check_recorded_plugins(names, run_dir, command: str) -> None:
    """Refuses the plugins a run folder's store was extracted with (`names`) unless this
    process loaded them at the user's request (`--plugin`, an entry point); imports nothing.

    Raises:
        ConfigError: naming the plugins to pass with --plugin.
    """
    try:
        recorded = plugin_names(names)
    except (TypeError, ValueError):  # an edited run.json: refused, never imported
        raise ConfigError(f"the run {run_dir} records plugins {names!r:.80}, which are not "
                          "module names; its run.json was edited, so run fit-head or "
                          "grid-search again") from None
    missing = [name for name in recorded if name not in _LOADED]
    if missing:
        listed = ",".join(missing)
        raise ConfigError(
            f"the run {run_dir} was extracted with plugin module(s) {listed}, and {command} "
            "never imports code a run folder names; if you trust that code, pass --plugin "
            f"{listed} (or install it as a {ENTRY_POINT_GROUP} entry point)")


def _import(name: str, what: str, load) -> None:
    """`load()`, with anything it raises turned into one ConfigError naming `what`."""
    try:
        load()
    except PipelineError:
        raise  # the plugin's own registration was refused: already one line
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            raise ConfigError(f"cannot import {what}: no module '{missing}' is on PYTHONPATH or "
                              "installed; put its folder on PYTHONPATH or install it, or leave "
                              "out --plugin") from None
        raise ConfigError(f"{what} needs module '{missing or exc}', which is not installed; "
                          f"install it (the package providing '{missing}'), or leave out "
                          "--plugin") from None
    except SyntaxError as exc:
        raise ConfigError(f"{what} has a syntax error ({exc.msg}) at {exc.filename}:{exc.lineno}; "
                          "fix the module or leave out --plugin") from None
    except Exception as exc:  # noqa: BLE001 (whatever a plugin raises: reported in one line)
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        detail = str(exc).strip().splitlines()
        raise ConfigError(f"{what} raised {type(exc).__name__} while it was imported "
                          f"({detail[0][:160] if detail else 'no detail'}) at "
                          f"{frame.filename}:{frame.lineno}; fix the module or leave out "
                          "--plugin") from None
