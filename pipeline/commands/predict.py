"""`run_pipeline.py predict`: raw images or clips -> backbone -> head -> CSV of probabilities."""

from __future__ import annotations

from pipeline.config import Option, add_options, resolve_options

HELP = "score new images or clips with a run folder's model; writes a CSV of class probabilities"

PREDICT_OPTIONS = (
    Option("run_dir", str, None, "run folder printed by fit-head or grid-search",
           metavar="RUN_DIR", aliases=("--run",)),
    Option("data", str, None, "folder, single file or CSV manifest of new inputs",
           metavar="PATH"),
    Option("out", str, None, "CSV to write [default: RUN_DIR/predictions-<data name>.csv]",
           metavar="CSV"),
    Option("cache_dir", str, "cache", "folder of the feature stores (new vectors are cached "
           "there too)", metavar="DIR"),
    Option("batch_size", int, 32, "images (or clips) per backbone forward pass"),
    Option("workers", int, None, "decoding threads or processes [default: one per core, at most 32]"),
    Option("progress", bool, True, "show a progress bar"),
)


def add_arguments(parser) -> None:
    add_options(parser, PREDICT_OPTIONS)


def run(args) -> str:
    from pipeline.errors import ConfigError
    from pipeline.predict import predict

    opts = resolve_options(args, PREDICT_OPTIONS, section="predict")
    if not opts["run_dir"] or not opts["data"]:
        raise ConfigError("predict needs --run RUN_DIR and --data PATH")
    return str(predict(opts["run_dir"], opts["data"], opts))
