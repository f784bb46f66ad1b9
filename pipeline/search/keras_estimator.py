"""fit-head's dense Keras head (`pipeline/fit/heads.py`) as a scikit-learn classifier.

It lets the head compete in the same grid search as the scikit-learn families: `clone`,
`set_params`, `Pipeline` and cross-validation treat it like any other classifier. It follows
scikit-learn's estimator contract (`__init__` only stores parameters, validation happens in
`fit`, learned attributes end in `_`) and is checked with `sklearn.utils.estimator_checks`
in tests/search/test_search.py. It trains through fit-head's own trainer
(`pipeline.fit.training.fit_model`) with fit-head's defaults and early stopping.

Why not SciKeras: scikeras 0.13.0 fits, clones and runs inside GridSearchCV with Keras 3.15.1,
but fails scikit-learn 1.9.1's estimator checks (tags API of sklearn >= 1.6, mixin order,
no `n_features_in_` check in `predict`, sparse input accepted against its own tag, kwargs set
as attributes in `__init__`). The model itself is built by `heads.build_head`, so the output
layer and loss follow the same rules as fit-head (one sigmoid unit for 2 classes, softmax
for more).

Usage:
    clf = KerasHeadClassifier(hidden_units=(256,), epochs=20).fit(X_train, y_train)
    proba = clf.predict_proba(X_val)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from pipeline.errors import ConfigError, DataError
from pipeline.evaluation.splits import holdout
from pipeline.fit.options import HeadConfig
from pipeline.fit.heads import balanced_class_weight, build_head
from pipeline.fit.training import fit_model


_DEFAULTS = HeadConfig()  # fit-head's defaults are the estimator's: one list of them


class KerasHeadClassifier(ClassifierMixin, BaseEstimator):
    """fit-head's dense Keras head (`HeadConfig`), trained by fit-head's trainer on vectors.

    Every default is fit-head's (pipeline/fit/options.py); the parameters mean the same.

    Args:
        hidden_units: sizes of the hidden Dense layers (an int or a sequence; empty = linear).
        dropout: dropout rate after each hidden layer.
        l2: L2 penalty on the hidden and output kernels.
        batch_norm: batch normalisation after each hidden Dense layer.
        activation: activation of the hidden layers.
        learning_rate: initial Adam learning rate (halved on plateaus).
        batch_size: rows per training step.
        epochs: maximum training epochs.
        patience: early-stopping patience in epochs (0 = train all epochs). Early stopping
            watches a held-out share of the *training* rows given to `fit`
            (`validation_fraction`; whole groups when `fit` is given `groups`), never the
            rows a search validates on.
        min_delta: smallest val_loss drop that counts as better.
        validation_fraction: share of the training rows held out for early stopping.
        class_weight: "none", "balanced" or a dict class -> weight.
        seed: seed of weights, dropout, shuffling and the early-stopping split.
        verbose: unused by training (kept for the scikit-learn habit); 0 is quiet.
    """

    def __init__(self, hidden_units=_DEFAULTS.hidden_units, dropout=_DEFAULTS.dropout,
                 l2=_DEFAULTS.l2, batch_norm=_DEFAULTS.batch_norm,
                 activation=_DEFAULTS.activation, learning_rate=_DEFAULTS.learning_rate,
                 batch_size=_DEFAULTS.batch_size, epochs=_DEFAULTS.epochs,
                 patience=_DEFAULTS.patience, min_delta=_DEFAULTS.min_delta,
                 validation_fraction=_DEFAULTS.val_fraction,
                 class_weight=_DEFAULTS.class_weight, seed=_DEFAULTS.seed, verbose=0):
        self.hidden_units = hidden_units
        self.dropout = dropout
        self.l2 = l2
        self.batch_norm = batch_norm
        self.activation = activation
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.min_delta = min_delta
        self.validation_fraction = validation_fraction
        self.class_weight = class_weight
        self.seed = seed
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = True  # float32 training; results vary in the last digits
        tags.input_tags.sparse = False
        return tags

    def _head_config(self) -> HeadConfig:
        units = self.hidden_units
        units = () if units is None else ((units,) if isinstance(units, (int, np.integer))
                                          else tuple(units))
        try:
            # The pipeline's own preprocessing steps scale the inputs, so no Normalization.
            return HeadConfig.from_mapping({
                "hidden_units": tuple(int(u) for u in units), "dropout": float(self.dropout),
                "l2": float(self.l2), "batch_norm": bool(self.batch_norm),
                "activation": self.activation, "learning_rate": float(self.learning_rate),
                "batch_size": int(self.batch_size), "epochs": int(self.epochs),
                "patience": max(1, int(self.patience)), "min_delta": float(self.min_delta),
                "seed": int(self.seed), "standardize": False, "progress": False})
        except ConfigError as exc:  # scikit-learn's contract: bad parameters are ValueErrors
            raise ValueError(str(exc)) from None

    def _stop_rows(self, encoded: np.ndarray, groups) -> np.ndarray:
        """Rows held out for early stopping: whole groups when a group holds several rows
        (no group given: each row its own); none when early stopping is off or the rows are
        too few to hold out a share of every class."""
        if self.patience <= 0 or not 0.0 < self.validation_fraction < 1.0:
            return np.array([], dtype=np.int64)
        rows = np.arange(len(encoded))
        g = rows if groups is None else np.asarray(groups, dtype=object)
        try:
            return holdout(rows, encoded, g, float(self.validation_fraction),
                           int(self.seed), knob="validation_fraction")[1]
        except DataError:
            return np.array([], dtype=np.int64)

    def fit(self, X, y, groups=None):
        """Builds the head for the classes in `y` and trains it.

        Args:
            X: features, shape (n_samples, n_features).
            y: class labels (any hashable values; at least two distinct).
            groups: optional group of each row (video, subject): the early-stopping rows are
                then whole groups, none of which the head trains on.

        Returns:
            self.

        Raises:
            ValueError: fewer than two classes, or parameters out of range.
        """
        from pipeline.fit import head_data  # lazy: loads Keras

        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"KerasHeadClassifier needs at least 2 classes in y; received 1 "
                             f"class ({self.classes_[0]!r})")
        if not (self.class_weight in ("none", "balanced", None)
                or isinstance(self.class_weight, dict)):
            raise ValueError(f"class_weight must be 'none', 'balanced' or a dict class -> "
                             f"weight; received: {self.class_weight!r}")
        if groups is not None and len(groups) != len(X):
            raise ValueError(f"groups has {len(groups)} entries for {len(X)} rows")
        config = self._head_config()
        self.model_ = build_head((X.shape[1],), len(self.classes_), config)
        sigmoid = self.model_.output.shape[-1] == 1
        self.stop_rows_ = self._stop_rows(encoded, groups)
        fit_rows = np.setdiff1d(np.arange(len(X)), self.stop_rows_)
        weights = None
        if isinstance(self.class_weight, dict):  # keyed by class value, as in scikit-learn
            weights = {i: float(self.class_weight.get(c, 1.0))
                       for i, c in enumerate(self.classes_.tolist())}
        elif self.class_weight == "balanced":
            weights = balanced_class_weight(encoded[fit_rows], len(self.classes_))
        train = head_data.ArrayBatches(X[fit_rows], head_data.targets(encoded[fit_rows], sigmoid),
                                       config.batch_size, True, config.seed)
        stop = head_data.ArrayBatches(X[self.stop_rows_],
                                      head_data.targets(encoded[self.stop_rows_], sigmoid),
                                      1024, False) if len(self.stop_rows_) else None
        history, self.best_epoch_ = fit_model(self.model_, train, stop, config, weights)
        self.n_epochs_ = len(history.get("loss", []))
        return self

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), columns in `classes_` order."""
        import keras

        check_is_fitted(self, "model_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        # Calling the model directly skips tracing a predict function per model, which
        # dominates on the small inputs of cross-validation folds.
        parts = [keras.ops.convert_to_numpy(self.model_(X[i:i + 4096], training=False))
                 for i in range(0, len(X), 4096)] or [np.zeros((0, self.model_.output_shape[-1]))]
        probs = np.concatenate(parts).astype(np.float64)
        if probs.shape[1] == 1:  # one sigmoid unit: P(classes_[1])
            probs = np.concatenate([1.0 - probs, probs], axis=1)
        return probs

    def predict(self, X):
        """The most probable class of each row, as values of `classes_`."""
        check_is_fitted(self, "model_")
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    # A fitted Keras model cannot be pickled portably; carry it as .keras bytes instead, so
    # joblib workers and estimator checks can pass fitted estimators around.
    def __getstate__(self):
        state = self.__dict__.copy()
        model = state.pop("model_", None)
        if model is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "head.keras"
                model.save(path)
                state["_model_bytes"] = path.read_bytes()
        return state

    def __setstate__(self, state):
        blob = state.pop("_model_bytes", None)
        self.__dict__.update(state)
        if blob is not None:
            import keras

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "head.keras"
                path.write_bytes(blob)
                self.model_ = keras.saving.load_model(path, safe_mode=True)



def fit_routing_groups(estimator, X, y, groups=None):
    """`estimator.fit(X, y)`, handing `groups` to a KerasHeadClassifier (alone or the last step
    of a Pipeline) so its early stopping holds out whole groups; other estimators ignore them."""
    final = estimator.steps[-1] if hasattr(estimator, "steps") else (None, estimator)
    if groups is None or not isinstance(final[1], KerasHeadClassifier):
        return estimator.fit(X, y)
    key = f"{final[0]}__groups" if final[0] else "groups"
    return estimator.fit(X, y, **{key: np.asarray(groups, dtype=object)})
