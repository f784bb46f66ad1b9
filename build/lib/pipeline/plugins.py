"""Plugins: the user's modules that register backbones, readers or engines.

    python run_pipeline.py extract --data clips/ --backbone my_net --plugin my_pkg.backbones
    load_plugins(["my_pkg.backbones"])        # what predict and export call, from the store

A plugin is an importable module that, when imported, calls `register_backbone` (or
`register_reader`, `register_engine`). It is named with `--plugin MODULE[,MODULE]` (the TOML key
`plugin = ["..."]`), or installed as an entry point of the `featcache.plugins` group (loaded by
every run). The engine worker process and the Ray actors import the same plugins before they
build the backbone, so a registration made in the user's process is seen everywhere; the
plugins named are recorded with the store's extract options, so predict finds them again.
"""

from __future__ import annotations

import importlib
from importlib import metadata

from pipeline.errors import ConfigError

ENTRY_POINT_GROUP = "featcache.plugins"
_LOADED: set = set()


def plugin_names(value) -> tuple:
    """`a,b` / ["a", "b"] / None -> ("a", "b"): the type of the `plugin` option."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    names = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(item)
        if item.strip() and item.strip() not in names:
            names.append(item.strip())
    return tuple(names)


plugin_names.__name__ = "a module name or a comma-separated list of them"  # for ConfigError


def load_plugins(names=()) -> list[str]:
    """Imports each named module once, then the `featcache.plugins` entry points.

    Returns:
        The names of the modules and entry points imported by this call.

    Raises:
        ConfigError: a named module cannot be imported (the message says which and why).
    """
    loaded = []
    for name in plugin_names(names):
        if name in _LOADED:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"cannot import plugin module '{name}' ({exc}); put it on "
                              "PYTHONPATH or install it, or leave out --plugin") from None
        _LOADED.add(name)
        loaded.append(name)
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = f"entry point {entry.name}"
        if key not in _LOADED:
            entry.load()
            _LOADED.add(key)
            loaded.append(key)
    return loaded
