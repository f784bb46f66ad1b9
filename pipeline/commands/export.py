"""`run_pipeline.py export`: one deployable Keras model, raw RGB in, class probabilities out."""

from __future__ import annotations

from pipeline.config import add_options, resolve_options
from pipeline.deploy.options import EXPORT_OPTIONS

HELP = "write one Keras model (preprocessing + frozen backbone + head) serving raw decoded RGB"


def add_arguments(parser) -> None:
    add_options(parser, EXPORT_OPTIONS)


def run(args) -> str:
    from pipeline.errors import ConfigError
    from pipeline.deploy.export import export_model

    opts = resolve_options(args, EXPORT_OPTIONS, section="export")
    if not opts["run_dir"]:
        raise ConfigError("export needs --run RUN_DIR")
    return str(export_model(opts["run_dir"], opts))
