"""`run_pipeline.py grid-search`: compare scikit-learn families and the Keras head on one store."""

from __future__ import annotations

from pipeline.config import add_options, resolve_options
from pipeline.search.options import GRID_SEARCH_OPTIONS

HELP = ("compare classifier families (logistic regression, SVMs, k-NN, forests, boosting, the "
        "Keras head) by cross-validation on a feature store; one leaderboard, best model saved")


def add_arguments(parser) -> None:
    add_options(parser, GRID_SEARCH_OPTIONS)


def run(args) -> str:
    from pipeline.errors import ConfigError
    from pipeline.search.run import run_grid_search
    from pipeline.search.models import has_models_table

    opts = resolve_options(args, GRID_SEARCH_OPTIONS, section="grid_search")
    if not opts["store"]:
        raise ConfigError("grid-search needs --store STORE (or store = \"...\" in the "
                          "[grid_search] table of the config file)")
    config = vars(args).get("config")
    if not opts["grid"] and config and has_models_table(config):
        opts["grid"] = config  # a config file may carry its own [models.*] grid
    # The config file's name lets messages give its keys next to the flags.
    return str(run_grid_search(opts["store"], {**opts, "config": config}, out_dir=opts["out"]))
