"""Predict with a run folder: raw images or clips in, class probabilities out.

New files go through the same extraction code as training (`run_extraction` with the options
recorded in the store's provenance, cache included), so the head only ever sees vectors made by
the backbone, layer, weights and preprocessing it was trained on.

Usage:
    from pipeline.deploy.prediction import predict
    csv_path = predict("cache/runs/flowers5-mobilenet-pooled-1a2b3c4d5e-head-20250101-120000",
                       "new_photos/")
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.errors import ConfigError, StoreError, WeightsError

# Provenance fields that change the vectors: a head and new vectors must agree on all of them.
VECTOR_FIELDS = ("backbone", "weights", "layer", "pooling", "input_shape", "preprocess", "reader",
                 "dtype", "aggregate", "l2_normalize")


@dataclass
class LoadedRun:
    """A run folder's model, whatever trained it (fit-head or grid-search)."""

    run_dir: Path
    kind: str
    info: dict
    class_names: list
    predict_proba: Callable[[np.ndarray], np.ndarray]
    keras_head: Any  # keras.Model from features to (n, K) or (n, 1) probabilities, or None

    @property
    def provenance(self) -> dict:
        return self.info.get("provenance") or {}


def read_run_info(run_dir) -> dict:
    """`run.json` of a run folder, with a clear error when it is not one."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no run.json); pass the folder that "
                          "fit-head or grid-search printed as its last line.")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); the run folder is damaged, "
                          "run fit-head again.") from None
    if info.get("kind") not in ("keras_head", "grid_search"):
        raise ConfigError(f"{path} has kind {info.get('kind')!r}; expected keras_head or "
                          "grid_search.")
    return info


def load_run(run_dir, provenance: dict | None = None, calibrate: bool = True) -> LoadedRun:
    """Loads a run folder's model.

    Args:
        run_dir: folder written by fit-head (`head.keras`) or grid-search.
        provenance: provenance of the vectors about to be scored; a grid-search model refuses
            vectors of another backbone, layer, pooling, size, preprocessing or weights.
        calibrate: keep the temperature fit-head folded into head.keras; False gives the raw
            softmax (`--no-calibrate`).

    Returns:
        A `LoadedRun` whose `predict_proba(features)` gives (n, K) probabilities.
    """
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    if info["kind"] == "grid_search":
        from pipeline.search.io import load_best_model

        best = load_best_model(run_dir, provenance=provenance)
        return LoadedRun(run_dir, "grid_search", info, list(best.class_names),
                         best.predict_proba, best.keras_head)
    import keras

    from pipeline.fit.heads import predict_proba

    path = run_dir / "head.keras"
    if not path.is_file():
        raise ConfigError(f"run folder {run_dir} has no head.keras; run fit-head again.")
    model = keras.saving.load_model(path, safe_mode=True)
    from pipeline.fit.calibration import read_temperature, scale_output_layer

    if not calibrate and read_temperature(run_dir):
        scale_output_layer(model, 1.0 / read_temperature(run_dir))
    return LoadedRun(run_dir, "keras_head", info, list(info["class_names"]),
                     lambda x: predict_proba(model, x), model)


def check_weights_unchanged(extract_options: dict, provenance: dict) -> None:
    """Refuses a weights file whose bytes differ from those the head was trained behind."""
    from pipeline.extract.backbones.weights import weights_identity

    if extract_options["weights"] == "none":
        # Random weights are seeded, so the same backend draws the same network again.
        from pipeline.extract.engines import active_backend

        drawn_on = (provenance.get("random_init") or {}).get("backend")
        if drawn_on and drawn_on == active_backend():
            return
        raise WeightsError(
            f"the run's vectors came from random weights (--weights none) drawn by the "
            f"{drawn_on or 'unknown'} backend, which this process ({active_backend()}) cannot "
            "draw again; run predict with KERAS_BACKEND set to that backend, or extract with "
            "--weights imagenet or a weights file and fit-head again.")
    now = weights_identity(extract_options["weights"])
    if now != provenance.get("weights"):
        raise WeightsError(
            f"weights {extract_options['weights']} are not the ones this head was trained with "
            f"(now {now[:19]}, trained with {str(provenance.get('weights'))[:19]}); restore the "
            "original file, or extract and fit-head again with the new weights.")


def extract_options_of(info: dict) -> dict:
    """The extract options recorded in a run's store provenance (needed to re-extract)."""
    options = (info.get("provenance") or {}).get("extract_options")
    if not options:
        raise StoreError("the run's store was not made by extract (its provenance has no "
                         "extract_options, e.g. a store written with write_store), so new files "
                         "cannot be turned into matching vectors; fit the head on an extracted "
                         "store.")
    return dict(options)


