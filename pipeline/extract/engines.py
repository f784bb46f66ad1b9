"""Inference engines: what runs the frozen backbone.

`tensorflow`, `jax`, `torch` are Keras 3 backends. `openvino` is native
(`openvino_engine.py`): the model is built in Keras on TensorFlow, converted once to OpenVINO IR
and run by the OpenVINO runtime with an explicit f32 precision hint (Keras' own OpenVINO backend
let OpenVINO compute in bf16 on CPUs with AVX512-BF16, so it is no longer used).

Keras fixes its backend when it is first imported. So an extraction needing another backend
than the one this process already uses runs in a worker process
(`pipeline.extract.engine_worker`) with KERAS_BACKEND set there, and nothing leaks into the
caller: stage two keeps training on TensorFlow (or JAX) in the same shell or Python session.

`auto` picks the fastest engine installed for the device, by measurement
(benchmarks/native_engine.py, benchmarks/engines.py): on a CPU, the native OpenVINO engine,
then TensorFlow (TensorFlow first for MobileNet); on an NVIDIA GPU, JAX, then TensorFlow.

The engine is recorded in the store's provenance but is not part of the cache key: all engines
compute the same float32 function (vectors agree to ~1e-5, tested at 1e-4), so a store extracted
with one engine is a valid cache for another. `--precision` does change the vectors, and is keyed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline import errors
from pipeline.errors import ConfigError, EngineError

ENGINES = ("auto", "tensorflow", "openvino", "jax", "torch")
PRECISIONS = ("float32", "float16", "bfloat16", "int8")
# Engines that run outside Keras build the model with this Keras backend, then convert it.
NATIVE_ENGINES = {"openvino": "tensorflow"}
# Backbones whose float32 forward pass measured faster on Keras-TensorFlow than on the native
# OpenVINO engine on a CPU (MobileNet: 54 vs 39 img/s, benchmarks/engines.py): `auto` keeps them
# on TensorFlow there (int8 always runs on OpenVINO).
TENSORFLOW_FIRST_ON_CPU = frozenset({"mobilenet"})
# (engine, backbone) pairs that a backend cannot run; `auto` skips them.
UNSUPPORTED: dict[tuple[str, str], str] = {}


def installed(engine: str) -> bool:
    return importlib.util.find_spec(engine) is not None


def has_nvidia_gpu() -> bool:
    """Cheap check that imports no framework: an NVIDIA device node or CUDA_VISIBLE_DEVICES."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").is_dir()


def keras_backend_for(engine: str) -> str:
    """The Keras backend a process must use to run `engine` (a native engine builds on TF)."""
    return NATIVE_ENGINES.get(engine, engine)


def active_backend() -> str:
    """The backend Keras uses (or will use) in this process."""
    if "keras" in sys.modules:
        import keras

        return keras.backend.backend()
    return os.environ.get("KERAS_BACKEND") or _keras_json_backend() or "tensorflow"


def _keras_json_backend() -> str | None:
    config = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "keras.json"
    try:
        return json.loads(config.read_text()).get("backend")
    except (OSError, ValueError):
        return None


def resolve_engine(engine: str | None, backbone: str = "", native_ok: bool = True) -> str:
    """Turns `auto`/None/an explicit name into an installed engine that can run `backbone`.

    `native_ok=False` keeps `auto` off engines that run a converted model (the model's input
    must then be preprocessed on the host, e.g. C3D's --mean-file)."""
    engine = engine or "current"
    if engine == "current":
        return active_backend()
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}; received: {engine!r}")
    if engine == "auto":
        if has_nvidia_gpu():
            order = ("jax", "tensorflow", "torch")
        elif backbone in TENSORFLOW_FIRST_ON_CPU:
            order = ("tensorflow", "openvino", "jax", "torch")
        else:
            order = ("openvino", "tensorflow", "jax", "torch")
        for candidate in order:
            if candidate in NATIVE_ENGINES and not native_ok:
                continue
            if installed(candidate) and (candidate, backbone) not in UNSUPPORTED:
                return candidate
        raise EngineError("no inference engine is installed: pip install -r requirements.txt")
    if not installed(engine):
        raise EngineError(f"engine '{engine}' is not installed: pip install {engine} "
                          "(or pass --engine auto to use what is installed)")
    if (engine, backbone) in UNSUPPORTED:
        raise EngineError(f"engine '{engine}' cannot run {backbone}: "
                          f"{UNSUPPORTED[(engine, backbone)]}; use --engine tensorflow")
    return engine


def run_in_worker(opts: dict, engine: str, progress: bool, require_labels: bool) -> dict:
    """Runs `run_extraction(opts)` in a fresh process whose Keras backend is `engine`.

    Returns the ExtractResult fields as a dict; re-raises the worker's PipelineError.
    """
    root = str(Path(__file__).resolve().parents[2])  # the project root, for -m pipeline...
    env = dict(os.environ, KERAS_BACKEND=keras_backend_for(engine),
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    request = {"opts": dict(opts, engine=engine), "progress": progress,
               "require_labels": require_labels}
    proc = subprocess.run([sys.executable, "-m", "pipeline.extract.engine_worker"],
                          input=json.dumps(request), stdout=subprocess.PIPE, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    reply = json.loads(lines[-1]) if lines else {}
    if "error" in reply:
        kind = getattr(errors, reply.get("type", ""), None)
        kind = kind if isinstance(kind, type) and issubclass(kind, errors.PipelineError) \
            else EngineError
        raise kind(reply["error"])
    if proc.returncode != 0 or "result" not in reply:
        raise EngineError(f"the {engine} extraction worker failed (exit {proc.returncode}); "
                          "its traceback is above")
    return reply["result"]
