"""Temperature scaling and calibration figures, on probabilities alone (no model code).

Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks"): one scalar T
fitted by minimising NLL; probabilities become softmax(logits / T). The argmax cannot change, so
accuracy is untouched. For a 1-unit sigmoid head T divides the logit, which is the same formula
on the two columns [1 - p, p].

T must come from rows that chose nothing else (not the validation rows that chose the epoch:
a head is right on nearly all of them, and NLL then drives T towards 0, turning an unseen
0.75/0.25 into 1.0/0.0). T is bounded to `TEMPERATURE_BOUNDS`, and `fit_temperature_or_reason`
declines to fit it on fewer than `MIN_CALIBRATION_ROWS` rows or on rows without a mistake.

Usage:
    temperature, reason = fit_temperature_or_reason(cal_probs, cal_labels)
    calibrated = apply_temperature(test_probs, temperature)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.outputs import pyplot

ECE_BINS = 15
# A fitted T outside this range says more about the few rows it came from than about the head.
TEMPERATURE_BOUNDS = (0.25, 10.0)
MIN_CALIBRATION_ROWS = 20


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
    """The T within `TEMPERATURE_BOUNDS` minimising NLL of `apply_temperature(probs, T)`
    (bounded search on log T: NLL is smooth and has one minimum in T)."""
    from scipy.optimize import minimize_scalar

    if not len(labels):
        return 1.0
    low, high = TEMPERATURE_BOUNDS
    result = minimize_scalar(lambda log_t: nll(apply_temperature(probs, np.exp(log_t)), labels),
                             bounds=(np.log(low), np.log(high)), method="bounded",
                             options={"xatol": 1e-5})
    return float(np.clip(np.exp(result.x), low, high))


def fit_temperature_or_reason(probs: np.ndarray, labels: np.ndarray) -> tuple:
    """(T, None) when the rows can fit a temperature, else (None, why not, in words)."""
    labels = np.asarray(labels)
    if len(labels) < MIN_CALIBRATION_ROWS:
        return None, (f"{len(labels)} rows are too few to fit a temperature (at least "
                      f"{MIN_CALIBRATION_ROWS} are needed)")
    if not (np.asarray(probs).argmax(axis=1) != labels).any():
        return None, (f"the {len(labels)} calibration rows hold no misclassified row, so any "
                      "temperature below 1 looks better and the fit would run to its bound")
    return fit_temperature(probs, labels), None


def write_reliability_diagram(path: Path, before: np.ndarray, after: np.ndarray,
                              labels: np.ndarray, temperature: float,
                              split: str = "validation") -> None:
    """Accuracy per confidence bin against the diagonal, before and after scaling."""
    plt = pyplot()
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
           title=f"reliability on {split} ({len(labels)} rows)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
