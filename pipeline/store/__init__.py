"""The feature store: the one contract between stage one and stage two.

    from pipeline.store import open_store
    with open_store("cache/photos-resnet50-pooled-1a2b3c4d5e.h5") as store:
        X, y = store.load("train")

`feature_store.py` owns the HDF5 schema, the atomic writer and the read API;
`vector_identity.py` the key of what changes the vectors, which every reuse of a store compares;
`row_index.py` each row's plain row, file, group and views (`store.row_index`).
It imports h5py and numpy only: no Keras, no backbone, no head.
"""

from pipeline.store.feature_store import (
    SCHEMA_VERSION,
    FeatureStore,
    StoreLock,
    StoreWriter,
    cache_key,
    open_store,
    read_feature_rows,
    store_path,
    write_store,
)

__all__ = ["SCHEMA_VERSION", "FeatureStore", "StoreLock", "StoreWriter", "cache_key",
           "open_store", "read_feature_rows", "store_path", "write_store"]
