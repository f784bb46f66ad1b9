"""`run_pipeline.py import`: a feature store from vectors made elsewhere."""

from __future__ import annotations

from pipeline.config import add_options
from pipeline.interop.options import IMPORT_OPTIONS, ImportConfig

HELP = ("make a feature store from your own vectors (.npy/.npz/HDF5 with a CSV table, or "
        "Parquet) for fit-head, grid-search and audit")


def add_arguments(parser) -> None:
    add_options(parser, IMPORT_OPTIONS)


def run(args) -> str:
    from pipeline.interop.vector_import import import_vectors  # lazy: h5py

    return str(import_vectors(ImportConfig.from_cli(args)))
