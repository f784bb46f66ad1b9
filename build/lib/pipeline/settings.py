"""Typed, frozen settings built from an Option table: one class per command, one way to build it.

Every entry point builds its settings the same way, so a library call with partial options gets
exactly the CLI's defaults and the same validation:

    ExtractConfig.from_cli(args)              # defaults < --config TOML file < flags
    ExtractConfig.from_mapping({"data": d})   # a library call: any subset of keys
    ExtractConfig.from_mapping(config)        # an ExtractConfig passes through unchanged

The fields are generated from the Option table (`pipeline.config.Option`), so a flag, its TOML
key, its default and its attribute can never drift apart. Values are validated once, here;
code that receives a config object reads attributes and never re-applies a default.
Each class also carries `config_file`: the TOML file the values came from, so error messages
can name its keys beside the flags.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from pipeline.config import Option, _coerce, load_config_file
from pipeline.errors import ConfigError


class Settings:
    """Behaviour shared by every generated settings class (see `settings_class`)."""

    OPTIONS: tuple = ()
    SECTION: str = ""
    COMMAND: str = ""

    @classmethod
    def option(cls, name: str) -> Option:
        return {opt.name: opt for opt in cls.OPTIONS}[name]

    @classmethod
    def from_mapping(cls, values: Mapping | "Settings" | None = None, *,
                     config_file: str | None = None):
        """Settings from a library call: unknown keys refused, None means the default.

        A `config` key names a TOML file whose `[SECTION]` is read first (the mapping wins).
        """
        if isinstance(values, cls):
            return values
        if isinstance(values, Settings):
            raise ConfigError(f"{cls.__name__} expected; received a {type(values).__name__}")
        given = dict(values or {})
        config_file = given.pop("config", None) or given.pop("config_file", None) or config_file
        by_name = {opt.name: opt for opt in cls.OPTIONS}
        unknown = sorted(set(given) - set(by_name))
        if unknown:
            raise ConfigError(f"unknown {cls.COMMAND} option(s) {', '.join(unknown)}; valid: "
                              f"{', '.join(sorted(by_name))}")
        resolved = {name: opt.default for name, opt in by_name.items()}
        if config_file:
            resolved.update(cls._from_file(config_file))
        for name, value in given.items():
            if value is not None:
                resolved[name] = _coerce(by_name[name], value, source=f"the {cls.COMMAND} options")
        return cls._checked(resolved, config_file)

    @classmethod
    def from_cli(cls, args, config_file: str | None = None):
        """Settings from argparse: built-in default < the `--config` file < flags given."""
        cli = vars(args) if not isinstance(args, Mapping) else dict(args)
        config_file = config_file or cli.get("config")
        resolved = {opt.name: opt.default for opt in cls.OPTIONS}
        if config_file:
            resolved.update(cls._from_file(config_file))
        for opt in cls.OPTIONS:
            if cli.get(opt.name) is not None:
                resolved[opt.name] = _coerce(opt, cli[opt.name], source="the command line")
        return cls._checked(resolved, config_file)

    @classmethod
    def _from_file(cls, path) -> dict:
        by_name = {opt.name: opt for opt in cls.OPTIONS}
        values = {}
        for key, value in load_config_file(path, cls.SECTION).items():
            key = key.replace("-", "_")
            if key not in by_name:
                raise ConfigError(f"unknown option '{key}' in {path} [{cls.SECTION}]; "
                                  f"valid options: {', '.join(sorted(by_name))}")
            values[key] = _coerce(by_name[key], value, source=str(path))
        return values

    @classmethod
    def _checked(cls, resolved: dict, config_file):
        made = cls(**resolved, config_file=str(config_file) if config_file else None)
        made.validate()
        return made

    def validate(self) -> None:
        """Rules across options (one option's type and range are checked by its Option)."""

    def replace(self, **changes):
        """A copy with `changes`, each validated like a value from a library call."""
        by_name = {opt.name: opt for opt in self.OPTIONS}
        unknown = sorted(set(changes) - set(by_name) - {"config_file"})
        if unknown:
            raise ConfigError(f"unknown {self.COMMAND} option(s) {', '.join(unknown)}")
        coerced = {k: (_coerce(by_name[k], v, source=f"the {self.COMMAND} options")
                       if k in by_name and v is not None else v) for k, v in changes.items()}
        made = dataclasses.replace(self, **coerced)
        made.validate()
        return made

    def as_dict(self) -> dict:
        """The option values (without `config_file`), e.g. for the resolved config TOML."""
        return {opt.name: getattr(self, opt.name) for opt in self.OPTIONS}


def settings_class(name: str, options: Sequence[Option], section: str, command: str,
                   base: type = Settings, doc: str = "") -> type:
    """A frozen dataclass with one field per Option (its default as the field's default)."""
    fields = [(opt.name, Any, dataclasses.field(default=opt.default)) for opt in options]
    fields.append(("config_file", Any, dataclasses.field(default=None)))
    cls = dataclasses.make_dataclass(name, fields, bases=(base,), frozen=True,
                                     namespace={"OPTIONS": tuple(options), "SECTION": section,
                                                "COMMAND": command, "__doc__": doc or None})
    return cls
