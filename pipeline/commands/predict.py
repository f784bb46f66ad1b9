"""`run_pipeline.py predict`: raw images or clips -> backbone -> head -> CSV of probabilities."""

from __future__ import annotations

from pipeline.config import add_options, resolve_options
from pipeline.deploy.options import PREDICT_OPTIONS

HELP = "score new images or clips with a run folder's model; writes a CSV of class probabilities"


def add_arguments(parser) -> None:
    add_options(parser, PREDICT_OPTIONS)


def run(args) -> str:
    from pipeline.errors import ConfigError
    from pipeline.deploy.prediction import predict

    opts = resolve_options(args, PREDICT_OPTIONS, section="predict")
    if not opts["run_dir"] or not opts["data"]:
        raise ConfigError("predict needs --run RUN_DIR and --data PATH")
    return str(predict(opts["run_dir"], opts["data"], opts))
