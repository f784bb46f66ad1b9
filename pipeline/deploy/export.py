"""Export a run as one artifact: raw decoded RGB -> preprocessing -> frozen backbone -> head.

The artifact is a Keras model (`--format keras`, the default) or what Keras' own `Model.export`
makes of it (ONNX, OpenVINO IR, LiteRT, a TensorFlow SavedModel; pipeline/deploy/formats.py);
a scikit-learn grid-search winner is joined behind the backbone's ONNX graph
(pipeline/deploy/sklearn_onnx.py). Every artifact is loaded back in its own runtime and compared
with predict before it is moved into place (pipeline/deploy/parity.py).

The Keras model is made of built-in layers only, so `keras.saving.load_model(path,
safe_mode=True)` loads it without this package; preprocessing becomes frozen layers
(pipeline/deploy/frozen_preprocessing.py).

Decoding and resizing stay outside the model (they depend on the file type); its model.json
(`<stem>.<format>.json`, e.g. `model.keras.json`, beside it) states the input size and the
resize policy the training vectors used, and lists the files export wrote with their sha256:
a later export to the same path replaces exactly those and refuses anything else there.

Usage:
    from pipeline.deploy.export import export_model
    path = export_model("cache/runs/<run>", {"format": "onnx"})
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from pipeline.deploy.frozen_preprocessing import (affine_preprocessing, apply_preprocessing,
                                                  clip_preprocessing, describe_affine)
from pipeline.deploy.options import ExportConfig
from pipeline.deploy.parity import (check_parity, check_store_rows, parity_inputs,
                                    pipeline_features)
from pipeline.errors import BackboneError, ConfigError, OutputError
from pipeline.outputs import Scratch, check_writable_folder, write_json
from pipeline.deploy.prediction import load_run, reuse_extract_options
from pipeline.deploy.formats import (check_earlier_export, contract_path, get_format,
                                     written_files)
from pipeline.extract.backbones import get_backbone
# Through the module, so a builder replaced at run time (as tests do) is the one called.
import pipeline.extract.backbones.feature_model as feature_model
from pipeline.extract.sources import create_reader
from pipeline.deploy.sklearn_onnx import convert_pipeline, join_behind
from pipeline.search.io import load_best_model

# The backbone inside an exported model runs in float32, so only float32 vectors are its own.
EXPORTED_PRECISION = "float32"


def _best_model_name(run_dir) -> str:
    """`rbf_svm (family rbf_svm)` from a grid-search sidecar, for messages."""
    try:
        sidecar = json.loads((Path(run_dir) / "best_model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "not a Keras model"
    return f"{sidecar.get('model', '?')} (family {sidecar.get('family', '?')})"


def export_model(run_dir, options=None, echo=print) -> Path:
    """Builds, checks and writes the end-to-end artifact of a run in one format.

    Args:
        run_dir: a fit-head run folder, or a grid-search one (a scikit-learn winner exports to
            ONNX only).
        options: an `ExportConfig` or a mapping of its options: `format` (keras, onnx,
            openvino, litert, saved_model), `out` (default RUN_DIR/export/model.keras, or
            RUN_DIR/export/FORMAT/model.EXT), `check` (the parity check in the format's own
            runtime), `calibrate` (False: raw softmax), `weights` / `mean_file` when moved.
        echo: where progress lines go.

    Returns:
        Path of the artifact; its model.json (`formats.contract_path`) lies beside it.
        Everything is written in a scratch folder first and moved into place only after the
        parity check passed.

    Raises:
        ConfigError: the format's packages are missing, the run's best model cannot be
            expressed in that format, or its vectors were computed at a reduced precision.
        BackboneError: preprocessing is not a per-pixel affine map, or the artifact differs
            from predict by more than the bound.
        WeightsError, StoreError: the backbone weights or provenance cannot be reproduced.
    """
    cfg = ExportConfig.from_mapping(options).replace(run_dir=str(run_dir))
    fmt = get_format(cfg.format)
    fmt.check_available()  # before any work: a missing converter is refused up front
    run = load_run(run_dir, calibrate=cfg.calibrate)
    out = _check_output(Path(cfg.out) if cfg.out else None, Path(run_dir), fmt)
    if run.keras_head is None and not fmt.takes_sklearn:
        raise ConfigError(
            f"export --format {fmt.name} joins the backbone to a Keras model, and the best model "
            f"of grid-search run {Path(run_dir).name} is {_best_model_name(run_dir)}, which has "
            "no exact Keras form. Only fit-head runs and grid-search runs whose best model is "
            "the Keras head, logistic regression or a linear SVM export to this format; a "
            "scikit-learn winner exports with --format onnx, and predict works with every run.")
    _refuse_reduced_precision(run)
    eo = reuse_extract_options(run_dir, run.info, cfg, "export")
    spec = get_backbone(eo["backbone"])
    sample_shape = tuple(spec.input_shape_for(eo.get("input_size"), eo.get("frames")))
    preprocess = clip_preprocessing(spec, eo, sample_shape, run.provenance)
    affine = affine_preprocessing(preprocess, sample_shape)
    if affine is None:
        raise BackboneError(f"backbone {spec.name}'s preprocessing ({spec.preprocess_name}) is "
                            "not a per-pixel affine map of RGB, so built-in Keras layers cannot "
                            "express it; predict with `run_pipeline.py predict` instead.")
    features = feature_model.build_feature_model(spec, eo["weights"], eo["layer"],
                                                 eo.get("pooling") or "avg", eo.get("input_size"),
                                                 frames=eo.get("frames"))
    # A reader pooling a file's inputs into one row (a clip reader's mean of its clips, a frame
    # reader's mean or max over time): the exported model pools its inputs' vectors the same way.
    reader = create_reader(spec, sample_shape, eo)
    pool = _rows_pool(reader)
    inputs = parity_inputs(run, reader, sample_shape, one_call_per_file=pool is not None)
    batches = inputs.batches()

    def reference(batch):
        return run.predict_proba(pipeline_features(batch, preprocess, features, pool, eo))

    trunk = _Trunk(spec, features, affine, sample_shape, pool, bool(eo.get("l2_normalize")),
                   eo.get("dtype") == "float16", fmt.input_dtype)
    # Before anything is written: the artifact's own vectors are the rows the head learnt.
    store_check = check_store_rows(trunk.vectors(), inputs, eo.get("dtype") == "float16") \
        if cfg.check else None
    with Scratch(out.parent, "export") as scratch:
        staged = scratch / out.name
        if run.keras_head is None:  # a scikit-learn winner: ONNX behind the backbone's ONNX
            _write_sklearn_onnx(run, trunk, fmt, staged, scratch,
                                np.concatenate([pipeline_features(b, preprocess, features,
                                                                  pool, eo)
                                                for b in batches]))
        else:
            fmt.write(trunk.with_head(run), staged)
        parity = None
        if cfg.check:
            parity = {**check_parity(fmt.load(staged), reference, batches, inputs.source, fmt),
                      "store": store_check}
            echo(f"check: {fmt.name} model in {fmt.runtime} vs predict on {inputs.source}: "
                 f"max |difference| {parity['max_abs_difference']:.2e}; its vectors vs the "
                 f"store's rows: {_figure(store_check)}")
        contract = _contract(spec, eo, run, affine, sample_shape, pool, reader.unit, out, fmt,
                             parity)
        contract.update(written_files(fmt, staged))  # what a later export may replace
        write_json(contract_path(staged, fmt.name), contract)
        _publish(fmt, staged, out, scratch)
    echo(f"exported {spec.name} + {_head_name(run)} ({len(run.class_names)} classes) as "
         f"{fmt.name}, input {contract['input_shape']} {fmt.input_dtype}")
    return out


def _figure(store_check) -> str:
    return (f"max |difference| {store_check['max_abs_difference']:.2e}"
            if isinstance(store_check, dict) else store_check)


def _head_name(run) -> str:
    return "head" if run.keras_head is not None else _best_model_name(run.run_dir)


def _write_sklearn_onnx(run, trunk, fmt, staged: Path, scratch: Path, sample) -> None:
    """Backbone graph (uint8 -> vectors) joined with the converted scikit-learn pipeline."""
    best = load_best_model(run.run_dir)
    head = convert_pipeline(best, sample)  # refuses what skl2onnx cannot take, by family
    backbone = scratch / "backbone.onnx"
    fmt.write(trunk.without_head(), backbone)
    join_behind(backbone, head, staged)
    backbone.unlink()


def _publish(fmt, staged: Path, out: Path, scratch: Path) -> None:
    """Moves the checked artifact and its model.json into place, model.json last. What is at
    `out` is checked again first (a file may have been added while the export ran); an earlier
    export's folder is moved into the scratch folder, which goes with it."""
    older = check_earlier_export(fmt, out)
    for part in fmt.files(staged):
        final = out.parent / part.name
        if final.is_dir() and not final.is_symlink():
            os.replace(final, scratch / f"replaced-{part.name}")
        os.replace(part, final)
    os.replace(contract_path(staged, fmt.name), contract_path(out, fmt.name))
    for path in older:
        path.unlink(missing_ok=True)


