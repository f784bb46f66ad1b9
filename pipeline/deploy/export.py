"""Export a run as one Keras model: raw decoded RGB -> preprocessing -> frozen backbone -> head.

The model is made of built-in layers only, so `keras.saving.load_model(path, safe_mode=True)`
loads it without this package. Preprocessing becomes a frozen per-pixel affine layer: every
keras.applications mode is one (caffe: RGB->BGR and minus the ImageNet mean; tf: x/127.5 - 1;
torch: ImageNet mean/std; some models do it inside themselves). We *measure* the map from the
backbone's own `preprocess_input` instead of copying constants, and check the result.

Decoding and resizing stay outside the model (they depend on the file type); `model.json` next
to the model states the input size and the resize policy the training vectors used.

Usage:
    from pipeline.deploy.export import export_model
    path = export_model("cache/runs/<run>", {})
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.errors import BackboneError, ConfigError
from pipeline.deploy.prediction import check_weights_unchanged, extract_options_of, load_run


def affine_preprocessing(preprocess, input_shape: tuple, tolerance: float = 1e-4):
    """Finds (A, b) with preprocess(x) == x @ A + b for every pixel, or None if there is none.

    Args:
        preprocess: the backbone's `preprocess` callable (numpy in, numpy out).
        input_shape: shape of one sample, channels last.
        tolerance: largest error allowed, relative to the output range.

    Returns:
        (A of shape (3, 3), b of shape (3,)) as float64, or None.
    """
    rng = np.random.default_rng(0)
    probe = rng.uniform(0, 255, size=(2, *input_shape)).astype(np.float32)
    out = np.asarray(preprocess(probe.copy()), dtype=np.float64)  # copy: caffe mode edits in place
    if out.shape != probe.shape:
        return None
    x = probe.reshape(-1, probe.shape[-1]).astype(np.float64)
    y = out.reshape(-1, out.shape[-1])
    design = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    solution = np.linalg.lstsq(design, y, rcond=None)[0]
    a, b = solution[:-1], solution[-1]
    error = np.abs(design @ solution - y).max()
    return (a, b) if error <= tolerance * max(1.0, np.abs(y).max()) else None


def describe_affine(a: np.ndarray, b: np.ndarray) -> str:
    """A readable name for a fitted preprocessing map (for model.json)."""
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
    """`x @ A + b` as a frozen Dense(3) layer (identity maps add nothing); returns the tensor."""
    import keras

    a, b = affine
    if np.allclose(a, np.eye(3), atol=1e-7) and np.allclose(b, 0, atol=1e-6):
        return x
    layer = keras.layers.Dense(3, name="preprocess", trainable=False)
    x = layer(x)  # Dense acts on the last (channel) axis of any rank
    layer.set_weights([a.astype(np.float32), b.astype(np.float32)])
    return x


def export_model(run_dir, options: dict | None = None, echo=print) -> Path:
    """Builds, saves and checks the end-to-end model of a run.

    Args:
        run_dir: a fit-head run folder (or a grid-search one whose best model is a Keras head).
        options: `out` (the .keras path, default RUN_DIR/export/model.keras), `check` (compare
            with the pipeline's own preprocessing + backbone + head on a random input),
            `calibrate` (False: raw softmax, without the fitted temperature).
        echo: where progress lines go.

    Returns:
        Path of the saved `.keras` model.

    Raises:
        ConfigError: the run's best model is not a Keras model.
        BackboneError: the backbone's preprocessing is not a per-pixel affine map.
        WeightsError, StoreError: the backbone weights or provenance cannot be reproduced.
    """
    import keras

    from pipeline.extract.backbones import get_backbone
    from pipeline.extract.backbones.feature_model import build_feature_model

    options = dict(options or {})
    run = load_run(run_dir, calibrate=options.get("calibrate", True))
    if run.keras_head is None:
        raise ConfigError(f"the best model of {Path(run_dir).name} is not a Keras model, so it "
                          "cannot be joined to the backbone; export a fit-head run instead "
                          "(or use predict, which works with every model).")
    eo = extract_options_of(run.info)
    check_weights_unchanged(eo, run.provenance)
    spec = get_backbone(eo["backbone"])
    sample_shape = tuple(spec.input_shape_for(eo.get("input_size")))
    affine = affine_preprocessing(spec.preprocess, sample_shape)
    if affine is None:
        raise BackboneError(f"backbone {spec.name}'s preprocessing ({spec.preprocess_name}) is "
                            "not a per-pixel affine map of RGB, so built-in Keras layers cannot "
                            "express it; predict with `run_pipeline.py predict` instead.")
    features = build_feature_model(spec, eo["weights"], eo["layer"], eo.get("pooling") or "avg",
                                   eo.get("input_size"))
    clips_mean = spec.kind == "clip" and (eo.get("aggregate") or "mean") == "mean"
    model = _assemble(keras, spec, features, run, affine, sample_shape, clips_mean,
                      bool(eo.get("l2_normalize")), eo.get("dtype") == "float16")
    out = Path(options.get("out") or Path(run_dir) / "export" / "model.keras")
    if out.suffix != ".keras":
        raise ConfigError(f"--out must end in .keras; received: {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    contract = _contract(spec, eo, run, affine, sample_shape, clips_mean, out)
    out.with_suffix(".json").write_text(json.dumps(contract, indent=2) + "\n", encoding="utf-8")
    if options.get("check", True):
        error = _self_check(keras, out, spec, features, run, sample_shape, clips_mean, eo)
        echo(f"check: exported model vs pipeline on a random input, max |difference| {error:.2e}")
    echo(f"exported {spec.name} + head ({len(run.class_names)} classes), input "
         f"{contract['input_shape']}")
    return out


def _assemble(keras, spec, features, run, affine, sample_shape, clips_mean, l2, float16):
    features.trainable = False
    shape = ((None,) + sample_shape) if clips_mean else sample_shape
    inputs = keras.Input(shape=shape, name="rgb")
    x = apply_preprocessing(inputs, affine)
    if clips_mean:  # one video = several clips: backbone per clip, mean of the features
        x = keras.layers.TimeDistributed(features, name="per_clip")(x, training=False)
        x = keras.layers.GlobalAveragePooling1D(name="clip_mean")(x)
        if l2:
            x = keras.layers.UnitNormalization(name="l2_normalize")(x)
    else:
        x = features(x, training=False)
    if float16:  # the store kept float16 vectors; round the same way
        x = keras.layers.Identity(dtype="float16", name="as_stored_float16")(x)
        x = keras.layers.Identity(dtype="float32", name="back_to_float32")(x)
    probs = run.keras_head(x, training=False)
    if probs.shape[-1] == 1:  # one sigmoid unit: P(class 1) -> [P(class 0), P(class 1)]
        other = keras.layers.Rescaling(scale=-1.0, offset=1.0, name="one_minus_p")(probs)
        probs = keras.layers.Concatenate(name="probabilities")([other, probs])
    return keras.Model(inputs, probs, name=f"{spec.name}_end_to_end")


def _contract(spec, eo, run, affine, sample_shape, clips_mean, out) -> dict:
    reader = run.provenance.get("reader") or {}
    return {
        "model": out.name,
        "load": "keras.saving.load_model(path, safe_mode=True)",
        "input_shape": (["clips"] if clips_mean else []) + list(sample_shape),
        "input": ("float32 RGB values in 0..255 (decoded frames, channels last), "
                  + ("batch x clips x frames x height x width x 3" if clips_mean else
                     "batch x " + " x ".join(map(str, sample_shape)))),
        "resize_outside_the_model": {"policy": eo.get("resize") or reader.get("resize"),
                                     "interpolation": reader.get("interpolation", "bilinear"),
                                     "reader": reader},
        "preprocessing_inside": describe_affine(*affine),
        "backbone": spec.name, "layer": eo["layer"], "pooling": eo.get("pooling"),
        "weights": run.provenance.get("weights_label", run.provenance.get("weights")),
        "output": "probabilities, one column per class in class_names order",
        "class_names": run.class_names,
        "run": str(Path(run.run_dir).resolve()),
    }


def _self_check(keras, path, spec, features, run, sample_shape, clips_mean, eo) -> float:
    """Max |exported - pipeline| on a random input; raises when they disagree."""
    rng = np.random.default_rng(1)
    shape = (2, 2) + sample_shape if clips_mean else (2,) + sample_shape
    raw = rng.integers(0, 256, size=shape).astype(np.float32)
    pre = np.asarray(spec.preprocess(raw.copy()), dtype=np.float32)
    if clips_mean:
        flat = np.asarray(features.predict(pre.reshape(-1, *sample_shape), verbose=0))
        feats = flat.reshape(shape[0], shape[1], -1).mean(axis=1)
        if eo.get("l2_normalize"):
            feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    else:
        feats = np.asarray(features.predict(pre, verbose=0))
    if eo.get("dtype") == "float16":
        feats = feats.astype(np.float16).astype(np.float32)
    expected = run.predict_proba(feats)
    loaded = keras.saving.load_model(path, safe_mode=True)
    got = np.asarray(loaded.predict(raw, verbose=0), dtype=np.float64)
    error = float(np.abs(got - expected).max())
    if error > 1e-4:
        raise BackboneError(f"the exported model disagrees with the pipeline by {error:.2e} on "
                            f"a random input ({path}); please report this with the run folder.")
    return error
