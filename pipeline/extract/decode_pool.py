"""Decoding in worker *processes*: still images straight into shared-memory batches, clips as
whole files. Bounded, and a worker that dies ends the run with a clear error.

Measured on a 16-core GPU machine, Pillow decoding in threads stopped scaling at ~1,450 images/s
(the GIL: Pillow's decode loop, EXIF handling and numpy glue hold it between C calls), while
one thread alone gave ~1,190. Processes scale with cores. Each worker writes its decoded uint8
image into a slot of a shared ring of batches, so the parent never copies or unpickles pixels:
a full batch is handed to the model as a view of shared memory.

Backpressure: only a fixed window of work is submitted ahead of the consumer (`depth` batches of
images; two files per worker for clips), so a slow model never lets decoded data pile up.
A worker killed by a signal, a segfault or the out-of-memory killer breaks the pool:
`concurrent.futures` notices at once and the run stops with a `ResourceError` (finished work
stays in the journal) instead of waiting forever for a result that will never come.

Workers start with `spawn`: the parent runs TensorFlow/JAX threads, which make `fork` unsafe.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import shared_memory

import numpy as np

from pipeline.errors import DecodeError, ResourceError
from pipeline import quiet_startup

_WORKER: dict = {}
CLIP_FILES_PER_WORKER = 2  # clip files submitted ahead per worker (each holds all its clips)


def _start_pool(processes: int, initializer, initargs) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                               initializer=initializer, initargs=initargs)


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Stops at once: queued work is cancelled and running decodes are not waited for."""
    # _processes is the executor's own table of workers; terminating them is the only way to
    # stop a long decode (a whole video) that is already running.
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def _worker_died() -> ResourceError:
    return ResourceError(
        "a decoding worker process died (killed by a signal, a crash in a decoder or the "
        "out-of-memory killer). Finished files are kept; run the same command again, or with "
        "--decode threads to find a file that crashes the decoder.")


class _Raise:
    """A worker's exception that must stop the run in the parent (it is not the file's fault)."""

    def __init__(self, exc: BaseException):
        self.exc = exc


