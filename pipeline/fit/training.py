"""The one head trainer: fit-head, its cross-validation folds, its learning curve and the
grid-search Keras estimator all train through `fit_model`, so they share one set of defaults
(`HeadConfig`) and one early stopping (val_loss better by `min_delta`, `patience` epochs,
learning rate halved on plateaus, the best epoch's weights kept).

`HeadTrainer` keeps one compiled head per run and resets it between trainings (initial
weights, optimizer state, learning rate): the learning curve's heads reuse its traced training
step instead of tracing a new one each (which TensorFlow reports as retracing).

Usage:
    trainer = HeadTrainer(store, source, config, stats_rows=train_rows, echo=print)
    model, history, best_epoch = trainer.train(train_rows, stop_rows)
    ids, y, accuracy, probs = probabilities(model, store, source, val_rows)
"""

from __future__ import annotations

import numpy as np

from pipeline.fit import linear
from pipeline.fit.heads import balanced_class_weight, build_head, feature_moments, predict_proba
from pipeline.fit.options import HeadConfig


def should_stream(store, n_rows: int, config: HeadConfig) -> bool:
    """Whether `n_rows` vectors are read in batches from the store rather than held in memory."""
    from pipeline.fit.head_data import vector_bytes  # lazy: loads Keras

    if config.stream != "auto":
        return config.stream == "always"
    return vector_bytes(store, n_rows) > config.memory_limit_mb * (1 << 20)


