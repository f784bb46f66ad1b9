"""Model families, preprocessing steps and the TOML grid format of `grid-search`.

A grid file has one `[models.<name>]` table per competing entry:

    [models.logreg]
    family = "logistic_regression"      # optional; defaults to the table name
    preprocess = ["standardize"]        # steps fit inside the pipeline, in this order
    [models.logreg.params]
    C = [0.01, 0.1, 1.0]                # a list = values to try; a scalar = fixed
    pca__n_components = [32, 64]        # `<step>__<param>` reaches a preprocessing step

Every entry becomes one scikit-learn `Pipeline(steps..., ("clf", estimator))`; because the
steps live inside the pipeline they are fit on each training fold only.

Usage:
    entries = load_grid("configs/search_default.toml")
    pipe = entries[0].build(n_samples=1000, n_features=512, seed=0)
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pipeline.errors import ConfigError
from pipeline.outputs import require_regular_file, special_kind

DEFAULT_GRID = Path(__file__).resolve().parents[2] / "configs" / "search_default.toml"


# -- preprocessing steps: name -> factory(n_samples, n_features, seed) ---------------------------
def _standardize(n, d, seed):
    from sklearn.preprocessing import StandardScaler
    return StandardScaler()


def _l2_normalize(n, d, seed):
    from sklearn.preprocessing import Normalizer
    return Normalizer(norm="l2")


def _pca(n, d, seed):
    from sklearn.decomposition import PCA
    return PCA(n_components=min(PCA_COMPONENTS, n, d), random_state=seed)


PCA_COMPONENTS = 64


PREPROCESSORS: dict[str, Callable] = {
    "standardize": _standardize,
    "l2_normalize": _l2_normalize,
    "pca": _pca,
}


# -- families: name -> factory(n_samples, n_features, seed) ------------------------------------
def _logistic_regression(n, d, seed):
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression(max_iter=2000, random_state=seed)


def _linear_svm(n, d, seed):
    from sklearn.svm import LinearSVC
    # The dual problem is the cheap one when features outnumber samples, the primal otherwise;
    # picking the wrong one is what makes liblinear stop at max_iter without converging.
    return LinearSVC(dual=bool(n <= d), max_iter=5000, random_state=seed)


def _rbf_svm(n, d, seed):
    from sklearn.svm import SVC
    return SVC(kernel="rbf", gamma="scale", cache_size=500, random_state=seed)


def _knn(n, d, seed):
    from sklearn.neighbors import KNeighborsClassifier
    return KNeighborsClassifier(n_jobs=1)


def _random_forest(n, d, seed):
    from sklearn.ensemble import RandomForestClassifier
    return RandomForestClassifier(n_estimators=200, n_jobs=1, random_state=seed)


def _hist_gradient_boosting(n, d, seed):
    from sklearn.ensemble import HistGradientBoostingClassifier
    return HistGradientBoostingClassifier(early_stopping=True, random_state=seed)


def _keras_head(n, d, seed):
    from pipeline.search.keras_estimator import KerasHeadClassifier  # lazy: scikit-learn
    return KerasHeadClassifier(seed=seed)


FAMILIES: dict[str, Callable] = {
    "logistic_regression": _logistic_regression,
    "linear_svm": _linear_svm,
    "rbf_svm": _rbf_svm,
    "knn": _knn,
    "random_forest": _random_forest,
    "hist_gradient_boosting": _hist_gradient_boosting,
    "keras_head": _keras_head,
}
LINEAR_FAMILIES = ("logistic_regression", "linear_svm")


def register_family(name: str, factory: Callable, *, overwrite: bool = False) -> Callable:
    """Makes `family = "<name>"` usable in a grid: `factory(n_samples, n_features, seed)`
    returns an unfitted scikit-learn classifier (with `predict_proba` for the leaderboard's
    log loss). Call it from a plugin module (`grid-search --plugin MODULE`)."""
    if name in FAMILIES and not overwrite:
        raise ValueError(f"classifier family '{name}' is already registered")
    FAMILIES[name] = factory
    return factory


@dataclass
class GridEntry:
    """One `[models.<name>]` table: a family, its preprocessing and its parameter grid."""

    name: str
    family: str
    preprocess: list = field(default_factory=list)
    params: dict = field(default_factory=dict)  # pipeline param name -> list of values

    def build(self, n_samples: int, n_features: int, seed: int = 0):
        """An unfitted `Pipeline` (preprocessing steps, then `clf`)."""
        from sklearn.pipeline import Pipeline

        steps = [(step, PREPROCESSORS[step](n_samples, n_features, seed))
                 for step in self.preprocess]
        steps.append(("clf", FAMILIES[self.family](n_samples, n_features, seed)))
        return Pipeline(steps)

    def candidates(self, n_samples: int | None = None, n_features: int | None = None) -> list:
        """Every parameter combination of the grid, in a stable order.

        With the data's shape, PCA sizes larger than the data allows are lowered to the
        largest possible one (and duplicates dropped), so a default grid fits small stores.
        """
        from sklearn.model_selection import ParameterGrid

        combos = list(ParameterGrid(self.params)) if self.params else [{}]
        if n_samples is None or n_features is None:
            return combos
        out = []
        for params in combos:
            k = params.get("pca__n_components")
            if isinstance(k, int) and k > min(n_samples, n_features):
                params = {**params, "pca__n_components": min(n_samples, n_features)}
            if params not in out:
                out.append(params)
        return out


def parse_grid(doc: dict, source: str = "grid") -> list[GridEntry]:
    """Turns a parsed TOML document into grid entries, validating names and shapes.

    Args:
        doc: the TOML document (a dict with a `models` table).
        source: file name used in error messages.

    Returns:
        One `GridEntry` per `[models.<name>]` table, in file order.

    Raises:
        ConfigError: no models, unknown family or step, or a malformed table.
    """
    models = doc.get("models")
    if not isinstance(models, dict) or not models:
        raise ConfigError(f"{source} has no [models.<name>] tables; see "
                          f"configs/search_default.toml for the format.")
    entries = []
    for name, table in models.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: models.{name} must be a table; received: {table!r}")
        unknown = sorted(set(table) - {"family", "preprocess", "params"})
        if unknown:
            raise ConfigError(f"{source}: models.{name} has unknown key(s) {', '.join(unknown)}; "
                              "valid keys: family, preprocess, params")
        family = table.get("family", name)
        if family not in FAMILIES:
            raise ConfigError(f"{source}: models.{name} has unknown family {family!r}; valid "
                              f"families: {', '.join(FAMILIES)}")
        preprocess = table.get("preprocess", [])
        if isinstance(preprocess, str):
            preprocess = [preprocess]
        bad = [p for p in preprocess if p not in PREPROCESSORS]
        if bad or len(set(preprocess)) != len(preprocess):
            raise ConfigError(f"{source}: models.{name} preprocess {preprocess!r} must list "
                              f"distinct steps out of: {', '.join(PREPROCESSORS)}")
        raw = table.get("params", {})
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: models.{name}.params must be a table of "
                              f"name = [values]; received: {raw!r}")
        params = {}
        for key, values in raw.items():
            target = key if "__" in key else f"clf__{key}"
            values = values if isinstance(values, list) else [values]
            if not values:
                raise ConfigError(f"{source}: models.{name}.params.{key} is an empty list; "
                                  "give at least one value.")
            params[target] = values
        entries.append(GridEntry(name, family, list(preprocess), params))
    return entries


def load_grid(path: str | Path | None = None) -> list[GridEntry]:
    """Reads a grid TOML file (None: the default grid shipped in configs/).

    Raises:
        ConfigError: the file is missing, not TOML, or not a valid grid.
    """
    path = Path(path) if path else DEFAULT_GRID
    require_regular_file(path, "grid file", fix="pass a TOML file saved on disk with --grid.")
    if not path.is_file():
        raise ConfigError(f"grid file not found: {path}. Pass an existing TOML file with --grid "
                          f"(the default is {DEFAULT_GRID}).")
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"grid file {path} is not valid TOML: {exc}") from None
    return parse_grid(doc, source=str(path))


def has_models_table(path: str | Path) -> bool:
    """True when a TOML file carries `[models.*]` tables (a config that is also a grid)."""
    if special_kind(path):
        return False
    try:
        with Path(path).open("rb") as fh:
            return isinstance(tomllib.load(fh).get("models"), dict)
    except (OSError, tomllib.TOMLDecodeError):
        return False


def check_candidates(entries: list[GridEntry], n_samples: int, n_features: int,
                     seed: int = 0) -> None:
    """Applies every candidate's parameters to a fresh pipeline before any work starts.

    Raises:
        ConfigError: naming the table and the parameter scikit-learn refused.
    """
    for entry in entries:
        pipe = entry.build(n_samples, n_features, seed)
        valid = set(pipe.get_params(deep=True))
        for key in entry.params:
            if key not in valid:
                step, _, param = key.partition("__")
                where = "the classifier" if step == "clf" else f"step {step!r}"
                raise ConfigError(
                    f"models.{entry.name}: {where} has no parameter {param!r}; valid: "
                    + ", ".join(sorted(k.split("__", 1)[1] for k in valid
                                       if k.startswith(step + "__") and k.count("__") == 1)))
