"""`run_pipeline.py grid-search`: compare scikit-learn families and the Keras head on one store."""

from __future__ import annotations

from pipeline.config import add_options
from pipeline.search.options import GRID_SEARCH_OPTIONS, SearchConfig
from pipeline.errors import ConfigError

HELP = ("compare classifier families (logistic regression, SVMs, k-NN, forests, boosting, the "
        "Keras head) by cross-validation on a feature store; one leaderboard, best model saved")


def add_arguments(parser) -> None:
    add_options(parser, GRID_SEARCH_OPTIONS)


def run(args) -> str:
    from pipeline.search.run import run_grid_search  # lazy: h5py; the CLI starts without it

    cfg = SearchConfig.from_cli(args)  # a config file with [models.*] tables is also the grid
    if not cfg.store:
        raise ConfigError("grid-search needs --store STORE (or store = \"...\" in the "
                          "[grid_search] table of the config file)")
    return str(run_grid_search(cfg.store, cfg, out_dir=cfg.out))
