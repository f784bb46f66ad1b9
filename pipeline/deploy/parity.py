"""The parity check every export runs: the artifact in its own runtime against the pipeline.

The inputs are real: files of the run's own store, read by the run's own reader (so they are
exactly the uint8 arrays extract fed the backbone), plus one random batch so that a run whose
files are gone is still checked. The reference is what `predict` computes on the same arrays:
the backbone's `preprocess_input`, the backbone, the store's rounding and clip averaging, and
the run's `predict_proba` (a Keras head or a scikit-learn pipeline).

Usage:
    batches, source = parity_inputs(run, reader, sample_shape)
    figures = check_parity(artifact_fn, reference_fn, batches, source, fmt)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import BackboneError

# The artifact and the pipeline both compute in float32; they may differ by rounding only.
FLOAT32_BOUND = 1e-4
MAX_FILES = 4  # files of the store read for the check (each video is one call)


def parity_inputs(run, reader, sample_shape: tuple, max_files: int = MAX_FILES):
    """Batches of uint8 model inputs, and a sentence saying where they came from.

    Images: one batch of up to `max_files` of the store's files. Clips (`reader.mean_rows`):
    each video is one call (the model averages the clips of one video). Then one random batch.
    """
    from pipeline.store.feature_store import open_store

    from pipeline.deploy.run_files import locate_recorded_file

    batches, used = [], []
    try:  # also when the store moved together with the run folder, as predict finds it
        store_path = locate_recorded_file(str(run.info.get("store") or ""), run.run_dir, None,
                                          "store", "export")
        with open_store(store_path) as store:
            root = Path(store.provenance.get("data_root") or "")
            ids = list(dict.fromkeys(i.split("#", 1)[0] for i in store.column("ids").tolist()))
    except Exception:  # the store moved or is gone: the random batch still checks the model
        ids, root = [], Path()
    for sample_id in ids:
        if len(used) == max_files:
            break
        try:
            arrays = [np.asarray(a, np.uint8) for a in reader.read(root / sample_id)]
        except Exception:  # a file that no longer decodes is skipped, as extract skips it
            continue
        if arrays:
            used.append(sample_id)
            batches.append(np.concatenate(arrays))
    if batches and not reader.mean_rows:
        batches = [np.concatenate(batches)]
    rng = np.random.default_rng(1)
    batches.append(rng.integers(0, 256, size=(3, *sample_shape), dtype=np.uint8))
    source = (f"{len(used)} file(s) of the run's store ({', '.join(used)}) read by its reader, "
              "and 3 random inputs" if used else
              "3 random inputs (the run's store or its files are not there any more)")
    return batches, source


def pipeline_features(batch: np.ndarray, preprocess, features, pool: str | None, eo: dict):
    """The vectors extract stores for `batch` (one video's clips or frames pooled by `pool`,
    mean or max; or images when `pool` is None)."""
    pre = np.asarray(preprocess(np.asarray(batch, np.float32).copy()), dtype=np.float32)
    feats = np.asarray(features.predict(pre, batch_size=len(pre), verbose=0))
    feats = feats.reshape(len(feats), -1)
    if pool is not None:
        feats = (feats.max(axis=0, keepdims=True) if pool == "max" else
                 feats.mean(axis=0, keepdims=True))
        if eo.get("l2_normalize"):
            feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    if eo.get("dtype") == "float16":
        feats = feats.astype(np.float16).astype(np.float32)
    return feats


def check_parity(artifact, reference, batches, source: str, fmt) -> dict:
    """Max |artifact - reference| over `batches`; raises BackboneError above the bound.

    Args:
        artifact: the loaded artifact: uint8 batch -> probabilities (its own runtime).
        reference: uint8 batch -> the probabilities `predict` gives.
    """
    error, rows = 0.0, 0
    for batch in batches:
        try:
            got = np.asarray(artifact(batch), dtype=np.float64)
        except Exception as exc:  # the runtime itself failed on the artifact
            raise BackboneError(f"the exported {fmt.name} model fails in {fmt.runtime} "
                                f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
                                "nothing was written. Use another --format, or predict.") from None
        want = np.asarray(reference(batch), dtype=np.float64)
        if got.shape != want.shape:
            raise BackboneError(f"the exported {fmt.name} model returns shape {got.shape}, the "
                                f"pipeline {want.shape}; nothing was written.")
        error, rows = max(error, float(np.abs(got - want).max())), rows + len(want)
    if error > FLOAT32_BOUND:
        raise BackboneError(
            f"the exported {fmt.name} model differs from predict by {error:.2e} in {fmt.runtime} "
            f"(the bound is {FLOAT32_BOUND:.0e}) on {source}; nothing was written. Use another "
            "--format, or predict.")
    return {"runtime": fmt.runtime, "reference": "predict on the same inputs (preprocess_input, "
            "backbone, the run's model)", "inputs": source, "rows_compared": rows,
            "max_abs_difference": error, "bound": FLOAT32_BOUND}