def mismatched_fields(trained: dict, new: dict) -> list[str]:
    """Vector-changing provenance fields on which two stores differ."""
    return [f for f in VECTOR_FIELDS if json.dumps(trained.get(f), sort_keys=True, default=str)
            != json.dumps(new.get(f), sort_keys=True, default=str)]


def predict(run_dir, data, options: dict | None = None, echo=print) -> Path:
    """Extracts `data` as the run's store was extracted, scores it, and writes a CSV.

    Args:
        run_dir: a fit-head or grid-search run folder.
        data: a folder (class folders or flat), one file, or a CSV manifest.
        options: `out` (CSV path), `cache_dir`, `batch_size`, `workers`, `progress`,
            `calibrate` (False: raw softmax, without the fitted temperature).
        echo: where progress lines go.

    Returns:
        Path of the CSV: id, [true_class,] predicted_class, p_<class> for each class.

    Raises:
        ConfigError, StoreError, WeightsError, DataError: see their messages.
    """
    from pipeline.fit import reports
    from pipeline.extract.run import run_extraction
    from pipeline.store.feature_store import open_store

    options = dict(options or {})
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    trained = info.get("provenance") or {}
    extract_opts = extract_options_of(info)
    check_weights_unchanged(extract_opts, trained)
    extract_opts.update(data=str(data), cache_dir=options.get("cache_dir") or "cache",
                        batch_size=options.get("batch_size") or 32,
                        workers=options.get("workers"))
    result = run_extraction(extract_opts, progress=options.get("progress", True), echo=echo,
                            require_labels=False)
    with open_store(result.path) as store:
        wrong = mismatched_fields(trained, store.provenance)
        if wrong:
            raise StoreError(f"new vectors differ from the training vectors in {', '.join(wrong)}"
                             f" (store {store.path.name}); extract them with the run's settings.")
        run = load_run(run_dir, provenance=store.provenance,
                       calibrate=options.get("calibrate", True))
        names = run.class_names
        probs = np.concatenate([run.predict_proba(x) for x, _ in
                                store.iter_batches(batch_size=4096)]) if len(store) else \
            np.zeros((0, len(names)))
        true = _true_labels(store, names)
        out = Path(options.get("out") or
                   run_dir / f"predictions-{store.provenance.get('data_name', 'data')}.csv")
        out.parent.mkdir(parents=True, exist_ok=True)
        reports.write_predictions(out, store.column("ids"), true, probs, names)
        failures = store.failures()
    if failures:
        echo(f"{len(failures)} file(s) could not be decoded and have no prediction, e.g. "
             f"{failures[0][0]}: {failures[0][1]}")
    echo(f"predicted {len(probs)} row(s) with {run.kind} {run_dir.name}")
    return out


def _true_labels(store, names: list) -> np.ndarray | None:
    """Labels of a labelled folder in the run's class order (-1 where unknown), else None."""
    labels = store.column("labels")
    if not len(labels) or (labels < 0).all():
        return None
    index = {name: i for i, name in enumerate(names)}
    mapped = [index.get(store.class_names[l], -1) if l >= 0 else -1 for l in labels.tolist()]
    return np.asarray(mapped, dtype=np.int64)


def read_predictions(path) -> dict:
    """`{id: probabilities}` from a predictions CSV (ours: fit-head's or predict's)."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    cols = [c for c in (rows[0].keys() if rows else []) if c.startswith("p_")]
    return {r["id"]: np.array([float(r[c]) for c in cols]) for r in rows}