def fit_model(model, train, stop, config: HeadConfig, class_weight=None, echo=None,
              prefix: str = ""):
    """Trains `model` on `train` (a Keras PyDataset) while `stop` alone drives early stopping
    and the learning-rate decay (`stop` None: every epoch runs, nothing is watched).

    Returns:
        (Keras history dict, best epoch, 1-based: the epoch whose weights were kept).
    """
    import keras

    callbacks, stopper = [], None
    if stop is not None:
        # min_delta: a val_loss that creeps down by 1e-4 an epoch is not worth 10 more epochs.
        stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                                min_delta=config.min_delta,
                                                restore_best_weights=True)
        callbacks = [stopper, keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, min_lr=1e-6, patience=max(2, config.patience // 3))]
    if echo is not None:
        callbacks.append(_EpochLine(echo, config.epochs, prefix))
    # shuffle=False: the batches shuffle themselves with their own seed; Keras would reorder
    # them with Python's global random module.
    history = model.fit(train, validation_data=stop, epochs=config.epochs, shuffle=False,
                        class_weight=class_weight, callbacks=callbacks, verbose=0).history
    # The epoch whose weights were restored: the last one that beat the best by min_delta
    # (a later epoch may still have a lower val_loss by less than that).
    best = int(stopper.best_epoch) + 1 if stopper is not None and \
        stopper.best_weights is not None else len(history.get("loss", []))
    return history, best


def reset_model(model, initial_weights, learning_rate: float) -> None:
    """Back to the freshly built head: its initial weights, a blank optimizer, the first LR."""
    import keras

    model.set_weights(initial_weights)
    for variable in model.optimizer.variables:
        variable.assign(keras.ops.zeros(variable.shape, dtype=variable.dtype))
    model.optimizer.learning_rate = learning_rate


class HeadTrainer:
    """Trains heads of one shape on rows of one store, reusing one compiled model.

    Args:
        store, source: the open store and its in-memory vectors (None = streamed).
        config: the run's settings.
        stats_rows: rows whose feature moments the head's Normalization layer holds
            (the training rows: validation statistics must not leak in).
        echo: where epoch lines go (when `config.progress`).
    """

    def __init__(self, store, source, config: HeadConfig, stats_rows, echo):
        config = config.fixed()  # unset head options: FIXED_HEAD
        self.store, self.source, self.config, self.echo = store, source, config, echo
        stats = None
        if config.standardize:
            stats = feature_moments(
                (x for x, _ in store.iter_batches(rows=np.sort(stats_rows), batch_size=4096))
                if source is None else [source.get(stats_rows)])
        self.model = build_head(store.feature_shape, len(store.class_names), config, stats)
        self.initial = self.model.get_weights()
        self.trained = False
        self.sigmoid = self.model.output.shape[-1] == 1
        self.labels = store.full_column("labels")  # view rows train too

    def train(self, train_rows, stop_rows, prefix: str = "", progress: bool | None = None):
        """A fresh training of the head; returns (model, history, best epoch)."""
        from pipeline.fit import head_data  # lazy: loads Keras

        config = self.config
        if self.trained:
            reset_model(self.model, self.initial, config.learning_rate)
        self.trained = True
        weights = balanced_class_weight(self.labels[train_rows], len(self.store.class_names)) \
            if config.class_weight == "balanced" else None
        if self.source is None:
            train = head_data.StoreBatches(self.store, train_rows, config.batch_size, True,
                                           config.seed, self.sigmoid)
            stop = head_data.StoreBatches(self.store, stop_rows, 1024, False,
                                          sigmoid=self.sigmoid)
        else:
            def batches(rows, size, shuffle):
                return head_data.ArrayBatches(
                    self.source.get(rows), head_data.targets(self.labels[rows], self.sigmoid),
                    size, shuffle, config.seed)
            train, stop = batches(train_rows, config.batch_size, True), \
                batches(stop_rows, 1024, False)
        show = config.progress if progress is None else progress
        history, best = fit_model(self.model, train, stop, config, weights,
                                  self.echo if show else None, prefix)
        return self.model, history, best


def train_head(store, source, train_rows, stop_rows, config: HeadConfig, echo,
               prefix: str = ""):
    """One head built and trained from scratch (a cross-validation fold: its own statistics)."""
    return HeadTrainer(store, source, config, train_rows, echo).train(train_rows, stop_rows,
                                                                      prefix)


def _solved(x, y, n_classes: int, config: HeadConfig, C: float, class_weight=None):
    stats = linear.scaling_stats(x, config.standardize)
    weights = linear.row_weights(y, n_classes, config.class_weight if class_weight is None
                                 else class_weight)
    z = linear.scale(x, stats, config.l2_normalize, config.spatial)
    return stats, z, linear.solve(z, y, n_classes, C, weights)


def solved_head(x: np.ndarray, y: np.ndarray, n_classes: int, config: HeadConfig, C: float,
                feature_shape: tuple, class_weight=None):
    """A linear head (`config`, fixed) whose output layer holds the exact logistic regression
    at inverse penalty C on the rows (x, y), its kernel's L2 set to the matching
    `linear.keras_l2`, so that the saved head describes itself. `class_weight` (one weight
    per class) replaces `config.class_weight`.

    Returns:
        (model, {"C", "l2", "n_rows", "train_accuracy", "train_log_loss"}).
    """
    stats, z, (kernel, bias) = _solved(x, y, n_classes, config, C, class_weight)
    l2 = linear.keras_l2(C, len(y))
    model = build_head(feature_shape, n_classes, config.replace(l2=l2), stats)
    linear.load_into_head(model, kernel, bias)
    # Its optimizer never stepped: build its state, so that loading head.keras finds the
    # variables a trained head's file holds and says nothing about missing ones.
    model.optimizer.build(model.trainable_variables)
    probs = linear.predict(z, kernel, bias)
    picked = np.clip(probs[np.arange(len(y)), y], 1e-15, None)
    return model, {"C": float(C), "l2": l2, "n_rows": int(len(y)),
                   "train_accuracy": float(np.mean(probs.argmax(1) == y)),
                   "train_log_loss": float(-np.mean(np.log(picked)))}


def solved_probabilities(x, y, x_held, n_classes: int, config: HeadConfig, C: float):
    """Probabilities on `x_held` of the linear head `solved_head` would fit on (x, y)."""
    stats, _, solution = _solved(x, y, n_classes, config, C)
    return linear.predict(linear.scale(x_held, stats, config.l2_normalize, config.spatial),
                          *solution)


def probabilities(model, store, source, rows):
    """(ids, labels, accuracy, probs) of `rows` in ascending order, probs as (n, K) float64."""
    from pipeline.fit import head_data  # lazy: loads Keras

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
