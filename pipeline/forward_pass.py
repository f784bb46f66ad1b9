"""The forward pass of stage one: decoded chunks -> padded batches -> backbone -> journal.

Decoding runs in worker threads (`OrderedPrefetcher`) while this thread runs the model, so I/O
hides behind compute. Every batch has the same shape (the last one is zero-padded), so a
compiled backend (XLA, OpenVINO) traces the model once.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

import numpy as np

from pipeline import journal
from pipeline.errors import EngineError, PipelineError
from pipeline.prefetch import OrderedPrefetcher

# Finished samples are journaled every JOURNAL_ROWS samples or 5 seconds: at most that much work
# is lost to a kill. Tunable for tests and for very slow backbones.
JOURNAL_ROWS = int(os.environ.get("PIPELINE_JOURNAL_ROWS", "256"))


def extract_into_journal(todo, spec, reader, opts, parts_dir, clip_rows, progress) -> tuple:
    """Runs the backbone over `todo`, writing finished samples to part files as it goes.

    Returns:
        (feature_shape, steady_rate): the rate counts samples finished after the first batch,
        so model building and tracing do not hide whether decoding keeps up.
    """
    from tqdm import tqdm

    from pipeline.backbones.feature_model import build_feature_model

    # A reader whose options change the preprocessing (C3D's --mean-file) preprocesses on the
    # host; otherwise uint8 pixels go to the model, which preprocesses them on the device.
    host_preprocess = getattr(reader, "preprocess", None)
    with _engine_guard(spec, "build"):
        model = build_feature_model(spec, opts["weights"], opts["layer"], opts["pooling"],
                                    opts.get("input_size"), opts.get("precision") or "float32",
                                    raw_input=host_preprocess is None)
    feature_shape = tuple(int(d) for d in model.output.shape[1:])
    batch_size = int(opts.get("batch_size") or 32)
    input_shape = spec.input_shape_for(opts.get("input_size"))
    batch = np.zeros((batch_size, *input_shape),
                     dtype=np.float32 if host_preprocess else np.uint8)
    owners: list[int] = []  # sample index of each filled batch slot
    outputs: dict[int, list] = {}  # sample index -> per-clip feature arrays
    expected: dict[int, int] = {}  # sample index -> inputs sent (known once its end arrives)
    writer = journal.PartWriter(parts_dir)
    last_flush = time.monotonic()
    unit = "clip-file" if spec.kind == "clip" else "img"
    bar = tqdm(total=len(todo), unit=unit, disable=not progress, dynamic_ncols=True,
               desc=f"extract {spec.name}")

    def preprocessed(sample):
        for chunk in reader.read(sample.path):
            if tuple(chunk.shape[1:]) != tuple(input_shape):  # a reader bug, not bad input
                raise RuntimeError(f"reader gave chunk {chunk.shape}, expected (k, *{input_shape})")
            yield np.asarray(host_preprocess(chunk.astype(np.float32)), dtype=np.float32) \
                if host_preprocess else chunk

    steady = {"t0": None, "done0": 0, "done": 0}

    def advance():
        steady["done"] += 1  # counted here: a disabled tqdm bar does not count
        bar.update(1)

    def run_batch():
        nonlocal owners
        if not owners:
            return
        if steady["t0"] is None:
            with _engine_guard(spec, "run"):  # the first call compiles: unsupported ops show here
                feats = np.asarray(model.predict_on_batch(batch))
        else:
            feats = np.asarray(model.predict_on_batch(batch))  # padded: one compiled shape
        if steady["t0"] is None:
            steady["t0"], steady["done0"] = time.perf_counter(), steady["done"]
        for slot, owner in enumerate(owners):
            outputs.setdefault(owner, []).append(feats[slot])
        owners = []

    def finish_ready():
        for index in sorted(i for i, n in expected.items() if len(outputs.get(i, [])) == n):
            sample, clips = todo[index], outputs.pop(index, [])
            del expected[index]
            if not clips:
                writer.add_failure(sample, "no frames could be decoded")
                advance()
                continue
            rows = np.stack(clips).astype(np.float32)
            if clip_rows:
                writer.add(sample, rows, range(len(rows)))
            else:
                row = rows.mean(axis=0, keepdims=True)
                if opts.get("l2_normalize"):
                    row /= max(float(np.linalg.norm(row)), 1e-12)
                writer.add(sample, row, [0])
            advance()

    workers = int(opts.get("workers") or max(2, min(32, os.cpu_count() or 2)))  # one per core
    prefetch = OrderedPrefetcher(todo, preprocessed, workers=workers)
    sent = 0
    for index, kind, payload in prefetch:
        if kind == "chunk":
            for item in payload:
                batch[len(owners)] = item
                owners.append(index)
                sent += 1
                if len(owners) == batch_size:
                    run_batch()
                    finish_ready()
            continue
        if kind == "end":
            expected[index] = sent
        else:  # a decode failure: forget whatever this sample had already sent
            keep = [slot for slot, owner in enumerate(owners) if owner != index]
            batch[:len(keep)] = batch[keep]
            owners = [owners[slot] for slot in keep]
            outputs.pop(index, None)
            writer.add_failure(todo[index], payload)
            advance()
        sent = 0
        finish_ready()
        # Flush only where a batch ends on a sample boundary, so a resumed run forms the
        # same batches as an uninterrupted one (and gives bit-identical vectors).
        if not owners and not outputs and not expected and \
                (writer.pending >= JOURNAL_ROWS or time.monotonic() - last_flush > 5):
            writer.flush()
            last_flush = time.monotonic()
    if owners:
        batch[len(owners):] = 0
        run_batch()
    finish_ready()
    writer.flush()
    bar.close()
    elapsed = time.perf_counter() - steady["t0"] if steady["t0"] is not None else 0.0
    rate = (steady["done"] - steady["done0"]) / elapsed if elapsed > 0 else 0.0
    return feature_shape, rate


@contextmanager
def _engine_guard(spec, what: str):
    """On a non-TensorFlow engine, a model it cannot build or run is a one-line EngineError."""
    import keras

    backend = keras.backend.backend()
    try:
        yield
    except PipelineError:
        raise
    except Exception as exc:
        if backend == "tensorflow":
            raise  # the reference engine: a failure here is a bug, keep the traceback
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise EngineError(f"engine '{backend}' cannot {what} {spec.name}: {first}; "
                          "use --engine tensorflow") from None
