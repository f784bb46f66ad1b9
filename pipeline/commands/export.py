"""`run_pipeline.py export`: one deployable Keras model, raw RGB in, class probabilities out."""

from __future__ import annotations

from pipeline.config import Option, add_options, resolve_options

HELP = "write one Keras model (preprocessing + frozen backbone + head) serving raw decoded RGB"

EXPORT_OPTIONS = (
    Option("run_dir", str, None, "run folder printed by fit-head (or grid-search)",
           metavar="RUN_DIR", aliases=("--run",)),
    Option("out", str, None, "model file to write [default: RUN_DIR/export/model.keras]",
           metavar="FILE.keras"),
    Option("check", bool, True, "reload the saved model and compare it with the pipeline"),
)


def add_arguments(parser) -> None:
    add_options(parser, EXPORT_OPTIONS)


def run(args) -> str:
    from pipeline.errors import ConfigError
    from pipeline.export import export_model

    opts = resolve_options(args, EXPORT_OPTIONS, section="export")
    if not opts["run_dir"]:
        raise ConfigError("export needs --run RUN_DIR")
    return str(export_model(opts["run_dir"], opts))
