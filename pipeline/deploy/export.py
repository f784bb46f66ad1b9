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

from pipeline.deploy.options import ExportConfig
from pipeline.errors import BackboneError, ConfigError, OutputError, WeightsError
from pipeline.outputs import check_own_file, is_own_json
from pipeline.deploy.prediction import load_run, reuse_extract_options

# The backbone inside an exported model runs in float32, so only float32 vectors are its own.
EXPORTED_PRECISION = "float32"


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


def _best_model_name(run_dir) -> str:
    """`rbf_svm (family rbf_svm)` from a grid-search sidecar, for messages."""
    try:
        sidecar = json.loads((Path(run_dir) / "best_model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "not a Keras model"
    return f"{sidecar.get('model', '?')} (family {sidecar.get('family', '?')})"


def export_model(run_dir, options=None, echo=print) -> Path:
    """Builds, saves and checks the end-to-end model of a run.

    Args:
        run_dir: a fit-head run folder (or a grid-search one whose best model is a Keras head).
        options: an `ExportConfig` or a mapping of its options: `out` (the .keras path, default
            RUN_DIR/export/model.keras), `check` (compare with the pipeline's own preprocessing
            + backbone + head on a random input), `calibrate` (False: raw softmax, without the
            fitted temperature), `weights` / `mean_file` when those files have moved.
        echo: where progress lines go.

    Returns:
        Path of the saved `.keras` model.

    Raises:
        ConfigError: the run's best model is not a Keras model, or its vectors were computed
            at a reduced precision (float16, bfloat16, int8) that the exported float32
            backbone would not reproduce.
        BackboneError: the backbone's preprocessing is not a per-pixel affine map.
        WeightsError, StoreError: the backbone weights or provenance cannot be reproduced.
    """
    import keras

    from pipeline.extract.backbones import get_backbone
    from pipeline.extract.backbones.feature_model import build_feature_model
    from pipeline.plugins import load_plugins
    from pipeline.extract.sources import create_reader

    cfg = ExportConfig.from_mapping(options).replace(run_dir=str(run_dir))
    run = load_run(run_dir, calibrate=cfg.calibrate)
    out = _check_output(Path(cfg.out) if cfg.out else None, Path(run_dir))  # before building
    if run.keras_head is None:
        raise ConfigError(
            f"export joins the backbone to a Keras model, and the best model of grid-search run "
            f"{Path(run_dir).name} is {_best_model_name(run_dir)}, which has no exact Keras "
            "form. Only fit-head runs and grid-search runs whose best model is the Keras head, "
            "logistic regression or a linear SVM export; use predict with this run (it works "
            "with every model), or export a fit-head run.")
    _refuse_reduced_precision(run)
    eo = reuse_extract_options(run_dir, run.info, cfg, "export")
    load_plugins(eo.get("plugin") or ())  # the backbone may be a plugin's
    spec = get_backbone(eo["backbone"])
    sample_shape = tuple(spec.input_shape_for(eo.get("input_size"), eo.get("frames")))
    preprocess = clip_preprocessing(spec, eo, sample_shape, run.provenance)
    affine = affine_preprocessing(preprocess, sample_shape)
    if affine is None:
        raise BackboneError(f"backbone {spec.name}'s preprocessing ({spec.preprocess_name}) is "
                            "not a per-pixel affine map of RGB, so built-in Keras layers cannot "
                            "express it; predict with `run_pipeline.py predict` instead.")
    features = build_feature_model(spec, eo["weights"], eo["layer"], eo.get("pooling") or "avg",
                                   eo.get("input_size"), frames=eo.get("frames"))
    # A clip reader averaging a file's clips: the exported model averages its clips' vectors.
    clips_mean = create_reader(spec, sample_shape, eo).mean_rows
    model = _assemble(keras, spec, features, run, affine, sample_shape, clips_mean,
                      bool(eo.get("l2_normalize")), eo.get("dtype") == "float16")
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    contract = _contract(spec, eo, run, affine, sample_shape, clips_mean, out)
    out.with_suffix(".json").write_text(json.dumps(contract, indent=2) + "\n", encoding="utf-8")
    if cfg.check:
        error = _self_check(keras, out, preprocess, features, run, sample_shape, clips_mean, eo)
        echo(f"check: exported model vs pipeline on a random input, max |difference| {error:.2e}")
    echo(f"exported {spec.name} + head ({len(run.class_names)} classes), input "
         f"{contract['input_shape']}")
    return out


def _check_output(out: Path | None, run_dir: Path) -> Path:
    """The .keras path to write (default RUN_DIR/export/model.keras), checked: a new file or
    one an earlier export wrote (its model.json beside it names it), with a model.json beside
    it that is absent or ours, in a folder that can be written."""
    if out is not None and out.suffix != ".keras":
        raise ConfigError(f"--out must end in .keras; received: {out}")
    path = out or run_dir / "export" / "model.keras"

    def ours(model: Path) -> bool:
        return is_own_json(model.with_suffix(".json"), "load", "vector_key") and json.loads(
            model.with_suffix(".json").read_text(encoding="utf-8")).get("model") == model.name

    try:
        check_own_file(path, "--out", ours, "exported model", "model.keras")
        check_own_file(path.with_suffix(".json"), "--out",
                       lambda p: is_own_json(p, "load", "vector_key"), "exported model",
                       "model.keras")
    except OutputError as exc:
        if out is not None:
            raise
        raise OutputError(f"{exc} (the default is inside the run folder {run_dir})") from None
    return path


def _refuse_reduced_precision(run) -> None:
    """The exported backbone computes in float32; vectors made at another precision differ
    from its outputs, and the head was trained on those."""
    precision = run.provenance.get("precision") or EXPORTED_PRECISION
    if precision != EXPORTED_PRECISION:
        raise ConfigError(
            f"run {Path(run.run_dir).name} was trained on vectors computed at --precision "
            f"{precision}, and an exported model runs its backbone in {EXPORTED_PRECISION}, "
            "whose outputs differ from those vectors. Re-extract with --precision float32 and "
            "fit again to export, or score new files with predict, which runs the same "
            f"{precision} extractor.")


def _assemble(keras, spec, features, run, affine, sample_shape, clips_mean, l2, float16):
    features.trainable = False
    inputs = keras.Input(shape=sample_shape, name="rgb")
    x = apply_preprocessing(inputs, affine)
    x = features(x, training=False)
    if clips_mean:
        # One call = the clips of one video (the batch axis), averaged as extract does. Not
        # TimeDistributed over a clips axis: in Keras 3.15 its traced path for a clip count
        # unknown at trace time maps over the batch size instead (model.predict retraces
        # that way for the second clip count it sees), giving wrong probabilities.
        x = keras.ops.mean(x, axis=0, keepdims=True)
        if l2:
            x = keras.layers.UnitNormalization(name="l2_normalize")(x)
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
                  + ("the clips of ONE video: clips x " + " x ".join(map(str, sample_shape))
                     + "; output 1 x classes (the mean of the clips' features, as extract "
                     "stores it). Call model(clips) or model.predict(clips, "
                     "batch_size=len(clips)): a smaller batch_size averages each batch apart."
                     if clips_mean else "batch x " + " x ".join(map(str, sample_shape)))),
        # The reader's own record, once: an image policy (squash) or a clip's resize and crop.
        "resize_outside_the_model": {"policy": reader.get("resize") or eo.get("resize"),
                                     **{k: v for k, v in reader.items() if k != "resize"}},
        "preprocessing_inside": describe_affine(*affine),
        "backbone": spec.name, "layer": eo["layer"], "pooling": eo.get("pooling"),
        "precision": run.provenance.get("precision") or EXPORTED_PRECISION,
        "vector_key": run.provenance.get("vector_key"),
        "weights": run.provenance.get("weights_label", run.provenance.get("weights")),
        "output": "probabilities, one column per class in class_names order",
        "class_names": run.class_names,
        "run": str(Path(run.run_dir).resolve()),
    }


def _self_check(keras, path, preprocess, features, run, sample_shape, clips_mean, eo) -> float:
    """Max |exported - pipeline| on a random input; raises when they disagree."""
    rng = np.random.default_rng(1)
    shape = (3,) + sample_shape  # three clips of one video, or three images
    raw = rng.integers(0, 256, size=shape).astype(np.float32)
    pre = np.asarray(preprocess(raw.copy()), dtype=np.float32)
    if clips_mean:
        feats = np.asarray(features.predict(pre, verbose=0)).mean(axis=0, keepdims=True)
        if eo.get("l2_normalize"):
            feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    else:
        feats = np.asarray(features.predict(pre, verbose=0))
    if eo.get("dtype") == "float16":
        feats = feats.astype(np.float16).astype(np.float32)
    expected = run.predict_proba(feats)
    loaded = keras.saving.load_model(path, safe_mode=True)
    got = np.asarray(loaded.predict(raw, batch_size=len(raw), verbose=0), dtype=np.float64)
    error = float(np.abs(got - expected).max())
    if error > 1e-4:
        raise BackboneError(f"the exported model disagrees with the pipeline by {error:.2e} on "
                            f"a random input ({path}); please report this with the run folder.")
    return error
