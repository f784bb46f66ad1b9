"""The comparison's options: every `grid-search` flag and `[grid_search]` TOML key."""

from __future__ import annotations

from pipeline.config import Option
from pipeline.plugins import plugin_names
from pipeline.errors import ConfigError
from pipeline.settings import Settings, settings_class
from pipeline.search.models import has_models_table


SCORINGS = ("accuracy", "balanced_accuracy", "f1_macro")

GRID_SEARCH_OPTIONS = (
    Option("store", str, None, "feature store (.h5) made by extract", metavar="STORE"),
    Option("grid", str, None, "TOML grid file with [models.<name>] tables [default: "
           "configs/search_default.toml, or the --config file when it has [models] tables]",
           metavar="FILE"),
    Option("models", str, "", "comma-separated subset of the grid's model tables to run "
           "[default: all]", metavar="NAME,..."),
    Option("cv", int, 5, "cross-validation folds (stratified; group k-fold when the store has "
           "groups)", metavar="K", minimum=2),
    Option("n_jobs", int, -1, "parallel fits through joblib (-1 = all cores)", metavar="N",
           minimum=-1),
    Option("backend", str, "loky", "where the fits run: this machine's processes (loky), or a "
           "Ray or Dask cluster (pip install -r requirements-cluster.txt; see "
           "pipeline/search/backends.py)", choices=("loky", "ray", "dask")),
    Option("time_budget", float, 0.0, "seconds the whole search may take: candidates run "
           "cheapest first and one predicted to end past the budget is not launched; the "
           "skipped ones are listed (0 = no budget)", metavar="SECONDS",
           minimum=0.0),
    Option("scoring", str, "accuracy", "score that ranks the candidates", choices=SCORINGS),
    Option("top_k", int, 3, "how many of the best candidates are refit and scored once on the "
           "test split", metavar="K", minimum=1),
    Option("test_fraction", float, 0.2, "held-out test fraction when the store has no test "
           "split (stratified, group-aware, fixed seed)", metavar="FRACTION",
           minimum=0.0, maximum=1.0, open_maximum=True),
    Option("seed", int, 0, "seed of the folds, the held-out test split and the models",
           minimum=0, maximum=2**32 - 1),
    Option("out", str, "cache/runs", "the folder that receives run folders: each run adds a new, "
           "uniquely named run folder inside it and never replaces anything there (created if "
           "missing)", metavar="DIR"),
    Option("progress", bool, True, "show a progress bar over the fits"),
    Option("train_views", int, None, "augmented views per training file that each fit trains "
           "on, from a store made with extract --views [default: all it holds; 0: none]; "
           "every scored row is a plain view", minimum=0),
    Option("plugin", plugin_names, (), "modules to import first, which register classifier "
           "families (register_family) for the grid (comma separated; also the "
           "featcache.plugins entry points)", metavar="MODULE[,MODULE]"),
    Option("exclude_leaks", bool, False, "drop the test side of each near-duplicate pair that "
           "`audit` found between search and test rows (needs a current audit of the store)"),
    Option("groups_from_audit", bool, False, "group the rows by the audit's suggested groups "
           "(suggested_groups.csv: chains of near-duplicates), so the test split and the folds "
           "never separate them (needs a current audit of the store)"),
    Option("decisions", str, "", "a review's decisions.csv, saved from the audit's report.html: "
           "its rows are dropped, relabelled or grouped for this run (the store is not changed)",
           metavar="FILE"),
    Option("learning_curve", bool, True, "refit the best model on 10, 25, 50 and 100 percent "
           "of the first fold's training rows for learning_curve.csv/png"),
)



class _SearchRules(Settings):
    """grid-search's rules across options, checked wherever its settings are built."""

    def validate(self) -> None:
        # One option's type and range are checked by its Option (pipeline/config.py).
        if self.n_jobs == 0:
            raise ConfigError("n_jobs must be -1 (all cores) or at least 1; received: 0")

    @property
    def grid_file(self):
        """The grid to run: --grid, else the config file when it carries [models.*] tables
        (a config that is also a grid), else None (the default grid)."""
        if self.grid:
            return self.grid
        return self.config_file if self.config_file and has_models_table(self.config_file) \
            else None

    @property
    def model_names(self) -> list[str]:
        """The --models subset, in the order given (empty: every model of the grid)."""
        return [m.strip() for m in self.models.split(",") if m.strip()]


# The typed, frozen settings of `grid-search`, one field per option above (pipeline/settings.py).
SearchConfig = settings_class("SearchConfig", GRID_SEARCH_OPTIONS, section="grid_search",
                              command="grid-search", base=_SearchRules)
