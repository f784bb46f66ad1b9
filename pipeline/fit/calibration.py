"""Calibration of a Keras head: T fitted on rows that chose nothing, folded into `head.keras`.

fit-head folds T into the head by dividing the output layer's kernel and bias by T (so predict,
export and the recorded probabilities agree, and the exported model needs no custom layer) and
records it in `calibration.json`; `--no-calibrate` multiplies it back out for the raw softmax.
The numbers (fitting T, ECE, NLL, the reliability diagram) live in `pipeline.evaluation`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.evaluation.calibration import (ECE_BINS, apply_temperature,
                                             expected_calibration_error, fit_temperature, nll,
                                             write_reliability_diagram)
from pipeline.outputs import write_json


def calibrate(model, results: dict) -> dict:
    """Fits T on the validation rows and folds it into the head's output layer.

    Args:
        model: the trained head (its output layer is named "predictions").
        results: split -> (ids, labels, accuracy, raw probs), as fit-head evaluated them.

    Returns:
        The report for metrics.json and calibration.json: T, and ECE / NLL before and after
        on every split (the raw validation probabilities ride along under "_raw_val").
    """
    _, y, _, raw_val = results["val"]
    temperature = fit_temperature(raw_val, y)
    scale_output_layer(model, temperature)
    report = {"temperature": temperature, "fitted_on": f"val ({len(y)} rows), NLL",
              "method": "temperature scaling (Guo et al. 2017), folded into head.keras",
              "ece_bins": ECE_BINS}
    for split, (_, labels, _, probs) in results.items():
        after = apply_temperature(probs, temperature)
        report[split] = {"ece_before": expected_calibration_error(probs, labels),
                         "ece_after": expected_calibration_error(after, labels),
                         "nll_before": nll(probs, labels), "nll_after": nll(after, labels)}
    report["_raw_val"] = raw_val
    return report


def scale_output_layer(model, temperature: float, layer_name: str = "predictions") -> None:
    """Divides the output Dense layer's kernel and bias by T in place: softmax((xW + b) / T).
    With 1 / T it undoes a folded temperature (`--no-calibrate`)."""
    layer = model.get_layer(layer_name)
    layer.set_weights([w / np.float32(temperature) for w in layer.get_weights()])


def read_temperature(run_dir) -> float | None:
    """T from a run folder's calibration.json, or None when the run has none."""
    path = Path(run_dir) / "calibration.json"
    if not path.is_file():
        return None
    return float(json.loads(path.read_text(encoding="utf-8"))["temperature"])


def write_calibration(folder: Path, report: dict, val_labels: np.ndarray,
                      val_after: np.ndarray) -> dict:
    """calibration.json (T, read by predict/export) and reliability_diagram.png; returns the
    JSON-ready report for metrics.json."""
    raw = report.pop("_raw_val")
    write_reliability_diagram(folder / "reliability_diagram.png", raw, val_after, val_labels,
                              report["temperature"])
    write_json(folder / "calibration.json", report)
    return report