def _check_output(out: Path | None, run_dir: Path, fmt) -> Path:
    """The artifact path to write (default RUN_DIR/export/model.keras, or
    RUN_DIR/export/FORMAT/model.EXT), checked before any work: new files, or exactly those an
    earlier export recorded, in a writable folder."""
    suffix = Path(fmt.file_name).suffix
    if out is not None and out.suffix != suffix:
        want = f"end in {suffix}" if suffix else "have no suffix (it is a folder)"
        raise ConfigError(f"--out for --format {fmt.name} must {want}; received: {out}")
    path = Path(os.path.abspath(out or run_dir / "export" / fmt.default_folder / fmt.file_name))
    here = Path.cwd().resolve()
    if path.resolve() == here or path.resolve() in here.parents:
        raise OutputError(f"--out {out} is the folder you are in (or holds it), and export "
                          f"writes its artifact there; pass a new path, e.g. --out "
                          f"{fmt.file_name if suffix else 'exported_model'}.")
    try:
        check_earlier_export(fmt, path)
        check_writable_folder(path.parent, "--out")
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


def _rows_pool(reader) -> str | None:
    """mean or max when the reader pools a file's model inputs into one row, else None."""
    pool = getattr(reader, "rows_pool", None)
    return pool if pool is not None else ("mean" if reader.mean_rows else None)


