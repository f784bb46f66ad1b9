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
then TensorFlow (TensorFlow first for MobileNet in float32; OpenVINO first for every backbone
in bfloat16, the one engine here that computes it natively); on an NVIDIA GPU, JAX, then
TensorFlow. `--precision auto` is resolved first (`auto_precision`, `precision.py`): bfloat16
on a CPU with native bfloat16 units when an engine that computes it natively can run these
settings, else float32.

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
from dataclasses import dataclass
from pathlib import Path

from pipeline import errors
from pipeline.config import environment_value, keras_home
from pipeline.errors import ConfigError, EngineError
from pipeline.extract.precision import (NATIVE_BFLOAT16_FLAGS, PrecisionChoice,
                                        native_bfloat16_flag)
from pipeline.outputs import special_kind

PRECISIONS = ("float32", "float16", "bfloat16", "int8")


@dataclass(frozen=True)
class Engine:
    """One inference engine: what it needs, what it supports, how it gets a model to run.

    Attributes:
        name: the `--engine` value.
        keras_backend: the Keras backend a process must use to run it (a native engine builds
            the Keras model on this backend, then converts it).
        module: what must be importable for the engine to be installed.
        precisions: the `--precision` values it runs.
        host_preprocess: whether it runs a reader's host-side preprocessing (C3D's
            --mean-file); a converted model holds its preprocessing inside.
        auto_precisions: the precisions `auto` may choose it for (a subset of `precisions`).
        reference: the engine the others are checked against: a failure there is a bug (its
            traceback is kept); elsewhere it is a one-line EngineError naming the fix.
        cpu_bfloat16: computes bfloat16 natively on a CPU with AMX or AVX512-BF16 (Keras'
            mixed precision casts around every layer instead), so `--precision auto` may
            choose bfloat16 for it; it then measures bfloat16 against float32
            (`guard_bfloat16`).
    """

    name: str
    keras_backend: str
    module: str
    precisions: tuple = ("float32", "float16", "bfloat16")
    host_preprocess: bool = True
    auto_precisions: tuple = ("float32", "float16", "bfloat16")
    reference: bool = False
    cpu_bfloat16: bool = False

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def suits(self, config) -> bool:
        """Whether `auto` may pick this engine for these settings."""
        return config.precision in self.auto_precisions and \
            (self.host_preprocess or not config.mean_file)

    def check(self, config) -> None:
        """Refuses settings this engine cannot run, with the fix (`auto` resolves to one)."""
        if config.precision != "auto" and config.precision not in self.precisions:
            runs = [e.name for e in ENGINES.values() if config.precision in e.precisions]
            raise ConfigError(f"--precision {config.precision} runs on --engine "
                              f"{' or '.join(runs) or 'none installed'} (received: engine "
                              f"{self.name}); pass --engine {runs[0] if runs else 'auto'} or "
                              "--precision float32")

    def limit_threads(self, cores: int) -> None:
        """Sizes the framework's thread pools to `cores` (a Ray actor's share of a node)."""
        if self.keras_backend == "tensorflow":  # else TensorFlow sizes them to the whole node
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(cores)
            tf.config.threading.set_inter_op_parallelism_threads(cores)

    def prepare(self, spec, reader, config, settings: dict, samples, echo=print):
        """Work done once on the driver before any batch runs (a converted model); None here."""
        return None

    def guard_bfloat16(self, spec, reader, config, settings: dict, samples, echo=print) -> dict:
        """The guard of auto's bfloat16 (precision.py): an engine with `cpu_bfloat16` measures
        bfloat16 against float32 on held-back files and returns the report."""
        raise NotImplementedError(f"engine {self.name} does not compute bfloat16 natively")

    def build_model(self, spec, reader, config, prepared=None):
        """The frozen feature model this engine runs (the Keras model, for a Keras backend)."""
        from pipeline.extract.backbones.feature_model import build_feature_model  # lazy: h5py

        # A reader whose options change the preprocessing (C3D's --mean-file) preprocesses on
        # the host; otherwise uint8 pixels go to the model, which preprocesses on the device.
        return build_feature_model(spec, config.weights, config.layer, config.pooling,
                                   config.input_size, config.precision,
                                   raw_input=getattr(reader, "preprocess", None) is None,
                                   frames=config.frames)


class OpenVINOEngine(Engine):
    """The native engine (`openvino_engine.py`): built in Keras on TensorFlow, converted to IR
    once (quantized for int8) on the driver, run by the OpenVINO runtime."""

    def prepare(self, spec, reader, config, settings, samples, echo=print):
        from pipeline.extract.openvino_engine import prepare_ir  # lazy: h5py

        return prepare_ir(spec, reader, config, settings, samples, echo)

    def guard_bfloat16(self, spec, reader, config, settings, samples, echo=print):
        from pipeline.extract.openvino_engine import guard_bfloat16  # lazy: h5py

        return guard_bfloat16(spec, reader, config, settings, samples, echo)

    def build_model(self, spec, reader, config, prepared=None):
        from pipeline.extract.openvino_engine import NativeModel  # lazy: h5py

        return NativeModel(prepared.xml, config.batch_size, config.precision)


