"""Vectors in and out of the store: `import` makes a store from vectors made elsewhere
(vector_import.py, reading the files of vector_files.py), `vectors` writes a store's vectors and
rows for pandas, DuckDB or numpy (vector_export.py). Options: options.py."""
