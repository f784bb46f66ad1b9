"""`run_pipeline.py vectors`: a store's vectors and rows as Parquet or .npy."""

from __future__ import annotations

from pipeline.config import add_options
from pipeline.interop.options import VECTORS_OPTIONS, VectorsConfig

HELP = ("write a store's vectors with id, label, class, split and group: Parquet (pandas, "
        "DuckDB) or .npy with a CSV table")


def add_arguments(parser) -> None:
    add_options(parser, VECTORS_OPTIONS)


def run(args) -> str:
    from pipeline.interop.vector_export import export_vectors  # lazy: h5py

    return str(export_vectors(VectorsConfig.from_cli(args)))
