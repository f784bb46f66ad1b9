"""Is the head's confidence honest, and would more data help? Calibration and a learning curve.

Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks"): one scalar T
fitted on the validation rows by minimising NLL; probabilities become softmax(logits / T). The
argmax cannot change, so accuracy is untouched. For a 1-unit sigmoid head T divides the logit,
which is the same formula on the two columns [1 - p, p]. fit-head folds T into `head.keras` by
dividing the output layer's kernel and bias by T (so predict, export and the recorded
probabilities agree, and the exported model needs no custom layer) and records it in
`calibration.json`; `--no-calibrate` multiplies it back out for the raw softmax.

Usage:
    temperature = fit_temperature(val_probs, val_labels)
    calibrated = apply_temperature(test_probs, temperature)
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

ECE_BINS = 15
CURVE_FRACTIONS = (0.10, 0.25, 0.50, 1.00)


def _log_probs(probs: np.ndarray) -> np.ndarray:
    # log p equals the logits up to a per-row constant, which softmax ignores.
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-300, None))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(probs) / T): the probabilities a head with its logits divided by T gives."""
    z = _log_probs(probs) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class."""
    picked = np.asarray(probs, dtype=np.float64)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-15, None))))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray,
                               bins: int = ECE_BINS) -> float:
    """ECE: |accuracy - confidence| per equal-width confidence bin, weighted by the bin's share."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.05, 20] minimising NLL of `apply_temperature(probs, T)` (bounded search on
    log T: NLL is smooth and has one minimum in T)."""
    from scipy.optimize import minimize_scalar

    if not len(labels):
        return 1.0
    result = minimize_scalar(lambda log_t: nll(apply_temperature(probs, np.exp(log_t)), labels),
                             bounds=(np.log(0.05), np.log(20.0)), method="bounded",
                             options={"xatol": 1e-5})
    return float(np.exp(result.x))


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


def write_reliability_diagram(path: Path, before: np.ndarray, after: np.ndarray,
                              labels: np.ndarray, temperature: float) -> None:
    """Accuracy per confidence bin against the diagonal, before and after scaling."""
    from pipeline.fit.reports import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    edges = np.linspace(0, 1, ECE_BINS + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    for probs, name, colour in ((before, "raw softmax", "#c44e52"),
                                (after, f"T = {temperature:.2f}", "#4c72b0")):
        conf, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
        which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, ECE_BINS - 1)
        acc = [correct[which == b].mean() if (which == b).any() else np.nan
               for b in range(ECE_BINS)]
        ece = expected_calibration_error(probs, labels)
        ax.plot(centres, acc, "o-", color=colour, label=f"{name} (ECE {ece:.3f})")
    ax.plot([0, 1], [0, 1], "k:", label="perfect calibration")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
           title=f"reliability on validation ({len(labels)} rows)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def learning_curve(score_with_rows, train_rows: np.ndarray, labels: np.ndarray,
                   full_score: float | None = None, seed: int = 0,
                   fractions=CURVE_FRACTIONS) -> list[dict]:
    """Validation score when training on growing, stratified shares of the training rows.

    Args:
        score_with_rows: callable(rows) -> validation score of a model trained on those rows.
        train_rows: all training rows.
        labels: class index of every row of the store.
        full_score: the score at 100% if already known (the run's own model), else computed.
        seed: seed of the subsets; each smaller subset is a prefix of the larger ones.
    """
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(train_rows[labels[train_rows] == c])
                for c in np.unique(labels[train_rows])]
    points = []
    for fraction in fractions:
        rows = np.sort(np.concatenate([r[:max(1, int(round(fraction * len(r))))]
                                       for r in by_class]))
        if fraction >= 1.0 and full_score is not None:
            score = full_score
        else:
            score = float(score_with_rows(rows))
        points.append({"fraction": fraction, "n_train": len(rows), "val_accuracy": score})
    return points


def write_learning_curve(folder: Path, points: list[dict], title: str) -> None:
    """learning_curve.csv and learning_curve.png."""
    from pipeline.fit.reports import _pyplot

    with (folder / "learning_curve.csv").open("w", newline="", encoding="utf-8") as fh:
        out = csv.DictWriter(fh, fieldnames=["fraction", "n_train", "val_accuracy"])
        out.writeheader()
        out.writerows(points)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    ax.plot([p["n_train"] for p in points], [p["val_accuracy"] for p in points], "o-")
    ax.set(xlabel="training rows", ylabel="validation accuracy", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "learning_curve.png")
    plt.close(fig)


def write_calibration(folder: Path, report: dict, val_labels: np.ndarray,
                      val_after: np.ndarray) -> dict:
    """calibration.json (T, read by predict/export) and reliability_diagram.png; returns the
    JSON-ready report for metrics.json."""
    from pipeline.fit.reports import write_json

    raw = report.pop("_raw_val")
    write_reliability_diagram(folder / "reliability_diagram.png", raw, val_after, val_labels,
                              report["temperature"])
    write_json(folder / "calibration.json", report)
    return report
