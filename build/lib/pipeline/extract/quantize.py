"""`--precision int8`: NNCF post-training quantization of the OpenVINO IR, with an accuracy guard.

The calibration images are the dataset's own: every sample is ranked by sha256(seed, id) and
the first `--calibration-size` (default 300) calibrate; the next GUARD_IMAGES are held back to
measure the cosine similarity between float32 and int8 vectors. The ranking is seeded, so the
same files give the same choice, and adding a file changes it only if that file ranks among
the first ones. The calibration set's fingerprint (ids, sizes, mtimes) is in the cache key.

Depthwise convolutions (MobileNet-style) lose most under per-tensor int8 activations: when the
guard's median falls below GUARD_MEDIAN and the model has depthwise (GroupConvolution) layers,
they are quantized again with those layers kept in float32 (NNCF's ignored scope), and the
more accurate of the two is kept; the report says which.
"""

from __future__ import annotations

import hashlib

import numpy as np

from pipeline.errors import ConfigError, DecodeError, EngineError
from pipeline.store import feature_store as fs

DEFAULT_CALIBRATION_SIZE = 300
CALIBRATION_SEED = 0
GUARD_IMAGES = 64
# Below this median cosine similarity (float32 vs int8 vectors, held-back images) int8 is
# reported as not faithful enough; 0.98 keeps linear probes within ~1 point in our runs.
GUARD_MEDIAN = 0.98
DEPTHWISE_OPS = ("GroupConvolution",)


class CalibrationPlan:
    """The seeded choice of calibration and held-back samples for one dataset."""

    def __init__(self, samples, size: int = DEFAULT_CALIBRATION_SIZE):
        self.size = int(size)
        if self.size < 1:
            raise ConfigError(f"calibration_size must be at least 1; received: {self.size}")
        rank = lambda s: hashlib.sha256(f"{CALIBRATION_SEED}:{s.id}".encode()).hexdigest()  # noqa: E731
        ranked = sorted(samples, key=rank)
        self.calibration = ranked[:self.size]
        self.held_back = ranked[self.size:self.size + GUARD_IMAGES]

    def settings(self) -> dict:
        """Recorded in the cache key and the provenance."""
        return {"images": len(self.calibration), "seed": CALIBRATION_SEED,
                "fingerprint": fs.cache_key([(s.id, s.stamp) for s in self.calibration])[:20]}


def _import_nncf():
    try:
        import nncf
    except ImportError:
        raise EngineError("--precision int8 needs NNCF: pip install nncf==3.4.0 "
                          "(or pass --precision float32)") from None
    import logging

    nncf.set_log_level(logging.WARNING)  # its INFO lines list every skipped quantizer
    return nncf


def _decode(reader, samples) -> list[np.ndarray]:
    """One model input (batch of 1) per sample that decodes; broken files are skipped."""
    arrays = []
    for sample in samples:
        try:
            first = next(iter(reader.read(sample.path)), None)
        except DecodeError:
            continue
        if first is not None and len(first):
            arrays.append(np.ascontiguousarray(first[:1]))
    return arrays


def quantize_with_guard(ov_model, name: str, reader, samples, calibration: dict, echo=print):
    """Returns (int8 ov.Model, guard report) for a float32 OpenVINO model."""
    nncf = _import_nncf()
    plan = CalibrationPlan(samples, calibration["images"])
    if plan.settings() != calibration:  # predict asked for a training store's int8 model
        raise EngineError(
            f"the int8 model calibrated on set {calibration['fingerprint']} is not in this "
            "cache's openvino/ folder and these files cannot recreate it; pass the --cache-dir "
            "the training store was extracted in")
    images = _decode(reader, plan.calibration)
    if not images:
        raise EngineError("no calibration image could be decoded for --precision int8; "
                          "check the data or pass --precision float32")
    held = _decode(reader, plan.held_back)
    guard_on = "held-back images"
    if not held:  # a dataset no larger than the calibration set
        held, guard_on = images[:GUARD_IMAGES], "calibration images (none left to hold back)"
    echo(f"openvino: quantizing {name} to int8 on {len(images)} calibration image(s)")

    def run(ignored=None):
        kwargs = {"ignored_scope": nncf.IgnoredScope(types=list(ignored))} if ignored else {}
        return nncf.quantize(ov_model, nncf.Dataset(images), subset_size=len(images),
                             preset=nncf.QuantizationPreset.MIXED, **kwargs)

    quantized = run()
    cosines = cosine_to_float32(ov_model, quantized, held)
    report = _report(cosines, guard_on, "none")
    has_depthwise = any(op.get_type_name() in DEPTHWISE_OPS for op in ov_model.get_ops())
    if report["cosine_median"] < GUARD_MEDIAN and has_depthwise:
        echo("openvino: depthwise layers lost accuracy in int8; quantizing again with them "
             "kept in float32")
        retry = run(DEPTHWISE_OPS)
        retry_cos = cosine_to_float32(ov_model, retry, held)
        if np.median(retry_cos) > report["cosine_median"]:
            quantized, report = retry, _report(retry_cos, guard_on, "depthwise in float32")
    report.update(calibration_images=len(images), threshold=GUARD_MEDIAN)
    if report["cosine_median"] < GUARD_MEDIAN:
        echo(f"warning: int8 vectors are far from float32 ones (median cosine "
             f"{report['cosine_median']:.4f} < {GUARD_MEDIAN} on {report['images']} "
             f"{guard_on}); keep float32 (--precision float32) or quantize with NNCF's ignored "
             "scopes for the sensitive layers")
    else:
        echo(f"openvino: int8 guard: median cosine {report['cosine_median']:.4f} "
             f"(min {report['cosine_min']:.4f}) to float32 on {report['images']} {guard_on}")
    return quantized, report


def _report(cosines: np.ndarray, guard_on: str, ignored: str) -> dict:
    return {"cosine_median": round(float(np.median(cosines)), 6),
            "cosine_min": round(float(cosines.min()), 6), "images": int(len(cosines)),
            "measured_on": guard_on, "kept_in_float32": ignored}


def cosine_to_float32(float_model, int8_model, images) -> np.ndarray:
    """Cosine similarity per image between the two models' (flattened) vectors."""
    import openvino as ov

    core = ov.Core()
    outputs = []
    for model in (float_model, int8_model):
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        outputs.append(np.concatenate([compiled(x)[0].reshape(len(x), -1) for x in images]))
    a, b = outputs
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-12)
