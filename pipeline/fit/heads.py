"""Small dense Keras heads for cached vectors, with the output layer and loss chosen from the labels.

The rules (and the two mistakes they refuse):
    2 classes  -> 1 sigmoid unit + binary cross-entropy; a 2-unit softmax with categorical
                  cross-entropy when `--output softmax` or `--loss categorical_crossentropy` asks
                  for it. A 2-unit softmax with binary cross-entropy is refused: each unit is
                  then scored as its own yes/no label and the head learns nothing useful.
    K classes  -> K-unit softmax + (sparse) categorical cross-entropy. A sigmoid output for K > 2
                  exclusive classes is refused: the classes would be independent yes/no answers.

Usage:
    model = build_head((2048,), n_classes=5, config={"hidden_units": (256,)})

The hyperparameters and their defaults are fit-head's own (`HeadConfig`, pipeline/fit/options.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from pipeline.errors import ConfigError, DataError
from pipeline.fit.linear import unit_scale
from pipeline.fit.options import HeadConfig

OUTPUTS = ("auto", "sigmoid", "softmax")
LOSSES = ("auto", "binary_crossentropy", "categorical_crossentropy",
          "sparse_categorical_crossentropy")
SPATIAL = ("flatten", "avg", "max")


@dataclass(frozen=True)
class OutputSpec:
    units: int
    activation: str
    loss: str
    reason: str


def _fix(key: str, value: str, config: str | None) -> str:
    """An option as the user types it: `--loss categorical_crossentropy`, plus the TOML key in
    parentheses when a config file was used."""
    text = f"--{key.replace('_', '-')} {value}"
    return text + (f' ({key} = "{value}" in {config})' if config else "")


def resolve_output(n_classes: int, output: str = "auto", loss: str = "auto",
                   config: str | None = None) -> OutputSpec:
    """Picks the output layer and loss for `n_classes`, refusing combinations that are wrong.

    Args:
        n_classes: number of classes in the store.
        output, loss: the user's `--output` and `--loss` ("auto" follows the labels).
        config: the config file in use, if any; refusals then name its keys too.

    Raises:
        ConfigError: an explicit contradiction, with the fix as flags.
    """
    if output not in OUTPUTS:
        raise ConfigError(f"output must be one of {', '.join(OUTPUTS)}; received: {output!r}")
    if loss not in LOSSES:
        raise ConfigError(f"loss must be one of {', '.join(LOSSES)}; received: {loss!r}")
    if n_classes < 2:
        raise DataError(f"a classifier needs at least 2 classes; the store has {n_classes}")
    categorical = ("categorical_crossentropy", "sparse_categorical_crossentropy")
    if n_classes == 2:
        if output == "sigmoid" and loss in categorical:
            raise ConfigError(
                f"a single sigmoid unit needs binary cross-entropy, not {loss}; use "
                f"{_fix('loss', 'binary_crossentropy', config)}, or "
                f"{_fix('output', 'softmax', config)} for a 2-unit softmax with {loss}.")
        if output == "sigmoid" or (output == "auto" and loss in ("auto", "binary_crossentropy")):
            return OutputSpec(1, "sigmoid", "binary_crossentropy",
                              "2 classes: one sigmoid unit with binary cross-entropy")
        if loss == "binary_crossentropy":
            raise ConfigError(
                "a 2-unit softmax trained with binary cross-entropy learns nothing useful: it "
                "scores each unit as its own yes/no label; use "
                f"{_fix('loss', 'categorical_crossentropy', config)} with the softmax, or "
                f"{_fix('output', 'sigmoid', config)} (one unit) with binary cross-entropy.")
        asked = "softmax asked for" if output == "softmax" else f"{loss} asked for"
        return OutputSpec(2, "softmax", "sparse_categorical_crossentropy",
                          f"2 classes, {asked}: 2-unit softmax with categorical cross-entropy")
    if output == "sigmoid":
        raise ConfigError(
            f"{n_classes} exclusive classes with sigmoid outputs are treated as {n_classes} "
            "independent yes/no answers whose probabilities need not sum to 1; use "
            f"{_fix('output', 'softmax', config)} (or auto) with categorical cross-entropy.")
    if loss == "binary_crossentropy":
        raise ConfigError(
            f"binary cross-entropy is for 2 classes; with {n_classes} classes use "
            f"{_fix('loss', 'categorical_crossentropy', config)} (or auto).")
    return OutputSpec(n_classes, "softmax", "sparse_categorical_crossentropy",
                      f"{n_classes} classes: {n_classes}-unit softmax with categorical cross-entropy")


def build_head(input_shape: tuple, n_classes: int, config: HeadConfig | Mapping | None = None,
               feature_stats: tuple | None = None):
    """Builds and compiles the head. Labels are integer class indices for every output kind.

    Args:
        input_shape: one vector's shape, e.g. (2048,) or a pool5 map (7, 7, 2048).
        n_classes: number of classes; decides the output layer and loss (`resolve_output`).
        config: a `HeadConfig`, or a mapping of any of its keys (head options left unset
            take their `FIXED_HEAD` values: a head with one hidden layer of 256).
        feature_stats: (mean, variance) per feature channel of the training vectors. With
            `config.standardize`, a Normalization layer holding them starts the head, so raw
            vectors of any scale (a ResNet's 0..30, a MobileNet's 0..6) train alike and the
            saved head carries its own scaling to predict and export.

    Every random layer gets its own seed from `config.seed` (initialisers with seed=, dropout
    with its own seed generator): the global Python, NumPy and TensorFlow generators are
    neither read nor reset, so a caller's random state is its own.
    """
    import keras

    config = HeadConfig.from_mapping(config).fixed()  # unset head options: FIXED_HEAD
    out = resolve_output(n_classes, config.output, config.loss)
    if config.spatial not in SPATIAL:
        raise ConfigError(f"spatial must be one of {', '.join(SPATIAL)}; received: {config.spatial!r}")

    def kernel_init(layer_index: int):
        return keras.initializers.GlorotUniform(seed=config.seed * 1000 + layer_index)

    reg = keras.regularizers.L2(config.l2) if config.l2 else None
    inputs = keras.Input(shape=tuple(input_shape), name="features")
    x = inputs
    if config.standardize and feature_stats is not None:
        mean, variance = (np.asarray(v, dtype=np.float32) for v in feature_stats)
        x = keras.layers.Normalization(axis=-1, mean=mean, variance=np.maximum(variance, 1e-12),
                                       name="standardize")(x)
    if config.l2_normalize:
        # Unit length, then sqrt(channels): entries about 1 in size, as standardised ones are,
        # so one range of L2 penalties (and of logistic regression's C) suits both scalings.
        x = keras.layers.UnitNormalization(axis=-1, name="l2_normalize")(x)
        x = keras.layers.Rescaling(unit_scale(input_shape[-1]), name="unit_scale")(x)
    # Pointwise feature augmentation (active in training only; identity at inference), after
    # the scaling so its strength is in units of each feature's spread.
    if config.feature_noise:
        x = keras.layers.GaussianNoise(config.feature_noise, seed=config.seed * 1000 + 900,
                                       name="feature_noise")(x)
    if config.feature_dropout:
        x = keras.layers.Dropout(config.feature_dropout, seed=config.seed * 1000 + 901,
                                 name="feature_dropout")(x)
    if len(input_shape) > 1:  # a pool5 map: flatten or pool inside the head
        rank = len(input_shape) - 1
        if config.spatial == "flatten":
            x = keras.layers.Flatten(name="flatten")(x)
        else:
            pools = {("avg", 2): keras.layers.GlobalAveragePooling2D,
                     ("max", 2): keras.layers.GlobalMaxPooling2D,
                     ("avg", 3): keras.layers.GlobalAveragePooling3D,
                     ("max", 3): keras.layers.GlobalMaxPooling3D,
                     ("avg", 1): keras.layers.GlobalAveragePooling1D,
                     ("max", 1): keras.layers.GlobalMaxPooling1D}
            x = pools[(config.spatial, rank)](name=f"{config.spatial}_pool")(x)
    for i, units in enumerate(config.hidden_units):
        x = keras.layers.Dense(int(units), kernel_regularizer=reg, name=f"dense_{i}",
                               kernel_initializer=kernel_init(i),
                               use_bias=not config.batch_norm)(x)
        if config.batch_norm:
            x = keras.layers.BatchNormalization(name=f"bn_{i}")(x)
        x = keras.layers.Activation(config.activation, name=f"act_{i}")(x)
        if config.dropout:
            # An int seed gives the layer a SeedGenerator of its own (not the global one).
            x = keras.layers.Dropout(config.dropout, seed=config.seed * 1000 + i,
                                     name=f"dropout_{i}")(x)
    # The output kernel is penalised too: a linear head (no hidden layer) on a few hundred
    # 1,024-d rows otherwise has no brake at all, where logistic regression has its C.
    outputs = keras.layers.Dense(out.units, activation=out.activation, kernel_regularizer=reg,
                                 kernel_initializer=kernel_init(len(config.hidden_units)),
                                 name="predictions")(x)
    model = keras.Model(inputs, outputs, name="head")
    try:
        optimizer = keras.optimizers.get({"class_name": config.optimizer,
                                          "config": {"learning_rate": config.learning_rate}})
    except ValueError:
        raise ConfigError(f"unknown optimizer {config.optimizer!r}; use adam, sgd, rmsprop, "
                          "adamw, ...") from None
    if out.activation == "sigmoid":
        metric = keras.metrics.BinaryAccuracy(name="accuracy")
    else:
        metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    model.compile(optimizer=optimizer, loss=out.loss, metrics=[metric])
    return model


def predict_proba(model, features: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Class probabilities, shape (n, n_classes), for either output kind."""
    import keras

    # Calling the model directly (inference mode) traces no predict function per model, so the
    # several heads of one run (learning curve, calibration) stay free of TF's retracing warnings.
    parts = [keras.ops.convert_to_numpy(model(np.asarray(features[i:i + batch_size]),
                                              training=False))
             for i in range(0, len(features), batch_size)]
    probs = (np.concatenate(parts) if parts else np.zeros((0, model.output_shape[-1])))
    probs = probs.astype(np.float64)
    if probs.shape[1] == 1:  # one sigmoid unit: P(class 1)
        probs = np.concatenate([1.0 - probs, probs], axis=1)
    return probs


def feature_moments(batches) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and variance over batches of vectors (or maps), in float64."""
    total, total_sq, count = 0.0, 0.0, 0
    for x in batches:
        flat = np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1])
        total = total + flat.sum(axis=0)
        total_sq = total_sq + np.square(flat).sum(axis=0)
        count += len(flat)
    mean = total / max(count, 1)
    return mean, np.maximum(total_sq / max(count, 1) - np.square(mean), 0.0)


def balanced_class_weight(labels: np.ndarray, n_classes: int) -> dict:
    """scikit-learn's 'balanced' weights: n_samples / (n_classes * count)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    return {c: float(len(labels) / (n_classes * counts[c])) for c in range(n_classes) if counts[c]}