ENGINES: dict[str, Engine] = {}


def register_engine(engine: Engine, *, overwrite: bool = False) -> Engine:
    """Adds an engine under `engine.name` (a plugin may add one); refuses a silent replace."""
    if engine.name in ENGINES and not overwrite:
        raise EngineError(f"engine '{engine.name}' is already registered")
    ENGINES[engine.name] = engine
    return engine


register_engine(Engine("tensorflow", "tensorflow", "tensorflow", reference=True))
register_engine(Engine("jax", "jax", "jax"))
register_engine(Engine("torch", "torch", "torch"))
register_engine(OpenVINOEngine("openvino", "tensorflow", "openvino",
                               precisions=("float32", "bfloat16", "int8"), host_preprocess=False,
                               auto_precisions=("float32", "bfloat16", "int8"),
                               cpu_bfloat16=True))

# `auto`'s order, by measurement (see the module doc): the first installed engine that suits
# the settings wins. Backbones measured faster on Keras-TensorFlow than on the native OpenVINO
# engine on a CPU (MobileNet: 54 vs 39 img/s, benchmarks/engines.py) have their own order.
AUTO_ORDER = {
    "gpu": ("jax", "tensorflow", "torch"),
    "cpu": ("openvino", "tensorflow", "jax", "torch"),
    "cpu_tensorflow_first": ("tensorflow", "openvino", "jax", "torch"),
    # bfloat16 on a CPU: engines that compute it natively first, for every backbone (where
    # auto's guard refuses bfloat16, the engine is chosen again for float32: run.py).
    "cpu_bfloat16": ("openvino", "tensorflow", "jax", "torch"),
}
TENSORFLOW_FIRST_ON_CPU = frozenset({"mobilenet"})
# Precisions only some engines run: `auto` looks among those first (int8: OpenVINO).
AUTO_ORDER_FOR_PRECISION = {"int8": ("openvino",)}
# (engine, backbone) pairs that a backend cannot run; `auto` skips them.
UNSUPPORTED: dict[tuple[str, str], str] = {}


def engine_names() -> tuple:
    """`auto` and every registered engine: the `--engine` choices."""
    return ("auto", *ENGINES)


def get_engine(name: str) -> Engine:
    if name not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(engine_names())}; "
                          f"received: {name!r}")
    return ENGINES[name]


def installed(engine: str) -> bool:
    return get_engine(engine).installed() if engine in ENGINES else \
        importlib.util.find_spec(engine) is not None


def has_nvidia_gpu() -> bool:
    """Cheap check that imports no framework: an NVIDIA device node or CUDA_VISIBLE_DEVICES."""
    if environment_value("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").is_dir()


def keras_backend_for(engine: str) -> str:
    """The Keras backend a process must use to run `engine` (a native engine builds on TF)."""
    return ENGINES[engine].keras_backend if engine in ENGINES else engine


def active_backend() -> str:
    """The backend Keras uses (or will use) in this process."""
    if "keras" in sys.modules:
        import keras

        return keras.backend.backend()
    return environment_value("KERAS_BACKEND") or _keras_json_backend() or "tensorflow"


def _keras_json_backend() -> str | None:
    config = keras_home() / "keras.json"
    if special_kind(config):
        return None  # never opened: reading a FIFO could wait forever
    try:
        return json.loads(config.read_text()).get("backend")
    except (OSError, ValueError):
        return None


def auto_order(backbone: str = "", precision: str = "float32") -> tuple:
    if precision in AUTO_ORDER_FOR_PRECISION:
        return AUTO_ORDER_FOR_PRECISION[precision]
    if has_nvidia_gpu():
        return AUTO_ORDER["gpu"]
    if precision == "bfloat16":
        return AUTO_ORDER["cpu_bfloat16"]
    return AUTO_ORDER["cpu_tensorflow_first" if backbone in TENSORFLOW_FIRST_ON_CPU else "cpu"]


