"""One head trained with early stopping, and its probabilities on any rows of the store.

Shared by the train/val fit and by each cross-validation fold (`cross_validation.py`).

Usage:
    model, history, best_epoch = train_head(store, source, train_rows, stop_rows, config, opts, print)
    ids, y, accuracy, probs = probabilities(model, store, source, val_rows)
"""

from __future__ import annotations

import numpy as np

from pipeline.fit.heads import HeadConfig, balanced_class_weight


def should_stream(store, n_rows: int, opts: dict) -> bool:
    """Whether `n_rows` vectors are read in batches from the store rather than held in memory."""
    from pipeline.fit.head_data import vector_bytes

    if opts["stream"] != "auto":
        return opts["stream"] == "always"
    return vector_bytes(store, n_rows) > opts["memory_limit_mb"] * (1 << 20)


def train_head(store, source, train_rows, stop_rows, config: HeadConfig, opts: dict, echo,
               prefix: str = ""):
    """Builds a fresh head and fits it; `stop_rows` alone drive early stopping and LR decay.

    Returns:
        (model with the best epoch's weights, Keras history dict, best epoch, 1-based).
    """
    import keras

    from pipeline.fit import head_data
    from pipeline.fit.heads import build_head, feature_moments

    stats = None
    if config.standardize:  # training rows only: validation statistics must not leak in
        stats = feature_moments(
            (x for x, _ in store.iter_batches(rows=np.sort(train_rows), batch_size=4096))
            if source is None else [source.get(train_rows)])
    model = build_head(store.feature_shape, len(store.class_names), config, stats)
    sigmoid = model.output.shape[-1] == 1
    labels = store.column("labels")
    weights = balanced_class_weight(labels[train_rows], len(store.class_names)) \
        if config.class_weight == "balanced" else None
    if source is None:
        train = head_data.StoreBatches(store, train_rows, config.batch_size, True, config.seed,
                                       sigmoid)
        stop = head_data.StoreBatches(store, stop_rows, 1024, False, sigmoid=sigmoid)
        fit_kw = {"x": train, "validation_data": stop}
    else:
        fit_kw = {"x": source.get(train_rows),
                  "y": head_data.targets(labels[train_rows], sigmoid),
                  "validation_data": (source.get(stop_rows),
                                      head_data.targets(labels[stop_rows], sigmoid)),
                  "batch_size": config.batch_size, "shuffle": True}
    # min_delta: a val_loss that creeps down by 1e-4 an epoch is not worth another 10 epochs.
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                            min_delta=opts.get("min_delta", 0.0),
                                            restore_best_weights=True)
    callbacks = [
        stopper,
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, min_lr=1e-6,
                                          patience=max(2, config.patience // 3)),
    ]
    if opts.get("progress", True):
        callbacks.append(_EpochLine(echo, config.epochs, prefix))
    history = model.fit(epochs=config.epochs, class_weight=weights, callbacks=callbacks,
                        verbose=0, **fit_kw).history
    # The epoch whose weights were restored: the last one that beat the best by min_delta
    # (a later epoch may still have a lower val_loss by less than that).
    best_epoch = int(stopper.best_epoch) + 1
    return model, history, best_epoch


def probabilities(model, store, source, rows):
    """(ids, labels, accuracy, probs) of `rows` in ascending order, probs as (n, K) float64."""
    from pipeline.fit import head_data
    from pipeline.fit.heads import predict_proba

    rows = np.sort(rows)
    if source is None:
        feed = head_data.StoreBatches(store, rows, 1024, False)
        raw = np.asarray(model.predict(feed, verbose=0), dtype=np.float64)  # one traced loop
        probs = np.concatenate([1.0 - raw, raw], axis=1) if raw.shape[1] == 1 else raw
    else:
        probs = predict_proba(model, source.get(rows))
    y = store.column("labels")[rows]
    return store.column("ids")[rows], y, float(np.mean(probs.argmax(1) == y)), probs


class _EpochLine:
    """A Keras callback printing one compact line per epoch through `echo`."""

    def __new__(cls, echo, epochs, prefix):
        import keras

        class EpochLine(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
                echo(f"{prefix}epoch {epoch + 1}/{epochs}  loss {logs.get('loss', 0):.4f}  "
                     f"acc {logs.get('accuracy', 0):.4f}  val_loss {logs.get('val_loss', 0):.4f}"
                     f"  val_acc {logs.get('val_accuracy', 0):.4f}  lr {lr:.2g}")

        return EpochLine()
