"""A grid-search best model rewritten as one Keras model (features -> probabilities).

`export` can then ship one `.keras` file whatever won the search, when the winner is exactly
expressible as layers: the Keras head, logistic regression or a linear SVM (as the softmax of
its decision scores, which is what `BestModel.predict_proba` returns for it), behind any of
standardize (Normalization), l2_normalize (UnitNormalization) and PCA (a fixed Dense layer).
Kernel SVMs, k-NN and trees have no such form: `to_keras_model` returns None for them.

The output follows fit-head's convention: one sigmoid unit for 2 classes, else a softmax.

Usage:
    head = to_keras_model(load_best_model(run_dir))   # or None
"""

from __future__ import annotations

import numpy as np


def _split(best):
    """(preprocessing steps, final estimator or Keras model) of a loaded BestModel."""
    if best.head is not None:
        return (list(best.pipeline.steps) if best.pipeline is not None else []), best.head
    return list(best.pipeline.steps[:-1]), best.pipeline.steps[-1][1]


def _dense(x, kernel, bias, activation, name):
    import keras

    layer = keras.layers.Dense(kernel.shape[1], activation=activation, name=name,
                               trainable=False)
    out = layer(x)
    layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return out


def _preprocessing_layer(x, name, step):
    """The Keras layer computing `step.transform` exactly, or None when there is none."""
    import keras
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import Normalizer, StandardScaler

    if isinstance(step, StandardScaler):
        dim = step.n_features_in_
        mean = step.mean_ if step.with_mean else np.zeros(dim)
        scale = step.scale_ if step.with_std else np.ones(dim)
        return keras.layers.Normalization(mean=mean.tolist(), variance=(scale ** 2).tolist(),
                                          name=name)(x)
    if isinstance(step, Normalizer) and step.norm == "l2":
        return keras.layers.UnitNormalization(axis=-1, name=name)(x)
    if isinstance(step, PCA):
        kernel = step.components_.T.astype(np.float64)
        bias = -step.mean_ @ kernel
        if step.whiten:
            scale = np.sqrt(step.explained_variance_)
            kernel, bias = kernel / scale, bias / scale
        return _dense(x, kernel, bias, None, name)
    return None


def _linear_output(x, clf, n_classes):
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    if not isinstance(clf, (LogisticRegression, LinearSVC)):
        return None
    coef, intercept = np.asarray(clf.coef_), np.asarray(clf.intercept_)
    if n_classes == 2:  # sigmoid(s) equals the 2-column softmax of (-s/2, s/2)
        return _dense(x, coef.T, intercept, "sigmoid", "predictions")
    return _dense(x, coef.T, intercept, "softmax", "predictions")


def to_keras_model(best):
    """The loaded best model as a keras.Model, or None when it has no exact layer form.

    Args:
        best: a `search_io.BestModel`.

    Returns:
        A keras.Model mapping (n, n_features) float32 vectors to probabilities (one sigmoid
        unit for 2 classes, else K softmax columns in class_names order), or None.
    """
    import keras

    n_classes = len(best.class_names)
    if len(best.classes) != n_classes:
        return None  # the model never saw some class: no column for it
    steps, final = _split(best)
    n_features = (steps[0][1] if steps else final).n_features_in_ if (
        steps or not isinstance(final, keras.Model)) else final.input_shape[-1]
    inputs = keras.Input(shape=(int(n_features),), name="features")
    x = inputs
    for name, step in steps:
        x = _preprocessing_layer(x, name, step)
        if x is None:
            return None
    if isinstance(final, keras.Model):
        outputs = final(x)
    else:
        outputs = _linear_output(x, final, n_classes)
        if outputs is None:
            return None
    return keras.Model(inputs, outputs, name=f"grid_search_{best.name}")
