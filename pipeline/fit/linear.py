"""A linear head solved exactly: logistic regression by L-BFGS, loaded into the Keras head.

A dense head without a hidden layer is a softmax (or, for 2 classes, one sigmoid unit) over
`x W + b`; trained with cross-entropy and an L2 penalty on `W` it is logistic regression, a
convex problem with one optimum. So instead of stepping towards that optimum with Adam and
stopping early, it is solved here (scipy's L-BFGS, warm-started along a path of C values)
and the solution becomes the weights of the head's `predictions` layer: `head.keras` stays a
Keras model, so predict, TTA, calibration and export treat it as any other head.

The input scaling mirrors the head's own layers exactly (`scale`): `standardize` is the
`Normalization` layer (the training rows' mean and variance), `l2_normalize` the
`UnitNormalization` layer and a `Rescaling` by sqrt(channels); maps (pool5) are flattened or
pooled as the head's `spatial` says.

Usage:
    stats = scaling_stats(x_train, standardize=True)
    z = scale(x_train, stats, l2_normalize=False)
    kernel, bias = solve(z, y, n_classes, C=0.01)
    probs = predict(scale(x_val, stats, False), kernel, bias)
"""

from __future__ import annotations

import numpy as np

# 17 values, two per decade, as in the usual tuned linear probe (C from 1e-4 to 1e4).
C_GRID = tuple(float(c) for c in np.logspace(-4, 4, 17))
# The input scalings a chosen head is tried with: (standardize, l2_normalize).
SCALINGS = {"standardize": (True, False), "l2_normalize": (False, True)}
MAX_ITERATIONS = 1000
# The fitted head's tolerance; a cross-validation sweep only ranks C values and stops sooner
# (SWEEP_TOLERANCE: the same accuracies to the row on flowers5, in half the iterations).
GRADIENT_TOLERANCE = 1e-6
SWEEP_TOLERANCE = 1e-4


def keras_l2(C: float, n_rows: int) -> float:
    """The Keras `l2` that makes the head's loss the logistic regression of inverse penalty C.

    Logistic regression (as scikit-learn writes it) minimises C * sum_i w_i loss_i + |W|^2 / 2
    over the n training rows (w_i: each row's class weight). Keras minimises the batch mean
    (1/n) sum_i w_i loss_i (class weights act as sample weights, and the mean is over rows)
    plus l2 * |W|^2 (its L2 regularizer on the kernel; the bias is free in both). Dividing the
    first by C * n gives the second with l2 = 1 / (2 * C * n): the same optimum, so the
    recorded l2 describes the solved head.
    """
    return 1.0 / (2.0 * float(C) * int(n_rows))


def scaling_stats(x: np.ndarray, standardize: bool):
    """The training rows' (mean, variance) per channel that the head's Normalization layer
    holds, or None without standardisation."""
    if not standardize:
        return None
    flat = np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1])
    return flat.mean(axis=0), flat.var(axis=0)


def scale(x: np.ndarray, stats, l2_normalize: bool, spatial: str = "flatten") -> np.ndarray:
    """The vectors the head's `predictions` layer sees, as float32 rows: the head's scaling
    layers (standardise with `stats` unless None, then unit length), then (for a map) its
    Flatten or global pooling."""
    z = np.asarray(x, dtype=np.float64)
    if stats is not None:
        mean, variance = stats
        # Normalization divides by max(sqrt(variance), 1e-7); build_head floors variance at 1e-12.
        z = (z - mean) / np.sqrt(np.maximum(variance, 1e-12))
    if l2_normalize:
        z = z / np.maximum(np.sqrt(np.square(z).sum(axis=-1, keepdims=True)), 1e-12) \
            * unit_scale(z.shape[-1])
    if z.ndim > 2:
        axes = tuple(range(1, z.ndim - 1))
        z = (z.reshape(len(z), -1) if spatial == "flatten" else
             z.mean(axis=axes) if spatial == "avg" else z.max(axis=axes))
    return z.astype(np.float32)


def unit_scale(channels: int) -> float:
    """What a unit vector is multiplied by in the head: sqrt(channels), so that its entries
    are about 1 in size, as standardised ones are, and one range of C suits both scalings."""
    return float(np.sqrt(channels))


