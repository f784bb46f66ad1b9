"""The checks every export runs: the artifact in its own runtime against the pipeline, and
the artifact's own vectors against the rows the head was trained on.

The inputs are real: files of the run's own store, read by the run's own reader (so they are
exactly the uint8 arrays extract fed the backbone), plus one random batch so that a run whose
files are gone is still checked. Two comparisons:

- against predict: the artifact's probabilities, in its runtime, with what `predict` computes
  on the same arrays (the backbone's `preprocess_input`, the backbone, the store's rounding and
  pooling, the run's `predict_proba`). This proves the format conversion.
- against the store: the vectors of the artifact's own layers before the head (its frozen
  preprocessing, backbone and pooling, built in Keras) with each file's stored rows. This
  proves the artifact reproduces the vectors the head was trained on: a backbone whose code,
  plugin or weights changed since extraction fails here, whatever the first check says.

Each file is one call when the model pools a file's inputs into one row (a video's clips, or
the frames of a clip pooled by mean or max), so the pooling is checked clip by clip; a file
changed since extraction (its size:mtime stamp) is not used.

Usage:
    inputs = parity_inputs(run, reader, sample_shape, one_call_per_file=pool is not None)
    figures = check_parity(artifact_fn, reference_fn, inputs.batches(), inputs.source, fmt)
    figures["store"] = check_store_rows(vectors_fn, inputs, float16=False)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.deploy.run_files import run_store_path
from pipeline.errors import BackboneError, StoreError
from pipeline.extract.sources.discover import source_stamp
from pipeline.store.feature_store import open_store

# The artifact and the pipeline both compute in float32; they may differ by rounding only.
FLOAT32_BOUND = 1e-4
# A float16 store's rows are rounded to 11 significant bits: a float32 difference far below
# the bound can still land one float16 step (2**-10 of the value) away.
FLOAT16_STEP = 2.0 ** -10
MAX_FILES = 4  # files of the store read for the check (each video is one call)
CLIP_ROW = "#clip"  # a clip's or frame's row id: "<file>#clip<k>"


@dataclass
class ParityInputs:
    """Files of the run's store read again (each with its stored rows), and a random batch."""

    files: list = field(default_factory=list)    # ids of the files read again
    arrays: list = field(default_factory=list)   # per file: its uint8 model inputs
    stored: list = field(default_factory=list)   # per file: its stored rows, flattened
    random: np.ndarray | None = None
    one_call_per_file: bool = False  # the model pools a file's inputs into one row

    def batches(self) -> list:
        """Model inputs, one call each: a file per call when its inputs are pooled, else all
        the files in one batch; then the random batch."""
        calls = list(self.arrays) if self.one_call_per_file else \
            ([np.concatenate(self.arrays)] if self.arrays else [])
        return calls + [self.random]

    @property
    def source(self) -> str:
        return (f"{len(self.files)} file(s) of the run's store ({', '.join(self.files)}) read by "
                "its reader, and 3 random inputs" if self.files else
                "3 random inputs (the run's store or its files are not there any more)")


def parity_inputs(run, reader, sample_shape: tuple, one_call_per_file: bool,
                  max_files: int = MAX_FILES) -> ParityInputs:
    """Up to `max_files` files of the run's store, read by `reader`, with their stored rows
    (only files unchanged since extraction, of a store that still holds the run's vectors),
    and 3 random inputs."""
    inputs = ParityInputs(one_call_per_file=one_call_per_file)
    path = run_store_path(run.run_dir, run.info)
    try:
        store = open_store(path) if path else None
    except (StoreError, OSError):  # the store is damaged: the random batch still checks
        store = None
    if store is not None:
        with store:
            if store.key == run.info.get("store_key"):
                _read_files(store, reader, inputs, max_files, source_stamp)
    rng = np.random.default_rng(1)
    inputs.random = rng.integers(0, 256, size=(3, *sample_shape), dtype=np.uint8)
    return inputs


def _read_files(store, reader, inputs: ParityInputs, max_files: int, source_stamp) -> None:
    root = Path(store.provenance.get("data_root") or "")
    clip_rows = "clip_index" in store.file
    rows_of: dict = {}
    for row, (row_id, stamp) in enumerate(zip(store.column("ids").tolist(),
                                              store.column("stamps").tolist())):
        file = row_id.rsplit(CLIP_ROW, 1)[0] if clip_rows else row_id
        rows_of.setdefault(file, (stamp, []))[1].append(row)
    for file, (stamp, rows) in rows_of.items():
        if len(inputs.files) == max_files:
            break
        if not stamp or source_stamp(root / file) != stamp:
            continue  # changed (or gone) since extraction: its stored rows are of other pixels
        try:
            arrays = [np.asarray(a, np.uint8) for a in reader.read(root / file)]
        except Exception:  # a file that no longer decodes is skipped, as extract skips it
            continue
        if arrays:
            inputs.files.append(file)
            inputs.arrays.append(np.concatenate(arrays))
            stored = store.read_rows(np.asarray(rows, dtype=np.int64))
            inputs.stored.append(np.asarray(stored, np.float64).reshape(len(rows), -1))


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


def check_store_rows(vectors, inputs: ParityInputs, float16: bool) -> dict | str:
    """Max |artifact's vectors - stored rows| over the files read again; raises BackboneError
    above the bound (1e-4 times the largest stored value, when that is above 1).

    Args:
        vectors: one file's uint8 inputs -> the vectors of the artifact's own layers before
            the head (one row per stored row of the file).
        float16: the store keeps float16 rows (one float16 step is allowed on top).
    """
    if not inputs.files:
        return ("not compared: the run's store, or its files unchanged since extraction, are "
                "not there any more")
    error, scale, worst = 0.0, 1.0, inputs.files[0]
    for file, arrays, stored in zip(inputs.files, inputs.arrays, inputs.stored):
        got = np.asarray(vectors(arrays), dtype=np.float64)
        got = got.reshape(len(got), -1)
        if got.shape != stored.shape:
            raise BackboneError(f"the exported model's vectors of {file} have shape {got.shape} "
                                f"and the run's store holds {stored.shape} for it; nothing was "
                                "written.")
        difference = float(np.abs(got - stored).max())
        if difference > error:
            error, worst = difference, file
        scale = max(scale, float(np.abs(stored).max()))
    bound = scale * (FLOAT32_BOUND + (FLOAT16_STEP if float16 else 0.0))
    if not error <= bound:
        raise BackboneError(
            f"the exported model's vectors (its layers before the head) differ from the run's "
            f"store by {error:.2e} on {worst} (the bound is {bound:.1e}): the backbone built now "
            "is not the one that made the store (its code, a plugin or its weights changed); "
            "nothing was written. Restore that backbone, or extract and fit again with this one.")
    return {"compared": "the vectors of the artifact's own layers before the head (in Keras) "
                        "with the run's store rows of the same files",
            "files": list(inputs.files), "rows_compared": int(sum(len(s) for s in inputs.stored)),
            "max_abs_difference": error, "bound": bound}
