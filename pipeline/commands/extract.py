"""`run_pipeline.py extract`: stage one, files -> frozen backbone -> HDF5 feature store."""

from __future__ import annotations

from pipeline.config import add_options, resolve_options
from pipeline.extract.options import EXTRACT_OPTIONS

HELP = "run the frozen backbone once over a folder or CSV manifest and cache the vectors in HDF5"


def add_arguments(parser) -> None:
    add_options(parser, EXTRACT_OPTIONS)


def run(args) -> str:
    from pipeline.errors import ConfigError, DataError
    from pipeline.extract.run import run_extraction

    opts = resolve_options(args, EXTRACT_OPTIONS, section="extract")
    if not opts["data"]:
        raise ConfigError("extract needs --data DIR_OR_CSV (or data = \"...\" in the config file)")
    _store_paths_absolute(opts)
    _choose_backend_before_keras_loads(opts)
    result = run_extraction(opts, progress=opts["progress"])
    print(result.summary())
    if result.n_samples and not result.n_rows:  # the store is kept: it records every failure
        raise DataError(f"none of the {result.n_samples} file(s) could be decoded, so the store "
                        f"holds no vectors; `run_pipeline.py info {result.path}` lists each "
                        "file's reason. Fix or replace the files and run extract again.")
    return str(result.path)


def _store_paths_absolute(opts: dict) -> None:
    """Files named on the command line are recorded absolute in the store's provenance, so
    predict and export find them from any working directory (sha256 and cache key unchanged)."""
    import os

    for key in ("weights", "mean_file"):
        value = opts.get(key)
        if value and value not in ("imagenet", "none") and os.path.exists(value):
            opts[key] = os.path.abspath(os.path.expanduser(value))


def _choose_backend_before_keras_loads(opts: dict) -> None:
    """This process only extracts: run the engine in-process rather than in a worker."""
    import os
    import sys

    from pipeline.extract.engines import resolve_engine

    if "keras" in sys.modules and opts["engine"] == "auto":
        opts["engine"] = "current"  # called in-process (tests, notebooks): no worker for auto
    engine = resolve_engine(opts["engine"], opts["backbone"].lower())
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = engine
    opts["engine"] = engine
