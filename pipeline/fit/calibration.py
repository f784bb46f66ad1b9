"""Calibration of a Keras head: T fitted on rows that chose nothing, folded into `head.keras`.

The rows are a calibration share held out of the training rows (group-aware): not the
validation rows, which chose the epoch and which a head gets nearly all right, so that NLL
would push T to its bound and turn every later probability into 0 or 1.

fit-head folds T into the head by dividing the output layer's kernel and bias by T (so predict,
export and the recorded probabilities agree, and the exported model needs no custom layer) and
records it in `calibration.json`; `--no-calibrate` multiplies it back out for the raw softmax.
The numbers (fitting T, ECE, NLL, the reliability diagram) live in `pipeline.evaluation`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.evaluation.calibration import (ECE_BINS, TEMPERATURE_BOUNDS, apply_temperature,
                                             expected_calibration_error,
                                             fit_temperature_or_reason, nll,
                                             write_reliability_diagram)
from pipeline.outputs import require_regular_file, write_json


def calibrate(model, calibration_rows, results: dict, skipped: str | None = None) -> dict:
    """Fits T on the calibration rows and folds it into the head's output layer.

    Args:
        model: the trained head (its output layer is named "predictions").
        calibration_rows: (ids, labels, accuracy, raw probs) of the rows held out of training
            to fit T (they chose neither the weights nor the epoch), or None.
        results: split -> (ids, labels, accuracy, raw probs) of the validation and test rows;
            the before/after figures are reported on these alone, never on the rows that fit T.
        skipped: why there are no calibration rows, if there are none.

    Returns:
        The report for metrics.json and calibration.json: T, and ECE / NLL before and after
        on every reported split; or {"skipped": why} with the head left as trained.
    """
    if calibration_rows is None:
        return {"skipped": skipped or "no calibration rows"}
    _, y, _, raw = calibration_rows
    temperature, why_not = fit_temperature_or_reason(raw, y)
    if temperature is None:
        return {"skipped": f"probabilities are not calibrated: {why_not}; raise "
                           "--calibration-fraction or add rows"}
    scale_output_layer(model, temperature)
    report = {"temperature": temperature,
              "fitted_on": f"calibration ({len(y)} training rows held out), NLL",
              "bounds": list(TEMPERATURE_BOUNDS),
              "method": "temperature scaling (Guo et al. 2017), folded into head.keras",
              "ece_bins": ECE_BINS}
    for split, (_, labels, _, probs) in results.items():
        after = apply_temperature(probs, temperature)
        report[split] = {"ece_before": expected_calibration_error(probs, labels),
                         "ece_after": expected_calibration_error(after, labels),
                         "nll_before": nll(probs, labels), "nll_after": nll(after, labels)}
    return report


def scale_output_layer(model, temperature: float, layer_name: str = "predictions") -> None:
    """Divides the output Dense layer's kernel and bias by T in place: softmax((xW + b) / T).
    With 1 / T it undoes a folded temperature (`--no-calibrate`)."""
    layer = model.get_layer(layer_name)
    layer.set_weights([w / np.float32(temperature) for w in layer.get_weights()])


def read_temperature(run_dir) -> float | None:
    """T from a run folder's calibration.json, or None when the run has none."""
    path = Path(run_dir) / "calibration.json"
    require_regular_file(path, "run file", fix="run fit-head again.")
    if not path.is_file():
        return None
    return float(json.loads(path.read_text(encoding="utf-8"))["temperature"])


def write_calibration(folder: Path, report: dict, val_labels: np.ndarray, val_raw: np.ndarray,
                      val_after: np.ndarray) -> dict:
    """calibration.json (T, read by predict/export) and reliability_diagram.png on the
    validation rows, raw and calibrated; returns the JSON-ready report for metrics.json. A
    skipped calibration writes neither: predict and export then use the raw head."""
    if "temperature" in report:
        write_reliability_diagram(folder / "reliability_diagram.png", val_raw, val_after,
                                  val_labels, report["temperature"])
        write_json(folder / "calibration.json", report)
    return report
