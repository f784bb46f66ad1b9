"""The native OpenVINO engine: the Keras trunk converted once to OpenVINO IR, run by OpenVINO.

Why not Keras' OpenVINO backend: it compiles without an inference-precision hint, so on a CPU
with AVX512-BF16 or AMX OpenVINO silently computes in bfloat16 (vectors off by ~0.1 on
ResNet50), and it runs one synchronous request at a time. Here:

- the extractor (uint8 pixels in, preprocessing inside, features out) is built once in Keras on
  TensorFlow, traced to a concrete function and converted with `openvino.convert_model`;
- the IR is cached as `<cache_dir>/openvino/<key>.xml/.bin` (weights kept float32), keyed by
  what changes the model (like the store's key), so a second run neither builds Keras nor
  converts;
- it is compiled with INFERENCE_PRECISION_HINT f32 for `--precision float32` (bf16 only when
  bfloat16 is asked or chosen by `auto`; int8 models come from `quantize.py`), and each batch
  is split over one asynchronous infer request per stream, with as many streams as cores;
- auto's bfloat16 is measured against float32 first (`guard_bfloat16`, rule in precision.py);
  the report is kept beside the IR, so a second run on the same files measures nothing.

Usage:
    ir = prepare_ir(spec, reader, config, settings, samples, echo)
    model = NativeModel(ir.xml, batch_size=32, precision="float32")
    features = model.predict_on_batch(uint8_batch)
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, EngineError, PipelineError
from pipeline.store import feature_store as fs
# Through the module, so a builder replaced at run time (as tests do) is the one called.
import pipeline.extract.backbones.feature_model as feature_model
from pipeline.extract import precision as bf16_rule
from pipeline.extract.quantize import (cosine_summary, cosine_to_float32, decode_inputs,
                                       quantize_with_guard, seeded_ranking)

# --precision -> OpenVINO's CPU inference precision. int8 IRs hold quantized ops; their
# remaining float ops run in f32.
PRECISION_HINTS = {"float32": "f32", "bfloat16": "bf16", "int8": "f32"}
# The settings (run.vector_settings) that change the converted model; the others (data root,
# stored dtype, clip aggregation) act after it. An int8 model also depends on the calibration
# images, hence on how the reader decoded them.
# float32 and bfloat16 share one IR (the precision is a compile hint); int8 has its own.
MODEL_SETTINGS = ("schema_version", "backbone", "weights", "layer", "pooling", "input_shape",
                  "preprocess", "random_init", "calibration", "preset")


@dataclass
class NativeIR:
    xml: Path
    key: str
    report: dict = field(default_factory=dict)  # e.g. the int8 accuracy guard, for provenance


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def ir_key(settings: dict) -> str:
    keyed = {k: settings[k] for k in MODEL_SETTINGS if k in settings}
    if settings.get("precision") == "int8":
        keyed.update(precision="int8", reader=settings["reader"])
    return fs.cache_key(keyed)


def ir_path(cache_dir, key: str) -> Path:
    return Path(cache_dir or "cache") / "openvino" / f"{key[:20]}.xml"


def prepare_ir(spec, reader, config, settings: dict, samples, echo=print) -> NativeIR:
    """Returns the cached IR for these settings, converting (and quantizing) it if missing."""
    precision = settings["precision"]
    if precision not in PRECISION_HINTS:
        raise ConfigError(f"--engine openvino runs precision {', '.join(PRECISION_HINTS)} on a "
                          f"CPU; received: {precision!r} (use bfloat16 or float32)")
    if getattr(reader, "preprocess", None) is not None:
        raise ConfigError("--engine openvino converts the model with its preprocessing inside; "
                          "--mean-file preprocessing runs on the host: use --engine tensorflow")
    key = ir_key(settings)
    xml = ir_path(config.cache_dir, key)
    report_file = xml.with_suffix(".json")
    if xml.is_file() and xml.with_suffix(".bin").is_file():
        report = json.loads(report_file.read_text()) if report_file.is_file() else {}
        echo(f"openvino: cached model {xml.name} ({precision}), no conversion")
        return NativeIR(xml, key, report)
    try:
        ov_model, report = _convert(spec, config, settings, reader, samples, echo)
        _save_atomically(ov_model, xml, report)
    except PipelineError:
        raise
    except Exception as exc:  # a model OpenVINO cannot convert: one line, not a traceback
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise EngineError(f"engine 'openvino' cannot convert {spec.name}: {first}; "
                          "use --engine tensorflow") from None
    return NativeIR(xml, key, report)


def guard_bfloat16(spec, reader, config, settings: dict, samples, echo=print) -> dict:
    """Measures bfloat16 against float32 on the held-back files (the IR is compiled both ways)
    and returns the guard's report; the decision is the rule of precision.py."""
    held = seeded_ranking(samples)[:bf16_rule.BFLOAT16_GUARD_FILES]
    fingerprint = fs.cache_key([(s.id, s.stamp) for s in held])[:20]
    reports = ir_path(config.cache_dir, ir_key(settings)).with_suffix(".bfloat16-guard.json")
    known = _read_json(reports)
    if fingerprint in known:  # measured on these files before: nothing to run
        return known[fingerprint]
    started = time.perf_counter()
    inputs = decode_inputs(reader, held)
    if not inputs:  # nothing to measure on: the safe choice
        return {"decision": bf16_rule.REFUSED, "images": 0, "measured_on": "no decodable file",
                "threshold": bf16_rule.BFLOAT16_GUARD_MEDIAN}
    ir = prepare_ir(spec, reader, config, dict(settings, precision="float32"), samples, echo)
    import openvino as ov

    model = ov.Core().read_model(str(ir.xml))
    batches = [np.concatenate(inputs[i:i + 8]) for i in range(0, len(inputs), 8)]
    report = cosine_summary(cosine_to_float32(model, model, batches, other_hint="bf16"),
                            "held-back files")
    kept = report["cosine_median"] >= bf16_rule.BFLOAT16_GUARD_MEDIAN
    report.update(threshold=bf16_rule.BFLOAT16_GUARD_MEDIAN,
                  decision=bf16_rule.KEPT if kept else bf16_rule.REFUSED,
                  seconds=round(time.perf_counter() - started, 2))
    if not kept:
        echo(f"warning: bfloat16 vectors of {spec.name} are too far from float32 ones: "
             f"{bf16_rule.describe_guard(report)}; extracting in float32 instead (recorded in "
             "the store; --precision bfloat16 keeps bfloat16)")
    try:  # a cache of the measurement only: a read-only cache folder measures again next time
        tmp = reports.with_name(f".tmp-{reports.name}-{os.getpid()}")
        tmp.write_text(json.dumps(dict(known, **{fingerprint: report}), indent=1))
        os.replace(tmp, reports)
    except OSError:
        pass
    return report


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _convert(spec, config, settings, reader, samples, echo):
    import openvino as ov
    import tensorflow as tf

    # Built in float32 whatever the precision: OpenVINO applies bf16/int8 itself.
    model = feature_model.build_feature_model(spec, config.weights, config.layer,
                                              config.pooling, config.input_size, "float32",
                                              raw_input=True, frames=config.frames)
    signature = tf.TensorSpec([None, *model.input.shape[1:]], tf.uint8, name="pixels")
    traced = tf.function(lambda x: model(x, training=False)).get_concrete_function(signature)
    ov_model = ov.convert_model(traced)
    echo(f"openvino: converted {spec.name} to OpenVINO IR")
    report = {}
    if settings["precision"] == "int8":
        ov_model, report = quantize_with_guard(ov_model, spec.name, reader, samples,
                                               settings["calibration"], echo)
    return ov_model, report


