"""`run_pipeline.py predict`: raw images or clips -> backbone -> head -> CSV of probabilities."""

from __future__ import annotations

from pipeline.config import add_options
from pipeline.deploy.options import PREDICT_OPTIONS, PredictConfig
from pipeline.errors import ConfigError

HELP = "score new images or clips with a run folder's model; writes a CSV of class probabilities"


def add_arguments(parser) -> None:
    add_options(parser, PREDICT_OPTIONS)


def run(args) -> str:
    from pipeline.deploy.prediction import predict  # lazy: h5py; the CLI starts without it

    cfg = PredictConfig.from_cli(args)
    if not cfg.run_dir or not cfg.data:
        raise ConfigError("predict needs --run RUN_DIR and --data PATH")
    return str(predict(cfg.run_dir, cfg.data, cfg))