class _Trunk:
    """Preprocessing + frozen backbone (+ the store's clip averaging and rounding), in Keras."""

    def __init__(self, spec, features, affine, sample_shape, pool, l2, float16, input_dtype):
        self.spec, self.features, self.affine = spec, features, affine
        self.sample_shape, self.pool, self.l2, self.float16 = sample_shape, pool, l2, float16
        self.input_dtype = input_dtype

    def _vectors(self, keras, rows: bool):
        self.features.trainable = False
        inputs = keras.Input(shape=self.sample_shape, name="rgb", dtype=self.input_dtype)
        x = inputs if self.input_dtype == "float32" else keras.ops.cast(inputs, "float32")
        x = apply_preprocessing(x, self.affine)
        x = self.features(x, training=False)
        if rows and len(x.shape) > 2:  # a scikit-learn model reads each vector as one row
            x = keras.layers.Flatten(name="as_rows")(x)
        if self.pool is not None:
            # One call = the clips (or sampled frames) of one video on the batch axis, pooled
            # (mean or max) as extract does. Not
            # TimeDistributed over a clips axis: in Keras 3.15 its traced path for a clip count
            # unknown at trace time maps over the batch size instead (model.predict retraces
            # that way for the second clip count it sees), giving wrong probabilities.
            reduce = keras.ops.max if self.pool == "max" else keras.ops.mean
            x = reduce(x, axis=0, keepdims=True)
            if self.l2:
                x = keras.layers.UnitNormalization(name="l2_normalize")(x)
        if self.float16:  # the store kept float16 vectors; round the same way
            x = keras.layers.Identity(dtype="float16", name="as_stored_float16")(x)
            x = keras.layers.Identity(dtype="float32", name="back_to_float32")(x)
        return inputs, x

    def without_head(self):
        """uint8 (or float32) pixels -> the vectors the store holds."""
        import keras

        inputs, x = self._vectors(keras, rows=True)
        return keras.Model(inputs, x, name=f"{self.spec.name}_vectors")

    def vectors(self):
        """One call's inputs (a file's) -> the trunk's vectors, in Keras (the export's check)."""
        model = self.without_head()
        return lambda x: model.predict(x, batch_size=len(x), verbose=0)

    def with_head(self, run):
        """Pixels -> probabilities, the run's Keras head on top."""
        import keras

        inputs, x = self._vectors(keras, rows=False)
        probs = run.keras_head(x, training=False)
        if probs.shape[-1] == 1:  # one sigmoid unit: P(class 1) -> [P(class 0), P(class 1)]
            other = keras.layers.Rescaling(scale=-1.0, offset=1.0, name="one_minus_p")(probs)
            probs = keras.layers.Concatenate(name="probabilities")([other, probs])
        return keras.Model(inputs, probs, name=f"{self.spec.name}_end_to_end")


def _contract(spec, eo, run, affine, sample_shape, pool, unit, out, fmt, parity) -> dict:
    reader = run.provenance.get("reader") or {}
    values = ("float32 RGB values in 0..255" if fmt.input_dtype == "float32" else
              "uint8 RGB values")
    return {
        "model": out.name,
        "format": fmt.name,
        "runtime": fmt.runtime,
        "load": fmt.describe_load(out.name),
        "input_dtype": fmt.input_dtype,
        "input_shape": ([unit] if pool else []) + list(sample_shape),
        "input": (values + " (decoded frames, channels last), "
                  + (f"the {unit} of ONE video: {unit} x " + " x ".join(map(str, sample_shape))
                     + f"; output 1 x classes (the {pool} of the {unit}' features, as extract "
                     f"stores it). Pass all {unit} of a video in one call: a smaller batch "
                     "pools each batch apart."
                     if pool else "batch x " + " x ".join(map(str, sample_shape)))),
        # The reader's own record, once: an image policy (squash) or a clip's resize and crop.
        "resize_outside_the_model": {"policy": reader.get("resize") or eo.get("resize"),
                                     **{k: v for k, v in reader.items() if k != "resize"}},
        "preprocessing_inside": describe_affine(*affine),
        "backbone": spec.name, "layer": eo["layer"], "pooling": eo.get("pooling"),
        "head": _head_name(run),
        "precision": run.provenance.get("precision") or EXPORTED_PRECISION,
        "vector_key": run.provenance.get("vector_key"),
        "weights": run.provenance.get("weights_label", run.provenance.get("weights")),
        "output": "probabilities, one column per class in class_names order",
        "class_names": run.class_names,
        "parity": parity or "not checked (--no-check)",
        "run": str(Path(run.run_dir).resolve()),
    }
