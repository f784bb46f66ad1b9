"""The forward pass of stage one: decoded inputs -> padded batches -> backbone -> journal.

Decoding overlaps the model: worker threads (any reader; clips stream a few windows at a time)
or, for still images on many-core machines, worker processes writing into shared memory
(`decode_pool.py`). Every batch has the same shape (the last one is zero-padded), so compiled
backends (XLA, OpenVINO) trace the model once. Finished samples are journaled every
PIPELINE_JOURNAL_ROWS samples (an environment variable, 256 by default) or 5 seconds, also
while a video's clips are spread over several batches: the journal holds only finished
samples, and a sample cut by a kill is extracted again whole. Each row's vector depends on its
own input only (inference mode, fixed batch shape), so a resumed run equals an uninterrupted
one although its batches are cut elsewhere (tested to 1e-6).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

import numpy as np

from pipeline.config import environment_value
from pipeline.extract import journal
from pipeline.errors import ConfigError, EngineError, PipelineError
from pipeline.extract.prefetch import OrderedPrefetcher
from pipeline.extract.engines import ENGINES, get_engine
from pipeline.extract.decode_pool import ProcessBatchFeeder, ProcessChunkFeeder

DECODERS = ("auto", "threads", "processes")


class _Runner:
    """Owns the model, the journal writer, the progress bar and the steady-state clock."""

    def __init__(self, todo, spec, reader, config, parts_dir, progress, prepared=None,
                 model=None):
        from tqdm import tqdm

        self.todo, self.spec, self.reader, self.config = todo, spec, reader, config
        self.journal_rows = environment_value("PIPELINE_JOURNAL_ROWS")  # before the model
        self.host_preprocess = getattr(reader, "preprocess", None)
        self.batch_size = config.batch_size
        # A cluster actor passes the model it built once.
        self.model = model if model is not None else build_model(spec, reader, config, prepared)
        self.feature_shape = getattr(self.model, "feature_shape", None) or \
            tuple(int(d) for d in self.model.output.shape[1:])
        self.input_shape = tuple(spec.input_shape_for(config.input_size, config.frames))
        self.writer = journal.PartWriter(parts_dir)
        self.last_flush = time.monotonic()
        self.bar = tqdm(total=len(todo), unit="file", disable=not progress, dynamic_ncols=True,
                        desc=f"extract {spec.name}")
        self.done = 0
        # Steady-state clock: model inputs (images or clips) run after the first batch, over
        # the time from the end of the first batch (build and compile excluded) to the last.
        self.t0 = self.t_last = None
        self.inputs_after_first = 0
        self.inputs = 0  # real (not padding) model inputs: images, or clips

    def predict(self, batch: np.ndarray, n_real: int) -> np.ndarray:
        self.inputs += n_real
        self.bar.set_postfix({self.reader.unit: self.inputs}, refresh=False)
        if self.t0 is None:
            with _engine_guard(self.spec, "run"):  # the first call compiles: bad ops show here
                feats = np.asarray(self.model.predict_on_batch(batch))
            self.t0 = self.t_last = time.perf_counter()
            return feats
        feats = np.asarray(self.model.predict_on_batch(batch))
        self.t_last = time.perf_counter()
        self.inputs_after_first += n_real
        return feats

    def emit(self, index: int, clips: list) -> None:
        """Writes one finished sample: the rows its reader makes of its outputs (one per clip,
        or their mean)."""
        sample = self.todo[index]
        if not clips:
            return self.fail(index, "no frames could be decoded")
        rows = self.reader.aggregate(np.stack(clips).astype(np.float32))
        self.writer.add(sample, rows, range(len(rows)))
        self._advance()

    def fail(self, index: int, reason: str) -> None:
        self.writer.add_failure(self.todo[index], reason)
        self._advance()

    def _advance(self) -> None:
        self.done += 1  # counted here: a disabled tqdm bar does not count
        self.bar.update(1)

    def publish_if_due(self) -> None:
        """Publishes the finished samples every `journal_rows` samples or 5 seconds: at most
        that much work is lost to a kill (fewer rows for tests and very slow backbones)."""
        if self.writer.pending >= self.journal_rows or time.monotonic() - self.last_flush > 5:
            self.writer.flush()
            self.last_flush = time.monotonic()

    def close(self) -> tuple:
        self.writer.flush()
        self.bar.close()
        elapsed = (self.t_last - self.t0) if self.t0 is not None else 0.0
        rate = self.inputs_after_first / elapsed if elapsed > 0 else 0.0  # 0: one batch only
        return self.feature_shape, rate, self.inputs


def build_model(spec, reader, config, prepared=None):
    """The frozen feature model for these settings (a cluster actor builds it once), made by
    the engine of `config.engine`; `prepared` is what that engine prepared on the driver."""
    with _engine_guard(spec, "build"):
        return get_engine(config.engine).build_model(spec, reader, config, prepared)


def extract_into_journal(todo, spec, reader, config, parts_dir, progress, prepared=None,
                         model=None) -> tuple:
    """Runs the backbone over `todo`, writing finished samples to part files as it goes.

    Returns:
        (feature_shape, steady_rate, n_inputs): steady_rate is model inputs (images, or clips)
        per second after the first batch, so model building and tracing do not hide whether
        decoding keeps up (0.0 when everything fit in one batch); n_inputs counts them all.
        `prepared`: what the engine prepared on the driver (the OpenVINO IR to run).
        `model`: one made by `build_model` for the same settings (default: built here).
    """
    runner = _Runner(todo, spec, reader, config, parts_dir, progress, prepared, model)
    workers = config.workers or max(2, min(32, os.cpu_count() or 2))  # one per core
    mode = _decode_mode(config.decode, reader, runner)
    try:
        if mode == "processes" and reader.process_decode == "batches":
            _feed_from_processes(runner, reader, workers)
        else:
            _feed_chunks(runner, reader, workers, processes=mode == "processes")
    except (PipelineError, KeyboardInterrupt):
        runner.writer.flush()  # a clean stop keeps every finished sample for the next run
        raise
    return runner.close()


def _decode_mode(decode: str, reader, runner) -> str:
    """threads or processes (into batches or whole files: the reader's `process_decode`).

    Measured: threads keep a 2-core CPU's forward pass fed; from ~8 cores (GPU hosts) up,
    Pillow in threads plateaus on the GIL and processes win (decode_pool.py). `auto` uses
    processes for still images only: a clip worker holds a whole file's clips at once, which
    only a user who knows their clips are short should ask for (--decode processes).
    """
    if decode not in DECODERS:
        raise ConfigError(f"decode must be one of {', '.join(DECODERS)}; received: {decode!r}")
    if decode == "processes" and runner.host_preprocess is not None:
        raise ConfigError("--decode processes cannot carry --mean-file preprocessing to worker "
                          "processes; use --decode threads")
    if decode == "processes":
        return "processes"
    if decode == "auto" and reader.auto_processes and runner.host_preprocess is None \
            and (os.cpu_count() or 1) >= 8:
        return "processes"
    return "threads"


def _feed_from_processes(runner: _Runner, reader, workers: int) -> None:
    feeder = ProcessBatchFeeder(reader, [s.path for s in runner.todo], runner.batch_size, workers)
    for batch, slots, failures in feeder:
        for index, reason in failures:
            runner.fail(index, reason)
        if slots:
            feats = runner.predict(batch, len(slots))
            for row, index in enumerate(slots):
                runner.emit(index, [feats[row]])
        runner.publish_if_due()


def _feed_chunks(runner: _Runner, reader, workers: int, processes: bool = False) -> None:
    """Packs chunks of any reader into batches; decoding in threads (or processes, for clips)."""
    shape, pre = runner.input_shape, runner.host_preprocess
    batch = np.zeros((runner.batch_size, *shape), dtype=np.float32 if pre else np.uint8)
    owners: list[int] = []  # sample index of each filled batch row
    outputs: dict[int, list] = {}  # sample index -> per-clip features so far
    expected: dict[int, int] = {}  # sample index -> inputs it sent (known once it ended)

    def chunks(sample):
        for chunk in reader.read(sample.path):
            if tuple(chunk.shape[1:]) != shape:  # a reader bug, not bad input
                raise RuntimeError(f"reader gave chunk {chunk.shape}, expected (k, *{shape})")
            yield np.asarray(pre(chunk.astype(np.float32)), dtype=np.float32) if pre else chunk

    def run_batch():
        feats = runner.predict(batch, len(owners))
        for row, owner in enumerate(owners):
            outputs.setdefault(owner, []).append(feats[row])
        owners.clear()

    def finish_ready():
        for index in sorted(i for i, n in expected.items() if len(outputs.get(i, [])) == n):
            del expected[index]
            runner.emit(index, outputs.pop(index, []))

    if processes:
        feed = ProcessChunkFeeder(runner.todo, reader, workers)
    else:
        feed = OrderedPrefetcher(runner.todo, chunks, workers=workers)
    sent = 0
    for index, event, payload in feed:
        if event == "chunk":
            for item in payload:
                batch[len(owners)] = item
                owners.append(index)
                sent += 1
                if len(owners) == runner.batch_size:
                    run_batch()
                    finish_ready()
                    runner.publish_if_due()
            continue
        if event == "end":
            expected[index] = sent
        else:  # a decode failure: forget whatever this sample had already sent
            keep = [row for row, owner in enumerate(owners) if owner != index]
            batch[:len(keep)] = batch[keep]
            owners[:] = [owners[row] for row in keep]
            outputs.pop(index, None)
            runner.fail(index, payload)
        sent = 0
        finish_ready()
        runner.publish_if_due()
    if owners:
        batch[len(owners):] = 0
        run_batch()
    finish_ready()


@contextmanager
def _engine_guard(spec, what: str):
    """On a Keras backend other than the reference engine's, a model it cannot build or run is
    a one-line EngineError."""
    import keras

    backend = keras.backend.backend()
    try:
        yield
    except PipelineError:
        raise
    except Exception as exc:
        if backend in ENGINES and ENGINES[backend].reference:
            raise  # the reference engine: a failure here is a bug, keep the traceback
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise EngineError(f"engine '{backend}' cannot {what} {spec.name}: {first}; "
                          "use --engine tensorflow") from None