def auto_precision(config) -> PrecisionChoice:
    """What `config.precision` computes in here, and why (`auto`: see precision.py)."""
    if config.precision != "auto":
        return PrecisionChoice(config.precision)
    if has_nvidia_gpu():
        return PrecisionChoice("float32", "auto: a GPU computes in float32 unless asked",
                               asked="auto")
    flag = native_bfloat16_flag()
    if flag is None:
        return PrecisionChoice("float32", "auto: this CPU has no native bfloat16 (neither "
                               f"{' nor '.join(NATIVE_BFLOAT16_FLAGS)} among its flags)",
                               asked="auto")
    bfloat16, backbone = config.replace(precision="bfloat16"), config.backbone.lower()
    names = AUTO_ORDER["cpu_bfloat16"] if config.engine == "auto" else (config.engine,)
    native = [n for n in names if n in ENGINES and ENGINES[n].cpu_bfloat16 and
              ENGINES[n].installed() and ENGINES[n].suits(bfloat16) and
              (n, backbone) not in UNSUPPORTED]
    if not native:
        able = " or ".join(e.name for e in ENGINES.values() if e.cpu_bfloat16) or "none"
        which = "no installed engine that can run these settings" if config.engine == "auto" \
            else f"engine {config.engine}"
        return PrecisionChoice("float32", f"auto: this CPU computes bfloat16 natively ({flag}) "
                               f"but {which} does (--engine {able} does)", asked="auto")
    return PrecisionChoice("bfloat16", f"auto: this CPU computes bfloat16 natively ({flag}) "
                           f"and engine {native[0]} does too", asked="auto")


def choose_engine(config) -> Engine:
    """The engine that runs these settings: `config.engine`, or `auto`'s first that suits
    (in a process that has imported Keras already: its backend).

    Raises:
        ConfigError: an unknown engine, or one that cannot run `config.precision`.
        EngineError: the engine is not installed or cannot run the backbone.
    """
    if config.precision == "auto":
        config = config.replace(precision=auto_precision(config).precision)
    name = config.engine
    native_wanted = config.precision == "bfloat16" and not has_nvidia_gpu()
    if name == "auto" and "keras" in sys.modules and config.precision != "int8" and \
            active_backend() in ENGINES and ENGINES[active_backend()].suits(config) and \
            (ENGINES[active_backend()].cpu_bfloat16 or not native_wanted):
        # Keras is loaded here already (a notebook, a test, stage two in the same session):
        # run on its backend, in this process, rather than start a worker or convert a model;
        # bfloat16 on a CPU still goes to an engine that computes it natively.
        name = active_backend()
    name = resolve_engine(name, config.backbone.lower(), config=config)
    engine = get_engine(name) if name in ENGINES else Engine(name, name, name)
    engine.check(config)
    return engine


def resolve_engine(engine: str | None, backbone: str = "", native_ok: bool = True,
                   config=None) -> str:
    """Turns `auto`/None/an explicit name into an installed engine that can run `backbone`.

    `native_ok=False` keeps `auto` off engines that cannot run a host-side preprocessing
    (C3D's --mean-file); `config` (an ExtractConfig) lets `auto` check every setting."""
    engine = engine or "current"
    if engine == "current":
        return active_backend()
    if engine == "auto":
        precision = config.precision if config is not None else "float32"
        for candidate in auto_order(backbone, precision):
            found = ENGINES.get(candidate)
            if found is None or not found.installed() or (candidate, backbone) in UNSUPPORTED:
                continue
            if (config is not None and not found.suits(config)) or \
                    (not native_ok and not found.host_preprocess):
                continue
            return candidate
        if precision in AUTO_ORDER_FOR_PRECISION:
            needed = " or ".join(AUTO_ORDER_FOR_PRECISION[precision])
            raise EngineError(f"--precision {precision} runs on --engine {needed}, which is not "
                              "installed: pip install -r requirements.txt")
        raise EngineError("no inference engine is installed: pip install -r requirements.txt")
    found = get_engine(engine)
    if not found.installed():
        raise EngineError(f"engine '{engine}' is not installed: pip install {found.module} "
                          "(or pass --engine auto to use what is installed)")
    if (engine, backbone) in UNSUPPORTED:
        raise EngineError(f"engine '{engine}' cannot run {backbone}: "
                          f"{UNSUPPORTED[(engine, backbone)]}; use --engine tensorflow")
    return engine


def run_in_worker(config, engine: str, progress: bool, require_labels: bool,
                  calibration: dict | None = None) -> dict:
    """Runs `run_extraction(config)` in a fresh process whose Keras backend is `engine`.

    The settings travel as `config.as_dict()` and are rebuilt there with
    `ExtractConfig.from_mapping`; the worker imports `config.plugin` before it builds anything.
    Returns the ExtractResult fields as a dict; re-raises the worker's PipelineError.
    """
    root = str(Path(__file__).resolve().parents[2])  # the project root, for -m pipeline...
    env = dict(os.environ, KERAS_BACKEND=keras_backend_for(engine),
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH"),
                                                        *plugin_paths()])))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    request = {"config": dict(config.as_dict(), engine=engine), "progress": progress,
               "require_labels": require_labels, "calibration": calibration}
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


def plugin_paths() -> list:
    """This process's own sys.path entries (not the interpreter's), so the worker finds the
    plugin modules this process finds."""
    own = (sys.prefix, sys.base_prefix, sys.exec_prefix)
    return [p for p in sys.path if p and os.path.isdir(p) and not p.startswith(own)]
