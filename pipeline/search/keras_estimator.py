"""fit-head's dense Keras head (`pipeline/fit/heads.py`) as a scikit-learn classifier.

It lets the head compete in the same grid search as the scikit-learn families: `clone`,
`set_params`, `Pipeline` and cross-validation treat it like any other classifier. It follows
scikit-learn's estimator contract (`__init__` only stores parameters, validation happens in
`fit`, learned attributes end in `_`) and is checked with `sklearn.utils.estimator_checks`
in tests/search/test_search.py. With no head parameter set (the default) it chooses its head
as fit-head does (`pipeline.fit.choice`: linear or one hidden layer, the L2 penalty and the
input scaling, by cross-validation on the rows it is given) and solves a linear winner
exactly; given head parameters, it trains that head through fit-head's own trainer
(`pipeline.fit.training.fit_model`) with fit-head's early stopping.

Why not SciKeras: scikeras 0.13.0 fits, clones and runs inside GridSearchCV with Keras 3.15.1,
but fails scikit-learn 1.9.1's estimator checks (tags API of sklearn >= 1.6, mixin order,
no `n_features_in_` check in `predict`, sparse input accepted against its own tag, kwargs set
as attributes in `__init__`). The model itself is built by `heads.build_head`, so the output
layer and loss follow the same rules as fit-head (one sigmoid unit for 2 classes, softmax
for more).

Usage:
    clf = KerasHeadClassifier().fit(X_train, y_train)                 # the head chosen
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
from pipeline.fit import linear
from pipeline.fit.choice import HIDDEN_MIN_PER_CLASS, HIDDEN_OPTIONS, choose_head
from pipeline.fit.heads import balanced_class_weight, build_head, feature_moments
from pipeline.fit.options import HeadConfig
from pipeline.fit.training import fit_model, solved_head


_DEFAULTS = HeadConfig()  # fit-head's defaults are the estimator's: one list of them


class KerasHeadClassifier(ClassifierMixin, BaseEstimator):
    """fit-head's dense Keras head (`HeadConfig`), trained by fit-head's trainer on vectors.

    Every default is fit-head's (pipeline/fit/options.py); the parameters mean the same.

    Args:
        hidden_units, dropout, l2, batch_norm, activation: the head. All None (the default):
            chosen by cross-validation on the rows `fit` is given, with its own input
            scaling. Any one given: that head (the others at fit-head's FIXED_HEAD values)
            on inputs the pipeline's steps scale. hidden_units: sizes of the hidden Dense
            layers (an int or a sequence; empty = linear); dropout after each hidden layer;
            l2 on the hidden and output kernels; batch normalisation after each hidden
            layer; the hidden layers' activation.
        learning_rate: initial Adam learning rate (halved on plateaus).
        batch_size: rows per training step.
        epochs: maximum training epochs.
        patience: early-stopping patience in epochs (0 = train all epochs). Early stopping
            watches a held-out share of the *training* rows given to `fit`
            (`validation_fraction`; whole groups when `fit` is given `groups`), never the
            rows a search validates on.
        min_delta: smallest val_loss drop that counts as better.
        validation_fraction: share of the training rows held out for early stopping.
        class_weight: "none", "balanced" or a dict class -> weight; the early-stopping
            rows are weighted alike.
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
        if units is not None:
            units = (units,) if isinstance(units, (int, np.integer)) else \
                tuple(int(u) for u in units)
        head = {"hidden_units": units, "dropout": self.dropout, "l2": self.l2,
                "batch_norm": self.batch_norm, "activation": self.activation}
        given = {k: v for k, v in head.items() if v is not None}
        try:
            # Head parameters given: the pipeline's own preprocessing steps scale the inputs,
            # so no Normalization. None given: the head and its scaling are chosen.
            return HeadConfig.from_mapping({
                **given, **({"standardize": False} if given else {}),
                "learning_rate": float(self.learning_rate),
                "batch_size": int(self.batch_size), "epochs": int(self.epochs),
                "patience": max(1, int(self.patience)), "min_delta": float(self.min_delta),
                "seed": int(self.seed), "progress": False})
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
        """Builds the head for the classes in `y` and trains it. With no head parameter set
        (the default) the head is chosen as fit-head chooses it (`pipeline.fit.choice`),
        by cross-validation on these rows, and a linear winner is solved exactly.

        Args:
            X: features, shape (n_samples, n_features).
            y: class labels (any hashable values; at least two distinct).
            groups: optional group of each row (video, subject): the early-stopping rows and
                the choice's folds are then whole groups.

        Returns:
            self.

        Raises:
            ValueError: fewer than two classes, or parameters out of range.
        """
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
        self.choice_ = None
        if not config.chooses_head:
            return self._train(X, encoded, groups, config.fixed())
        n = len(self.classes_)
        rows = np.arange(len(X))
        g = rows.astype(str) if groups is None else np.asarray(groups, dtype=object)
        counts = np.bincount(encoded, minlength=n)
        try:
            choice = choose_head(
                lambda r: X[r], encoded, rows, g, n, config,
                hidden_probs=self._hidden_probs(X, encoded, g, config)
                if counts.min() >= HIDDEN_MIN_PER_CLASS and self.patience > 0 else None,
                class_weight=self._class_weights())
        except DataError as exc:
            raise ValueError(str(exc)) from None
        self.choice_ = choice.report()
        if not choice.linear:
            return self._train(X, encoded, groups, config.fixed(**choice.options))
        head = config.fixed(**choice.options, solver="lbfgs")
        self.model_, _ = solved_head(X, encoded, n, head, choice.winner["C"], (X.shape[1],),
                                     class_weight=self._class_weights())
        self.stop_rows_ = np.array([], dtype=np.int64)
        self.best_epoch_, self.n_epochs_ = None, 0
        return self

    def _class_weights(self):
        """One weight per class index, or "balanced" / "none" (weighed on the rows fitted)."""
        if isinstance(self.class_weight, dict):  # keyed by class value, as in scikit-learn
            return np.array([float(self.class_weight.get(c, 1.0))
                             for c in self.classes_.tolist()])
        return self.class_weight or "none"

    def _hidden_probs(self, X, encoded, groups, config):
        """fit-head's hidden-layer candidate for the choice, trained on arrays."""
        def probs(train, held, l2, fold):
            keep, stop = holdout(train, encoded, groups, float(self.validation_fraction),
                                 int(self.seed) + fold, knob="validation_fraction")
            model = self._fitted(X, encoded, keep, stop, config.fixed(**HIDDEN_OPTIONS, l2=l2))
            return _probabilities(model, X[held])
        return probs

    def _train(self, X, encoded, groups, config: HeadConfig):
        """Trains the head `config` describes by Adam, early-stopping on held-out rows."""
        self.stop_rows_ = self._stop_rows(encoded, groups)
        fit_rows = np.setdiff1d(np.arange(len(X)), self.stop_rows_)
        self.model_ = self._fitted(X, encoded, fit_rows, self.stop_rows_, config)
        return self

    def _fitted(self, X, encoded, fit_rows, stop_rows, config: HeadConfig):
        from pipeline.fit import head_data  # lazy: loads Keras

        stats = feature_moments([X[fit_rows]]) if config.standardize else None
        model = build_head((X.shape[1],), len(self.classes_), config, stats)
        sigmoid = model.output.shape[-1] == 1
        weights = self._class_weights()
        if isinstance(weights, str):
            weights = balanced_class_weight(encoded[fit_rows], len(self.classes_)) \
                if weights == "balanced" else None
        else:
            weights = dict(enumerate(weights.tolist()))
        train = head_data.ArrayBatches(X[fit_rows], head_data.targets(encoded[fit_rows], sigmoid),
                                       config.batch_size, True, config.seed)
        # The stopping rows carry the class weights too: early stopping then watches the loss
        # that training minimises, not one the class weights were meant to change.
        stop = head_data.ArrayBatches(
            X[stop_rows], head_data.targets(encoded[stop_rows], sigmoid), 1024, False,
            weights=None if weights is None else
            np.array([weights.get(c, 0.0) for c in encoded[stop_rows]])) \
            if len(stop_rows) else None
        history, self.best_epoch_ = fit_model(model, train, stop, config, weights)
        self.n_epochs_ = len(history.get("loss", []))
        return model

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), columns in `classes_` order."""
        check_is_fitted(self, "model_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        return _probabilities(self.model_, X)

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



def _probabilities(model, X) -> np.ndarray:
    """(n, n_classes) probabilities; one sigmoid unit gives P(classes_[1])."""
    import keras

    # Calling the model directly skips tracing a predict function per model, which
    # dominates on the small inputs of cross-validation folds.
    parts = [keras.ops.convert_to_numpy(model(X[i:i + 4096], training=False))
             for i in range(0, len(X), 4096)] or [np.zeros((0, model.output_shape[-1]))]
    probs = np.concatenate(parts).astype(np.float64)
    if probs.shape[1] == 1:
        probs = np.concatenate([1.0 - probs, probs], axis=1)
    return probs


def fit_routing_groups(estimator, X, y, groups=None):
    """`estimator.fit(X, y)`, handing `groups` to a KerasHeadClassifier (alone or the last step
    of a Pipeline) so its early stopping holds out whole groups; other estimators ignore them."""
    final = estimator.steps[-1] if hasattr(estimator, "steps") else (None, estimator)
    if groups is None or not isinstance(final[1], KerasHeadClassifier):
        return estimator.fit(X, y)
    key = f"{final[0]}__groups" if final[0] else "groups"
    return estimator.fit(X, y, **{key: np.asarray(groups, dtype=object)})
