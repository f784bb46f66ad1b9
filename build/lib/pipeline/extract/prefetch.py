"""Decoding in worker threads, delivered in sample order, with bounded memory.

Each worker takes the next sample, decodes it chunk by chunk (an image is one chunk; a video is
a stream of clip chunks) and hands the chunks over through that sample's own small queue. At
most `workers` samples are in flight and each holds at most `depth` chunks, so a long or 1080p
video never sits whole in memory, while the forward pass runs on the consumer's thread.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

from pipeline.errors import DecodeError, ResourceError

_END = object()


class OrderedPrefetcher:
    """Iterates `(index, event, payload)` in sample order.

    event is "chunk" (payload: array), "end" (payload: None) or "fail" (payload: reason). Only a
    `DecodeError` (the file's content) is a "fail": a `ResourceError` or `MemoryError` (the
    machine) and any other exception (a bug in our code, e.g. a TypeError) are raised here, in
    the consumer, so they stop the run instead of being cached as the file's failure.
    """

    def __init__(self, items: list, read: Callable[[object], Iterator], workers: int = 4,
                 depth: int = 2):
        self.items = items
        self.read = read
        self.workers = max(1, int(workers))
        self.depth = depth
        self._queues: dict[int, queue.Queue] = {}
        self._cond = threading.Condition()
        self._next_to_start = 0
        self._next_to_consume = 0
        self._stop = False
        self._threads = [threading.Thread(target=self._work, daemon=True, name=f"decode-{i}")
                         for i in range(self.workers)]

    def _claim(self) -> int | None:
        with self._cond:
            # Stay at most `workers` samples ahead of the consumer (bounded memory).
            while not self._stop and self._next_to_start >= self._next_to_consume + self.workers:
                self._cond.wait()
            if self._stop or self._next_to_start >= len(self.items):
                return None
            index = self._next_to_start
            self._next_to_start += 1
            self._queues[index] = queue.Queue(maxsize=self.depth)
            self._cond.notify_all()
            return index

    def _put(self, q: queue.Queue, value) -> bool:
        while not self._stop:
            try:
                q.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        while (index := self._claim()) is not None:
            q = self._queues[index]
            try:
                for chunk in self.read(self.items[index]):
                    if not self._put(q, ("chunk", chunk)):
                        return
                self._put(q, ("end", None))
            except DecodeError as exc:
                self._put(q, ("fail", str(exc)))
            except Exception as exc:  # the machine's fault or our bug: stop the run
                self._put(q, ("error", exc))

    def __iter__(self):
        for thread in self._threads:
            thread.start()
        try:
            for index in range(len(self.items)):
                with self._cond:
                    while index not in self._queues:
                        self._cond.wait()
                    q = self._queues[index]
                while True:
                    event, payload = q.get()
                    if event == "error":
                        raise _as_resource_error(payload, self.items[index])
                    yield index, event, payload
                    if event != "chunk":
                        break
                with self._cond:
                    del self._queues[index]
                    self._next_to_consume = index + 1
                    self._cond.notify_all()
        finally:
            self.close()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=1.0)


def _as_resource_error(exc: BaseException, item) -> BaseException:
    """Out of memory becomes a ResourceError; anything else is raised as it is."""
    if not isinstance(exc, MemoryError):
        return exc
    return ResourceError(f"cannot read {getattr(item, 'path', item)}: out of memory. Nothing was "
                         "recorded as broken; run the same command again with fewer --workers.")
