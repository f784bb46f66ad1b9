"""Still images decoded in worker *processes*, straight into shared-memory batches.

Measured on a 16-core GPU machine, Pillow decoding in threads stopped scaling at ~1,450 images/s
(the GIL: Pillow's decode loop, EXIF handling and numpy glue hold it between C calls), while
one thread alone gave ~1,190. Processes scale with cores. Each worker writes its decoded uint8
image into a slot of a shared ring of batches, so the parent never copies or unpickles pixels:
a full batch is handed to the model as a view of shared memory.

Workers start with `spawn`: the parent runs TensorFlow/JAX threads, which make `fork` unsafe.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from multiprocessing import shared_memory

import numpy as np

_WORKER: dict = {}


def _init_worker(shm_name: str, shape: tuple, reader) -> None:
    shm = shared_memory.SharedMemory(name=shm_name)
    _WORKER.update(shm=shm, ring=np.ndarray(shape, dtype=np.uint8, buffer=shm.buf), reader=reader)


def _decode_into(task) -> str | None:
    """Decodes one file into its slot; returns None, or why the file could not be read."""
    from pipeline.errors import DecodeError

    slot, path = task
    try:
        _WORKER["ring"][slot] = next(iter(_WORKER["reader"].read(path)))[0]
        return None
    except DecodeError as exc:
        return str(exc)
    except Exception as exc:  # a decoder bug on one file is that file's failure
        return f"{type(exc).__name__}: {exc}"


class ProcessBatchFeeder:
    """Yields `(batch, slots, failures)` for consecutive blocks of `batch_size` samples.

    `batch` is a uint8 view (batch_size, H, W, 3) of shared memory, valid until the next item is
    asked for; `slots` lists the sample indices whose images fill rows 0..len-1 (failed samples
    are squeezed out, the rest of the rows are zero); `failures` lists (sample index, reason).
    """

    def __init__(self, reader, paths: list, batch_size: int, processes: int, depth: int = 4):
        self.paths, self.bs, self.depth = paths, batch_size, max(2, depth)
        self.shape = (self.depth * batch_size, *reader.input_shape)
        self.shm = shared_memory.SharedMemory(create=True, size=int(np.prod(self.shape)))
        self.ring = np.ndarray(self.shape, dtype=np.uint8, buffer=self.shm.buf)
        ctx = multiprocessing.get_context("spawn")
        self.pool = ctx.Pool(processes, initializer=_init_worker,
                             initargs=(self.shm.name, self.shape, reader))

    def _submit(self, block: int):
        start = block * self.bs
        base = (block % self.depth) * self.bs
        tasks = [(base + j, p) for j, p in enumerate(self.paths[start:start + self.bs])]
        return block, self.pool.map_async(_decode_into, tasks, chunksize=8)

    def __iter__(self):
        n_blocks = (len(self.paths) + self.bs - 1) // self.bs
        pending = deque(self._submit(b) for b in range(min(self.depth - 1, n_blocks)))
        next_block = len(pending)
        try:
            while pending:
                block, result = pending.popleft()
                reasons = result.get()
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
        finally:
            self.close()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
            self.shm.close()
            self.shm.unlink()


def _init_chunk_worker(reader) -> None:
    _WORKER["reader"] = reader


def _read_whole_file(path):
    """All of one file's chunks, or why it could not be read."""
    from pipeline.errors import DecodeError

    try:
        return None, [chunk for chunk in _WORKER["reader"].read(path)]
    except DecodeError as exc:
        return str(exc), None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}", None


class ProcessChunkFeeder:
    """`OrderedPrefetcher`'s interface, decoding whole files in worker processes (clips).

    Yields `(index, kind, payload)` in sample order. Unlike the threads, a worker holds all of
    one file's clips at once, so this suits many short clips (GIFs), not hour-long videos.
    """

    def __init__(self, items: list, reader, processes: int):
        self.items = items
        ctx = multiprocessing.get_context("spawn")
        self.pool = ctx.Pool(processes, initializer=_init_chunk_worker, initargs=(reader,))
        self.processes = processes

    def __iter__(self):
        try:
            results = self.pool.imap(_read_whole_file, [s.path for s in self.items], chunksize=2)
            for index, (reason, chunks) in enumerate(results):
                if reason is not None:
                    yield index, "fail", reason
                    continue
                for chunk in chunks:
                    yield index, "chunk", chunk
                yield index, "end", None
        finally:
            self.pool.terminate()
            self.pool.join()
