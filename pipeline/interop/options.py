"""Options of `import` (vectors in) and `vectors` (vectors out)."""

from __future__ import annotations

from pipeline.config import Option
from pipeline.settings import settings_class

# The columns a Parquet file or CSV table holds, named as `vectors --format parquet` writes them;
# flags name other columns.
COLUMN_OPTIONS = (
    Option("id_column", str, "id", "column of each row's id (unique)", metavar="NAME"),
    Option("vector_column", str, "vector", "Parquet column of the vectors (a list or "
           "fixed-size list of numbers per row)", metavar="NAME"),
    Option("label_column", str, "label", "column of each row's class name (blank: unlabelled)",
           metavar="NAME"),
    Option("split_column", str, "split", "column of each row's split: train, val, test or "
           "blank (optional)", metavar="NAME"),
    Option("group_column", str, "group", "column of each row's group: rows of one video, "
           "subject or source stay on one side of every split (optional)", metavar="NAME"),
)

IMPORT_OPTIONS = (
    Option("vectors", str, None, "the vectors: .npy, .npz, .parquet, or HDF5 (.h5, .hdf5) with "
           "--dataset", metavar="FILE"),
    Option("table", str, None, "CSV of id,label[,split][,group], one line per vector in the "
           "vectors' order (needed for .npy, .npz and HDF5; a Parquet file holds its own "
           "columns)", metavar="CSV"),
    Option("dataset", str, None, "the dataset holding the vectors in an HDF5 file, or the "
           "array's name in an .npz holding several", metavar="PATH"),
    Option("name", str, None, "a name for these vectors (what made them); with the files' "
           "content it is the store's identity, and it starts the store's file name",
           metavar="NAME"),
    Option("cache_dir", str, "cache", "folder of the feature stores", metavar="DIR"),
    *COLUMN_OPTIONS,
)

VECTOR_FORMATS = ("parquet", "npy")

VECTORS_OPTIONS = (
    Option("store", str, None, "feature store (.h5) to read", metavar="STORE"),
    Option("format", str, "parquet", "parquet: one file with id, label, class, split, group "
           "(and view) beside each vector; npy: the vectors as an array, their rows in a CSV "
           "beside it (the CSV `import --table` reads)", choices=VECTOR_FORMATS),
    Option("out", str, None, "the file to write; an existing file is not replaced [default: "
           "STORE without .h5 + .vectors.parquet or .vectors.npy]", metavar="FILE"),
)

ImportConfig = settings_class("ImportConfig", IMPORT_OPTIONS, "import", "import",
                              doc="Settings of `import`.")
VectorsConfig = settings_class("VectorsConfig", VECTORS_OPTIONS, "vectors", "vectors",
                               doc="Settings of `vectors`.")
