"""`--precision int8`: NNCF post-training quantization of the OpenVINO IR, with an accuracy guard.

The calibration images are the dataset's own: every sample is ranked by sha256(seed, id) and
the first `--calibration-size` (default 300) calibrate; the next GUARD_IMAGES are held back to
measure the cosine similarity between float32 and int8 vectors. The ranking is seeded, so the
same files give the same choice, and adding a file changes it only if that file ranks among
the first ones. The calibration set's fingerprint (ids, sizes, mtimes) is in the cache key.

Depthwise convolutions (MobileNet-style) lose most under per-tensor int8 activations: when the
guard's median falls below GUARD_MEDIAN (or a higher --int8-min-cosine) and the model has
depthwise (GroupConvolution) layers, they are quantized again with those layers kept in float32
(NNCF's ignored scope), and the more accurate of the two is kept; the report says which.

The guard refuses: below `--int8-min-cosine` (0.98) no int8 vector is published. With
`--int8-refusal fallback` (the default) the float32 model is saved under the int8 model's name
and the store holds float32 vectors, said on the console and recorded in the store's
`int8_guard` (`decision`); with `error` extract stops before writing anything, naming the fix.
`info` prints the guard: its figures, threshold and decision.
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
# refused; 0.98 keeps linear probes within ~1 point in our runs (the --int8-min-cosine default).
GUARD_MEDIAN = 0.98
REFUSALS = ("fallback", "error")
KEPT = "int8 kept"
FELL_BACK = "refused: float32 vectors stored"
DEPTHWISE_OPS = ("GroupConvolution",)


class CalibrationPlan:
    """The seeded choice of calibration and held-back samples for one dataset."""

    def __init__(self, samples, size: int = DEFAULT_CALIBRATION_SIZE,
                 min_cosine: float = GUARD_MEDIAN, on_refusal: str = "fallback"):
        self.size = int(size)
        if self.size < 1:
            raise ConfigError(f"calibration_size must be at least 1; received: {self.size}")
        if not 0.0 <= float(min_cosine) <= 1.0:
            raise ConfigError("--int8-min-cosine is a cosine similarity between 0 and 1; "
                              f"received: {min_cosine}")
        if on_refusal not in REFUSALS:
            raise ConfigError(f"--int8-refusal must be one of {', '.join(REFUSALS)}; "
                              f"received: {on_refusal!r}")
        self.min_cosine, self.on_refusal = float(min_cosine), on_refusal
        ranked = seeded_ranking(samples)
        self.calibration = ranked[:self.size]
        self.held_back = ranked[self.size:self.size + GUARD_IMAGES]

    def settings(self) -> dict:
        """Recorded in the cache key and the provenance."""
        return {"images": len(self.calibration), "seed": CALIBRATION_SEED,
                "fingerprint": fs.cache_key([(s.id, s.stamp) for s in self.calibration])[:20],
                "min_cosine": self.min_cosine, "on_refusal": self.on_refusal}


def seeded_ranking(samples) -> list:
    """The samples ranked by sha256(seed, id): independent of their listing order, and a new
    file moves the others only if it ranks before them (int8's calibration and held-back
    files, auto bfloat16's held-back files)."""
    return sorted(samples, key=lambda s: hashlib.sha256(
        f"{CALIBRATION_SEED}:{s.id}".encode()).hexdigest())


def _import_nncf():
    try:
        import nncf
    except ImportError:
        raise EngineError("--precision int8 needs NNCF: pip install nncf==3.4.0 "
                          "(or pass --precision float32)") from None
    import logging

    nncf.set_log_level(logging.WARNING)  # its INFO lines list every skipped quantizer
    return nncf


def decode_inputs(reader, samples) -> list[np.ndarray]:
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
    plan = CalibrationPlan(samples, calibration["images"],
                           calibration.get("min_cosine", GUARD_MEDIAN),
                           calibration.get("on_refusal", "fallback"))
    if plan.settings() != calibration:  # predict asked for a training store's int8 model
        raise EngineError(
            f"the int8 model calibrated on set {calibration['fingerprint']} is not in this "
            "cache's openvino/ folder and these files cannot recreate it; pass the --cache-dir "
            "the training store was extracted in")
    images = decode_inputs(reader, plan.calibration)
    if not images:
        raise EngineError("no calibration image could be decoded for --precision int8; "
                          "check the data or pass --precision float32")
    held = decode_inputs(reader, plan.held_back)
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
    # Retried below the default bar even under a lower --int8-min-cosine: a lower bar accepts
    # more loss, it does not ask for a worse model than extract makes by default.
    if report["cosine_median"] < max(plan.min_cosine, GUARD_MEDIAN) and has_depthwise:
        echo("openvino: depthwise layers lost accuracy in int8; quantizing again with them "
             "kept in float32")
        retry = run(DEPTHWISE_OPS)
        retry_report = _report(cosine_to_float32(ov_model, retry, held), guard_on,
                               "depthwise in float32")
        if retry_report["cosine_median"] > report["cosine_median"]:
            quantized, report = retry, retry_report
    report.update(calibration_images=len(images), threshold=plan.min_cosine, decision=KEPT)
    figures = (f"median cosine {report['cosine_median']:.4f} (min {report['cosine_min']:.4f}) "
               f"to float32 on {report['images']} {guard_on}")
    if report["cosine_median"] >= plan.min_cosine:
        echo(f"openvino: int8 guard: {figures}")
        return quantized, report
    if plan.on_refusal == "error":  # nothing is saved: the next run quantizes and asks again
        raise EngineError(
            f"int8 vectors of {name} are too far from float32 ones: {figures}, below "
            f"--int8-min-cosine {plan.min_cosine}; extract with --precision float32, or pass "
            "--int8-refusal fallback to store float32 vectors under --precision int8")
    report["decision"] = FELL_BACK
    echo(f"warning: int8 guard refused {name}: {figures}, below --int8-min-cosine "
         f"{plan.min_cosine}; storing float32 vectors instead (recorded in the store; "
         "--int8-refusal error stops instead)")
    return ov_model, report


def describe_guard(guard: dict) -> str:
    """The `info` line of a store's int8 guard: its figures, threshold and decision."""
    if not guard:
        return "none (not an int8 store)"
    return (f"median cosine {guard.get('cosine_median')} (min {guard.get('cosine_min')}) to "
            f"float32 on {guard.get('images')} {guard.get('measured_on')}; threshold "
            f"{guard.get('threshold')}; kept in float32: {guard.get('kept_in_float32')}; "
            f"decision: {guard.get('decision', 'not recorded (an older store)')}")


def cosine_summary(cosines: np.ndarray, guard_on: str) -> dict:
    """A guard's figures: median and minimum cosine, over how many inputs of which files."""
    return {"cosine_median": round(float(np.median(cosines)), 6),
            "cosine_min": round(float(cosines.min()), 6), "images": int(len(cosines)),
            "measured_on": guard_on}


def _report(cosines: np.ndarray, guard_on: str, ignored: str) -> dict:
    return dict(cosine_summary(cosines, guard_on), kept_in_float32=ignored)


def cosine_to_float32(float_model, other_model, images, other_hint: str = "f32") -> np.ndarray:
    """Cosine similarity per image between the float32 model's (flattened) vectors and the
    other model's, computed at OpenVINO precision `other_hint` (bf16: the same model)."""
    import openvino as ov

    core = ov.Core()
    outputs = []
    for model, hint in ((float_model, "f32"), (other_model, other_hint)):
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint})
        outputs.append(np.concatenate([compiled(x)[0].reshape(len(x), -1) for x in images]))
    # In float64, each vector scaled to unit length first: vectors of a random-weight model can
    # have norms near 1e-18, whose products a fixed floor would turn into a cosine of 0.
    a, b = (out.astype(np.float64) for out in outputs)
    unit = [v / np.where(n > 0, n, 1.0)[:, None] for v, n in
            ((a, np.linalg.norm(a, axis=1)), (b, np.linalg.norm(b, axis=1)))]
    return (unit[0] * unit[1]).sum(axis=1)
