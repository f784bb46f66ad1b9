"""`featcache.StoreDataset`: a store's split as a `keras.utils.PyDataset`, for a user's own
Keras model, with the store's plain/view rule: augmented views are served for the training
split only (the rows' views through `store.row_index`), every other split gets its plain rows.

    model.fit(StoreDataset(store, "train", 64), validation_data=StoreDataset(store, "val", 64))
"""

from __future__ import annotations

from pipeline.fit.head_data import StoreBatches


class StoreDataset(StoreBatches):
    """Batches of (vectors, class indices) of one split, streamed from the store.

    Args:
        store: a `featcache.Store` (or the pipeline's open store).
        split: train, val, test, or None for every file.
        batch_size: rows per batch.
        shuffle: reshuffle each epoch [default: for the training split only].
        seed: the shuffling's seed.
        views: serve the training files' augmented views too (a store made with --views).
    Unlabelled rows are left out: there is no target to fit them to.
    """

    def __init__(self, store, split: str | None = "train", batch_size: int = 32,
                 shuffle: bool | None = None, seed: int = 0, views: bool = True):
        features = getattr(store, "features", store)
        rows = features.indices(split)
        if split == "train" and views:
            rows = features.row_index.with_views(rows)
        rows = rows[features.full_column("labels")[rows] >= 0]
        super().__init__(features, rows, batch_size,
                         shuffle=(split == "train") if shuffle is None else shuffle, seed=seed)