def balanced_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-row weights n / (K * count of the row's class): scikit-learn's 'balanced'."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = int((counts > 0).sum())
    return len(y) / (present * counts[y])


def row_weights(y: np.ndarray, n_classes: int, class_weight) -> np.ndarray:
    """Each row's weight in the loss: "balanced", "none" (or None), or one weight per class."""
    if isinstance(class_weight, str) and class_weight == "balanced":
        return balanced_weights(y, n_classes)
    if class_weight is None or isinstance(class_weight, str):
        return np.ones(len(y))
    return np.asarray(class_weight, dtype=np.float64)[y]


def _loss_and_gradient(params, x, y, weights, C, units):
    d = x.shape[1]
    kernel, bias = params[:d * units].reshape(d, units), params[d * units:]
    # The two products with x are the cost of an evaluation: in x's own precision (float32
    # reads half the memory), everything else in float64.
    z = (x @ kernel.astype(x.dtype)).astype(np.float64) + bias
    total = weights.sum()
    if units == 1:  # one sigmoid unit: P(class 1) = sigmoid(z)
        z = z[:, 0]
        sign = np.where(y == 1, 1.0, -1.0)
        losses = np.logaddexp(0.0, -sign * z)
        dz = ((1.0 / (1.0 + np.exp(-z)) - (y == 1)) * weights / total)[:, None]
    else:
        top = z.max(axis=1, keepdims=True)
        log_sum = np.log(np.exp(z - top).sum(axis=1, keepdims=True)) + top
        losses = log_sum[:, 0] - z[np.arange(len(y)), y]
        dz = np.exp(z - log_sum)
        dz[np.arange(len(y)), y] -= 1.0
        dz *= (weights / total)[:, None]
    penalty = 1.0 / (C * total)  # C * sum w loss + |W|^2 / 2, divided by C * sum w
    value = float(weights @ losses / total + 0.5 * penalty * np.square(kernel).sum())
    grad_kernel = (dz.T.astype(x.dtype) @ x).T.astype(np.float64) + penalty * kernel
    return value, np.concatenate([grad_kernel.ravel(), dz.sum(axis=0)])


_BLAS = []  # the threadpool controller, made once: making one reads the process's libraries


def one_blas_thread():
    """A context in which BLAS runs one thread: these thin products gain little from a second
    one, and on shared cores OpenBLAS threads that wait for each other made a C path ten
    times slower."""
    if not _BLAS:
        from threadpoolctl import ThreadpoolController

        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


def row_space(x: np.ndarray):
    """(x expressed in an orthonormal basis Q of its row space, Q), or (x, None) when x has
    no fewer features than rows. The L2-penalised optimum's kernel lies in that row space
    (the data term sees x @ W only, and any part of W outside it only adds to the penalty),
    so solving for A in (x Q) A and taking W = Q A is exact, and cheaper by d / n."""
    n, d = x.shape
    if n >= d:
        return x, None
    q, r = np.linalg.qr(np.asarray(x, dtype=np.float64).T)  # x.T = Q R: x = R.T Q.T
    return r.T.astype(x.dtype), q.astype(x.dtype)


def solve(x: np.ndarray, y: np.ndarray, n_classes: int, C: float, weights=None, start=None,
          tolerance: float = GRADIENT_TOLERANCE):
    """(kernel (d, units), bias (units,)) of the L2-penalised logistic regression with inverse
    penalty C; units is 1 for 2 classes (one sigmoid unit, as the head has), else n_classes.
    `start` (a previous solution) warm-starts L-BFGS; it stops when no gradient entry of the
    objective (divided by C times the rows' weight) exceeds `tolerance`."""
    from scipy.optimize import minimize
    from threadpoolctl import threadpool_limits

    x = np.asarray(x)
    y = np.asarray(y, dtype=np.int64)
    units = 1 if n_classes == 2 else n_classes
    weights = balanced_weights(y, n_classes) if weights is None else np.asarray(weights, float)
    x, basis = row_space(x) if start is None else (x, None)
    d = x.shape[1]
    x0 = np.zeros(d * units + units) if start is None else \
        np.concatenate([start[0].ravel(), start[1]])
    with one_blas_thread():
        found = minimize(_loss_and_gradient, x0, args=(x, y, weights, float(C), units),
                         jac=True, method="L-BFGS-B",
                         options={"maxiter": MAX_ITERATIONS, "gtol": tolerance})
    kernel = found.x[:d * units].reshape(d, units)
    return (kernel if basis is None else basis @ kernel), found.x[d * units:]


def predict(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Class probabilities (n, n_classes) of scaled vectors, as the head computes them."""
    z = np.asarray(x, dtype=np.float64) @ kernel + bias
    if z.shape[1] == 1:
        p = 1.0 / (1.0 + np.exp(-z[:, 0]))
        return np.stack([1.0 - p, p], axis=1)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def load_into_head(model, kernel: np.ndarray, bias: np.ndarray) -> None:
    """Sets the head's output layer to the solved weights (float32, as Keras keeps them)."""
    model.get_layer("predictions").set_weights([kernel.astype(np.float32),
                                                bias.astype(np.float32)])