def _outcome(exc: BaseException):
    """What a worker returns for a file it could not decode: a reason (its content: cached as
    the file's failure), or `_Raise` (the machine, or a bug in our code: never cached)."""
    if isinstance(exc, DecodeError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return _Raise(ResourceError("a decoding worker ran out of memory; pass fewer --workers"))
    return _Raise(exc)  # a ResourceError, or a bug (TypeError...): stop, with its traceback


def _raise_if_fatal(reason) -> None:
    if isinstance(reason, _Raise):
        raise reason.exc


def _quiet_worker() -> None:
    quiet_startup.install()  # a reader that imports TensorFlow stays quiet


def _init_worker(shm_name: str, shape: tuple, reader) -> None:
    _quiet_worker()
    shm = shared_memory.SharedMemory(name=shm_name)
    _WORKER.update(shm=shm, ring=np.ndarray(shape, dtype=np.uint8, buffer=shm.buf), reader=reader)


def _decode_into(tasks) -> list:
    """Decodes files into their slots; for each: None, why it could not be read, or an error."""
    out = []
    for slot, path in tasks:
        try:
            _WORKER["ring"][slot] = next(iter(_WORKER["reader"].read(path)))[0]
            out.append(None)
        except Exception as exc:  # sorted out by _outcome (Ctrl-C is not a file's failure)
            out.append(_outcome(exc))
    return out


class ProcessBatchFeeder:
    """Yields `(batch, slots, failures)` for consecutive blocks of `batch_size` samples.

    `batch` is a uint8 view (batch_size, H, W, 3) of shared memory, valid until the next item is
    asked for; `slots` lists the sample indices whose images fill rows 0..len-1 (failed samples
    are squeezed out, the rest of the rows are zero); `failures` lists (sample index, reason).
    At most `depth - 1` blocks are decoded ahead of the one being used.

    Raises:
        ResourceError: a worker died, or reading failed for a reason that is not the file's.
    """

    def __init__(self, reader, paths: list, batch_size: int, processes: int, depth: int = 4):
        self.paths, self.bs, self.depth = paths, batch_size, max(2, depth)
        self.processes = max(1, processes)
        self.shape = (self.depth * batch_size, *reader.input_shape)
        self.shm = shared_memory.SharedMemory(create=True, size=int(np.prod(self.shape)))
        self.ring = np.ndarray(self.shape, dtype=np.uint8, buffer=self.shm.buf)
        self.pool = _start_pool(self.processes, _init_worker, (self.shm.name, self.shape, reader))

    def _submit(self, block: int):
        start = block * self.bs
        base = (block % self.depth) * self.bs
        tasks = [(base + j, p) for j, p in enumerate(self.paths[start:start + self.bs])]
        step = max(1, -(-len(tasks) // self.processes))  # one piece per worker
        return block, [self.pool.submit(_decode_into, tasks[i:i + step])
                       for i in range(0, len(tasks), step)]

    def __iter__(self):
        n_blocks = (len(self.paths) + self.bs - 1) // self.bs
        pending = deque(self._submit(b) for b in range(min(self.depth - 1, n_blocks)))
        next_block = len(pending)
        try:
            while pending:
                block, futures = pending.popleft()
                reasons = [r for f in futures for r in f.result()]
                for reason in reasons:
                    _raise_if_fatal(reason)
                base = (block % self.depth) * self.bs
                region = self.ring[base:base + self.bs]
                ok = [j for j, r in enumerate(reasons) if r is None]
                failures = [(block * self.bs + j, r) for j, r in enumerate(reasons) if r is not None]
                if len(ok) != len(reasons):  # squeeze failed rows out (rare)
                    region[:len(ok)] = region[ok]
                region[len(ok):] = 0
                if next_block < n_blocks:  # the region yielded below is not reused until then
                    pending.append(self._submit(next_block))
                    next_block += 1
                yield region, [block * self.bs + j for j in ok], failures
        except BrokenProcessPool:
            raise _worker_died() from None
        finally:
            self.close()

    def close(self) -> None:
        if self.pool is not None:
            _stop_pool(self.pool)
            self.pool = None
            self.shm.close()
            self.shm.unlink()


def _init_chunk_worker(reader) -> None:
    _quiet_worker()
    _WORKER["reader"] = reader


def _read_whole_file(path):
    """All of one file's chunks, or why it could not be read (a reason, or an error to raise)."""
    try:
        return None, [chunk for chunk in _WORKER["reader"].read(path)]
    except Exception as exc:  # sorted out by _outcome (Ctrl-C is not a file's failure)
        return _outcome(exc), None


class ProcessChunkFeeder:
    """`OrderedPrefetcher`'s interface, decoding whole files in worker processes (clips).

    Yields `(index, kind, payload)` in sample order. Unlike the threads, a worker holds all of
    one file's clips at once, so this suits many short clips (GIFs), not hour-long videos; at
    most CLIP_FILES_PER_WORKER files per worker are decoded ahead of the consumer.

    Raises:
        ResourceError: a worker died, or reading failed for a reason that is not the file's.
    """

    def __init__(self, items: list, reader, processes: int):
        self.items = items
        self.processes = max(1, processes)
        self.window = self.processes * CLIP_FILES_PER_WORKER
        self.pool = _start_pool(self.processes, _init_chunk_worker, (reader,))

    def __iter__(self):
        pending: deque = deque()
        submitted = 0
        try:
            for index in range(len(self.items)):
                while submitted < len(self.items) and len(pending) < self.window:
                    pending.append(self.pool.submit(_read_whole_file,
                                                    self.items[submitted].path))
                    submitted += 1
                reason, chunks = pending.popleft().result()
                _raise_if_fatal(reason)
                if reason is not None:
                    yield index, "fail", reason
                    continue
                for chunk in chunks:
                    yield index, "chunk", chunk
                yield index, "end", None
        except BrokenProcessPool:
            raise _worker_died() from None
        finally:
            _stop_pool(self.pool)
