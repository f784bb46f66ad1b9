"""A backbone's preprocessing as frozen built-in Keras layers, for the exported model.

Every keras.applications mode is a per-pixel affine map of RGB (caffe: RGB->BGR and minus the
ImageNet mean; tf: x/127.5 - 1; torch: ImageNet mean/std; some models do it inside themselves),
and a C3D `--mean-file` cube is one per position. The map is *measured* from the backbone's own
`preprocess_input` instead of copied as constants, and checked.

Usage:
    affine = affine_preprocessing(spec.preprocess, sample_shape)   # (A, b) or None
    x = apply_preprocessing(keras_input, affine)
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import WeightsError


def affine_preprocessing(preprocess, input_shape: tuple, tolerance: float = 1e-4):
    """Finds (A, b) with preprocess(x) == x @ A + b for every pixel, or None if there is none.

    `b` is what preprocessing makes of black (x = 0): one value per channel for every
    keras.applications mode, or one per position for a mean cube (C3D's `--mean-file`).

    Args:
        preprocess: the backbone's `preprocess` callable (numpy in, numpy out).
        input_shape: shape of one sample, channels last.
        tolerance: largest error allowed, relative to the output range.

    Returns:
        (A of shape (3, 3), b of shape (3,) or `input_shape`) as float64, or None.
    """
    rng = np.random.default_rng(0)
    probe = rng.uniform(0, 255, size=(2, *input_shape)).astype(np.float32)
    out = np.asarray(preprocess(probe.copy()), dtype=np.float64)  # copy: caffe mode edits in place
    if out.shape != probe.shape:
        return None
    offset = np.asarray(preprocess(np.zeros((1, *input_shape), np.float32)), np.float64)[0]
    channels = offset.shape[-1]
    per_channel = np.allclose(offset, offset.reshape(-1, channels)[0], atol=1e-6)
    b = offset.reshape(-1, channels)[0] if per_channel else offset
    x = probe.reshape(-1, channels).astype(np.float64)
    y = (out - offset).reshape(-1, channels)
    a = np.linalg.lstsq(x, y, rcond=None)[0]
    error = np.abs(x @ a - y).max()
    return (a, b) if error <= tolerance * max(1.0, np.abs(out).max()) else None


def describe_affine(a: np.ndarray, b: np.ndarray) -> str:
    """A readable name for a fitted preprocessing map (for model.json)."""
    if b.ndim > 1:
        order = "RGB->BGR, " if np.allclose(a, np.eye(3)[::-1], atol=1e-6) else ""
        return f"{order}minus a mean cube of shape {list(b.shape)} (the --mean-file, cropped)"
    if np.allclose(a, np.eye(3), atol=1e-6) and np.allclose(b, 0, atol=1e-4):
        return "none (the backbone normalises inside itself)"
    if np.allclose(a, np.eye(3)[::-1], atol=1e-6):
        return f"caffe: RGB->BGR, minus mean {np.round(-b, 3).tolist()} (BGR order)"
    if np.allclose(a, np.eye(3) / 127.5, atol=1e-6) and np.allclose(b, -1, atol=1e-4):
        return "tf: x / 127.5 - 1"
    scale = np.diag(a)
    if np.allclose(a, np.diag(scale), atol=1e-9):
        return f"per-channel x * {np.round(scale, 6).tolist()} + {np.round(b, 6).tolist()}"
    return "affine map of the RGB channels"


def apply_preprocessing(x, affine):
    """`x @ A + b` in frozen built-in layers; returns the tensor.

    A per-channel map is one Dense(3) (identity maps add nothing); a mean cube is subtracted by
    a Normalization layer holding the cube as its mean and 1 as its variance, so `x - cube`
    is computed exactly as the reader computed it, in float32.
    """
    import keras

    a, b = affine
    cube = b.ndim > 1
    if not (np.allclose(a, np.eye(3), atol=1e-7) and (cube or np.allclose(b, 0, atol=1e-6))):
        layer = keras.layers.Dense(3, name="preprocess", trainable=False, use_bias=not cube)
        x = layer(x)  # Dense acts on the last (channel) axis of any rank
        layer.set_weights([a.astype(np.float32)] + ([] if cube else [b.astype(np.float32)]))
    if cube:
        layer = keras.layers.Normalization(axis=tuple(range(-b.ndim, 0)), name="mean_cube",
                                           trainable=False)
        x = layer(x)
        layer.set_weights([(-b).astype(np.float32), np.ones(b.shape, np.float32),
                           np.asarray(0, dtype=layer.weights[2].dtype)])
        layer.finalize_state()  # its mean tensor is taken from the weights just set
    return x


def clip_preprocessing(spec, extract_options: dict, sample_shape: tuple, provenance: dict):
    """The preprocessing the store's vectors went through: with `--mean-file`, the backbone's
    own recipe loads and crops the cube (the same code the reader ran), after checking that
    the file is the one the store recorded."""
    import hashlib

    mean_file = extract_options.get("mean_file")
    recipe = spec.clip_recipe
    if not mean_file or recipe is None or recipe.load_mean is None:
        return spec.preprocess
    with open(mean_file, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    recorded = str((provenance.get("reader") or {}).get("mean", ""))
    if not recorded.startswith(f"file sha256:{digest}"):
        raise WeightsError(f"mean file {mean_file} is not the one the run's vectors were made "
                           f"with (recorded: {recorded[:30]}...); pass the original with "
                           "--mean-file FILE (or mean_file = \"...\" under [export]).")
    mean = recipe.load_mean(str(mean_file), sample_shape)
    return lambda clips: recipe.preprocess_with_mean(clips, mean)
