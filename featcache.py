"""featcache as a library: the CLI's commands as functions, and the store as arrays, a pandas
table or a Keras dataset.

    import featcache
    store = featcache.import_vectors(vectors="emb.npy", table="rows.csv", name="clip-b32")
    run = featcache.fit_head(store.path, epochs=20)
    with featcache.open_store(store.path) as s:
        X, y = s.load("train")

Each command function takes the command's settings as keyword arguments (the flags' names
with `_` for `-`), or a config object / mapping as its first settings argument, with the CLI's
defaults for the rest; it returns a `Result` whose `path` is what the CLI prints last. Each is
a thin call into the pipeline's own entry point: the CLI and the library cannot differ.

Importing this module loads neither TensorFlow nor h5py: they load when a function needs them.
Guide: docs/library.md; signatures: docs/reference/api.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline import __version__

__all__ = ["Result", "Store", "StoreDataset", "audit", "export", "export_vectors", "extract",
           "fit_head", "grid_search", "import_vectors", "load_model", "open_store", "predict",
           "__version__"]


def _echo(echo):
    """Where progress lines go: nowhere by default (None); `echo=print` shows them."""
    return echo or (lambda *_args: None)


@dataclass(frozen=True)
class Result:
    """What a command made. `path` is the store, run folder, audit folder, CSV or file the
    CLI prints as its last line; a `Result` can be given wherever a path is taken."""

    command: str
    path: Path

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


def _settings(config, options: dict):
    """The options of a call: a config object (with `options` as changes) or a mapping merged
    with them; the entry point fills in the CLI's defaults and validates."""
    if config is None:
        return options
    if hasattr(config, "replace"):  # a settings object, e.g. HeadConfig
        return config.replace(**options) if options else config
    return {**dict(config), **options}


def extract(config=None, /, *, echo=None, **options) -> Result:
    """Runs the backbone over `data` once and caches its vectors (`run_pipeline.py extract`)."""
    from pipeline.extract.run import run_extraction  # lazy: Keras

    made = run_extraction(_settings(config, options), echo=_echo(echo))
    return Result("extract", Path(made.path))


def fit_head(store, config=None, /, *, echo=None, **options) -> Result:
    """Trains a dense Keras head on a store's vectors; the run folder (`fit-head`)."""
    from pipeline.fit.run import fit_head as run_fit_head  # lazy: Keras

    made = run_fit_head(store, _settings(config, options), echo=_echo(echo))
    return Result("fit-head", Path(made))


def grid_search(store, config=None, /, *, echo=None, **options) -> Result:
    """Compares classifier families on a store's vectors; the run folder (`grid-search`)."""
    from pipeline.search.run import run_grid_search  # lazy: scikit-learn

    made = run_grid_search(store, _settings(config, options), echo=_echo(echo))
    return Result("grid-search", Path(made))


def audit(store, config=None, /, *, echo=None, **options) -> Result:
    """Leaks, suspected label errors and outliers of a store; the audit folder (`audit`)."""
    from pipeline.audit.run import run_audit  # lazy: scikit-learn

    made = run_audit(store, _settings(config, options), echo=_echo(echo))
    return Result("audit", Path(made))


def predict(run, data, config=None, /, *, echo=None, **options) -> Result:
    """Scores new files with a run's model; the predictions CSV (`predict`)."""
    from pipeline.deploy.prediction import predict as run_predict  # lazy: Keras

    made = run_predict(run, data, _settings(config, options), echo=_echo(echo))
    return Result("predict", Path(made))


def export(run, config=None, /, *, echo=None, **options) -> Result:
    """Writes a run's model from pixels to probabilities in one format (`export`)."""
    from pipeline.deploy.export import export_model  # lazy: Keras

    made = export_model(run, _settings(config, options), echo=_echo(echo))
    return Result("export", Path(made))


def import_vectors(config=None, /, **options) -> Result:
    """A store from vectors made elsewhere: .npy/.npz/HDF5 with a CSV table, or Parquet
    (`import`)."""
    from pipeline.interop.vector_import import import_vectors as run_import  # lazy: h5py

    return Result("import", Path(run_import(_settings(config, options))))


def export_vectors(store, config=None, /, **options) -> Result:
    """A store's vectors and rows as Parquet or .npy with a CSV table (`vectors`)."""
    from pipeline.interop.vector_export import export_vectors as run_export  # lazy: h5py

    return Result("vectors", Path(run_export(_settings(config, {**options, "store": str(store)}))))


def load_model(run):
    """A run folder's model (fit-head or grid-search): `.predict_proba(vectors)` gives (n, K)
    probabilities in `.class_names` order, for vectors made like the run's store's."""
    from pipeline.deploy.prediction import load_run  # lazy: Keras

    return load_run(run)


class Store:
    """An open feature store (`open_store`): its rows as arrays or a pandas table.

    Attributes: `path`, `class_names`, `provenance` (how its vectors were made), `splits`,
    `ids` and `groups` (one per file, "" where none), and `features` (the open store the
    pipeline itself reads, for `StoreDataset`).
    """

    def __init__(self, path):
        from pipeline.store.feature_store import open_store as open_feature_store  # lazy: h5py

        self.features = open_feature_store(path)
        self.path = self.features.path
        self.class_names = list(self.features.class_names)
        self.provenance = self.features.provenance

    def __len__(self) -> int:
        return len(self.features)

    @property
    def splits(self) -> list:
        """The splits present, in train/val/test order."""
        return self.features.splits

    @property
    def ids(self):
        """Each file's id."""
        return self.features.column("ids")

    @property
    def groups(self):
        """Each file's group ("" where none)."""
        return self.features.column("group")

    def load(self, split: str | None = None):
        """(X, y) of one split (None: every file): float32 vectors and class indices (-1:
        unlabelled), one row per file."""
        return self.features.load(split)

    def to_pandas(self):
        """One row per stored vector: id, label, class, split, group (view in a store of
        views) and vector, the columns `export_vectors` writes."""
        import numpy as np
        import pandas as pd  # lazy: pandas is heavy

        from pipeline.interop.vector_export import row_columns  # lazy: h5py

        frame = pd.DataFrame(row_columns(self.features))
        vectors = self.features.read_rows(np.arange(len(frame)))
        frame["vector"] = list(vectors.reshape(len(frame), -1))
        return frame

    def close(self) -> None:
        """Closes the store's file (a `with` block does it on leaving)."""
        self.features.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_store(path) -> Store:
    """Opens a store (a path, or a `Result` of extract or import_vectors) for reading."""
    return Store(path)


def __getattr__(name: str):
    # StoreDataset subclasses keras.utils.PyDataset: Keras loads only when it is asked for.
    if name == "StoreDataset":
        from pipeline.interop.keras_dataset import StoreDataset

        return StoreDataset
    raise AttributeError(f"module 'featcache' has no attribute {name!r}")
