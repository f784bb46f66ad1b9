"""`run_pipeline.py extract`: stage one, files -> frozen backbone -> HDF5 feature store."""

from __future__ import annotations

import os
import sys

from pipeline.config import add_options
from pipeline.extract.options import EXTRACT_OPTIONS, ExtractConfig
from pipeline.errors import ConfigError, DataError
from pipeline.outputs import check_writable_folder
from pipeline.extract.engines import choose_engine
from pipeline.plugins import load_plugins

HELP = "run the frozen backbone once over a folder or CSV manifest and cache the vectors in HDF5"


def add_arguments(parser) -> None:
    add_options(parser, EXTRACT_OPTIONS)


def run(args) -> str:
    from pipeline.extract.run import run_extraction  # lazy: h5py; the CLI starts without it

    config = ExtractConfig.from_cli(args)
    if not config.data:
        raise ConfigError("extract needs --data DIR_OR_CSV (or data = \"...\" in the config file)")
    # Before any work: a file is refused; a read-only cache may still serve a cache hit.
    check_writable_folder(config.cache_dir or "cache", "--cache-dir", writable=False)
    config = _choose_backend_before_keras_loads(_store_paths_absolute(config))
    result = run_extraction(config)
    print(result.summary())
    if result.n_samples and not result.n_rows:  # the store is kept: it records every failure
        raise DataError(f"none of the {result.n_samples} file(s) could be decoded, so the store "
                        f"holds no vectors; `run_pipeline.py info {result.path}` lists each "
                        "file's reason. Fix or replace the files and run extract again.")
    return str(result.path)


def _store_paths_absolute(config: ExtractConfig) -> ExtractConfig:
    """Files named on the command line (and a KerasHub preset directory given as the backbone)
    are recorded absolute in the store's provenance, so predict and export find them from any
    working directory (sha256 and cache key unchanged)."""
    changes = {}
    for key in ("weights", "mean_file"):
        value = getattr(config, key)
        if value and value not in ("imagenet", "none") and os.path.exists(value):
            changes[key] = os.path.abspath(os.path.expanduser(value))
    preset = os.path.expanduser(config.backbone or "")
    if preset and os.path.isfile(os.path.join(preset, "config.json")):
        changes["backbone"] = os.path.abspath(preset)
    return config.replace(**changes) if changes else config


def _choose_backend_before_keras_loads(config: ExtractConfig) -> ExtractConfig:
    """This process only extracts: run the engine in-process rather than in a worker."""
    load_plugins(config.plugin)  # a plugin may register the engine
    engine = choose_engine(config)
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = engine.keras_backend
    return config.replace(engine=engine.name)