def _save_atomically(ov_model, xml: Path, report: dict) -> None:
    """Writes .bin and .json before .xml, each by rename: an .xml is only seen complete."""
    import openvino as ov

    xml.parent.mkdir(parents=True, exist_ok=True)
    tmp = xml.parent / f".tmp-{xml.stem}-{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    try:
        ov.save_model(ov_model, str(tmp / xml.name), compress_to_fp16=False)  # keep float32
        (tmp / xml.with_suffix(".json").name).write_text(json.dumps(report, indent=1))
        for suffix in (".bin", ".json", ".xml"):
            os.replace(tmp / xml.with_suffix(suffix).name, xml.with_suffix(suffix))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class NativeModel:
    """A compiled IR that runs fixed-size batches over one async infer request per stream.

    Each batch is cut into `streams` equal parts (the last padded), one per request, so all
    cores work on every batch without a batch waiting on another.
    """

    def __init__(self, xml, batch_size: int, precision: str = "float32", streams: int = 0):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(xml))
        n_threads = cores()
        self.streams = max(1, min(streams or n_threads, batch_size))
        self.part = -(-batch_size // self.streams)
        self.batch_size = batch_size
        shape = list(model.input(0).get_partial_shape())
        model.reshape([self.part, *[d.get_length() for d in shape[1:]]])
        self.feature_shape = tuple(int(d) for d in model.output(0).get_shape()[1:])
        config = {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": str(self.streams),
                  "INFERENCE_NUM_THREADS": str(n_threads),
                  "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision]}
        self.compiled = core.compile_model(model, "CPU", config)
        self.queue = ov.AsyncInferQueue(self.compiled, self.streams)
        self.queue.set_callback(self._collect)
        self._out = None
        self._padded = np.zeros((self.streams * self.part, *_input_shape_of(model)), np.uint8)

    def _collect(self, request, index: int) -> None:
        self._out[index * self.part:(index + 1) * self.part] = request.get_output_tensor(0).data

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        if n > self.batch_size:
            raise ValueError(f"batch of {n} exceeds the compiled batch size {self.batch_size}")
        padded = self._padded
        padded[:n] = batch
        padded[n:] = 0
        self._out = np.empty((len(padded), *self.feature_shape), np.float32)
        for i in range(self.streams):
            self.queue.start_async({0: padded[i * self.part:(i + 1) * self.part]}, userdata=i)
        self.queue.wait_all()
        return self._out[:n]


def _input_shape_of(model) -> tuple:
    return tuple(int(d) for d in model.input(0).get_shape()[1:])
