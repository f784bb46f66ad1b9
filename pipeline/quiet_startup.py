"""Keeps TensorFlow's start-up chatter off the user's terminal, in every process.

TensorFlow 2.21 writes, from C++ straight to file descriptor 2 and before its log level is
read, lines such as "All log messages before absl::InitializeLog() ...", oneDNN and
cpu_feature_guard notices, "cudart_stub ... Could not find cuda drivers" and, on a machine
without a GPU, "failed call to cuInit". TF_CPP_MIN_LOG_LEVEL does not reach them.

Nothing here runs on `import pipeline`: a library user's process is left as it is. Two tools:

- `quiet_process_tree()`, used by the CLI (`run_pipeline.py`) around a command: fd 2 becomes a
  pipe read by a thread that drops the notice lines and passes every other byte on, so real
  errors, warnings and progress bars still show. Worker processes inherit fd 2 (the engine
  worker, decode workers, joblib's and Ray's), so they are quiet too.
- `install()`, used by a worker process started outside the CLI (the engine worker): its first
  `import tensorflow` runs with fd 2 sent to a temporary file, written back without the notices.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
import threading
from pathlib import Path

from pipeline.config import environment_value

# Start-up notices that say nothing a user can act on (a line holding one is dropped).
CHATTER = (
    "All log messages before absl::InitializeLog()", "cudart_stub.cc", "cuInit",
    "cuda_platform.cc", "cpu_feature_guard.cc", "This TensorFlow binary is optimized",
    "To enable the following instructions", "oneDNN custom operations", "Unable to register cu",
    "computation placer already registered", "TF-TRT Warning", "cuda_executor.cc",
)


def install() -> None:
    """Sets the log levels and wraps the process's first `import tensorflow` (idempotent)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietImport) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietImport())


def _is_chatter(line: bytes) -> bool:
    text = line.decode("utf-8", "replace")
    return any(marker in text for marker in CHATTER)


@contextlib.contextmanager
def quiet_process_tree():
    """Meanwhile, fd 2 of this process and of every process it starts drops CHATTER lines.

    A line ends at a newline or a carriage return (a progress bar redraws with one), so what is
    not chatter is passed on as soon as it is complete.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (an embedding host): leave it
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_pump, args=(read_end, saved), daemon=True,
                            name="stderr-filter")
    pump.start()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)  # our write end closes: the pump sees the end once children exit
        pump.join(timeout=0.5)  # workers kept for reuse (joblib) may hold the pipe open
        if not pump.is_alive():  # else a lingering worker still writes through it: keep it
            os.close(saved)


def _pump(read_end: int, out: int) -> None:
    pending = b""
    with contextlib.suppress(OSError):
        while chunk := os.read(read_end, 65536):
            pending += chunk
            pieces = re.split(rb"(?<=[\r\n])", pending)
            pending = pieces.pop()  # an unfinished line waits for its end
            kept = b"".join(p for p in pieces if not _is_chatter(p))
            if kept:
                os.write(out, kept)
        if pending and not _is_chatter(pending):
            os.write(out, pending)
    os.close(read_end)


@contextlib.contextmanager
def filtered_stderr():
    """Sends fd 2 to a temporary file meanwhile; then writes back all but the CHATTER lines."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (an embedding host): leave it
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines(True)
                    if not any(marker in line for marker in CHATTER)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _no_gpu() -> bool:
    if environment_value("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return True
    return not (Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").is_dir())


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` with the usual finders and runs its module code inside the filter.

    `importlib.util.find_spec("tensorflow")` (an "is it installed?" check) also lands here:
    the finder stays in place until the module is actually executed.
    """

    def __init__(self):
        self.searching = False

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow" or self.searching:
            return None
        self.searching = True  # the lookup below must reach the usual finders, not this one
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self.searching = False
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _QuietLoader(spec.loader, self)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader, finder):
        self.loader, self.finder = loader, finder

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self.finder)  # once per process
        with filtered_stderr():
            self.loader.exec_module(module)
            if _no_gpu():  # the failed cuInit is logged when devices are first listed: now
                with contextlib.suppress(Exception):
                    module.config.list_physical_devices()
