"""`run_pipeline.py grid-search`: compare scikit-learn families and the Keras head on one store."""

from __future__ import annotations

from pipeline.config import Option, add_options, resolve_options

HELP = ("compare classifier families (logistic regression, SVMs, k-NN, forests, boosting, the "
        "Keras head) by cross-validation on a feature store; one leaderboard, best model saved")

SCORINGS = ("accuracy", "balanced_accuracy", "f1_macro")

GRID_SEARCH_OPTIONS = (
    Option("store", str, None, "feature store (.h5) made by extract", metavar="STORE"),
    Option("grid", str, None, "TOML grid file with [models.<name>] tables [default: "
           "configs/search_default.toml, or the --config file when it has [models] tables]",
           metavar="FILE"),
    Option("models", str, "", "comma-separated subset of the grid's model tables to run "
           "[default: all]", metavar="NAME,..."),
    Option("cv", int, 5, "cross-validation folds (stratified; group k-fold when the store has "
           "groups)", metavar="K"),
    Option("n_jobs", int, -1, "parallel fits through joblib (-1 = all cores)", metavar="N"),
    Option("time_budget", float, 0.0, "seconds after which no new candidate is launched; the "
           "skipped ones are listed (0 = no budget)", metavar="SECONDS"),
    Option("scoring", str, "accuracy", "score that ranks the candidates", choices=SCORINGS),
    Option("top_k", int, 3, "how many of the best candidates are refit and scored once on the "
           "test split", metavar="K"),
    Option("test_fraction", float, 0.2, "held-out test fraction when the store has no test "
           "split (stratified, group-aware, fixed seed)", metavar="FRACTION"),
    Option("seed", int, 0, "seed of the folds, the held-out test split and the models"),
    Option("out", str, "cache/runs", "folder of the run folders", metavar="DIR"),
    Option("progress", bool, True, "show a progress bar over the fits"),
)


def add_arguments(parser) -> None:
    add_options(parser, GRID_SEARCH_OPTIONS)


def run(args) -> str:
    from pipeline.errors import ConfigError
    from pipeline.search import run_grid_search
    from pipeline.search_models import has_models_table

    opts = resolve_options(args, GRID_SEARCH_OPTIONS, section="grid_search")
    if not opts["store"]:
        raise ConfigError("grid-search needs --store STORE (or store = \"...\" in the "
                          "[grid_search] table of the config file)")
    config = vars(args).get("config")
    if not opts["grid"] and config and has_models_table(config):
        opts["grid"] = config  # a config file may carry its own [models.*] grid
    return str(run_grid_search(opts["store"], opts, out_dir=opts["out"]))
