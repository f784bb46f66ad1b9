"""`run_pipeline.py extract`: stage one, files -> frozen backbone -> HDF5 feature store."""

from __future__ import annotations

from pipeline.config import add_options, resolve_options
from pipeline.extract.options import EXTRACT_OPTIONS

HELP = "run the frozen backbone once over a folder or CSV manifest and cache the vectors in HDF5"


def add_arguments(parser) -> None:
    add_options(parser, EXTRACT_OPTIONS)


def run(args) -> str:
    from pipeline.errors import ConfigError
    from pipeline.extract.run import run_extraction

    opts = resolve_options(args, EXTRACT_OPTIONS, section="extract")
    if not opts["data"]:
        raise ConfigError("extract needs --data DIR_OR_CSV (or data = \"...\" in the config file)")
    _choose_backend_before_keras_loads(opts)
    result = run_extraction(opts, progress=opts["progress"])
    print(result.summary())
    return str(result.path)


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
