"""What a run folder shows a person: metrics, curves, confusion matrix, the samples it got wrong.

Plots use matplotlib's Agg backend (no display needed) and are written next to the CSV holding
the same numbers, so a figure can always be checked against its data.

Usage:
    metrics = classification_metrics(y_true, probs, class_names)
    write_confusion_matrix(run_dir, metrics["confusion_matrix"], class_names, "val")
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np

from pipeline.outputs import pyplot


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, class_names) -> dict:
    """Accuracy, balanced accuracy, log loss, per-class precision/recall/F1 and the confusion matrix.

    Args:
        y_true: integer labels, shape (n,).
        probs: class probabilities, shape (n, K), K = len(class_names).
        class_names: names of the K classes, in label order.

    Returns:
        A JSON-ready dict.
    """
    from sklearn.metrics import (balanced_accuracy_score, confusion_matrix, log_loss,
                                 precision_recall_fscore_support)

    k = len(class_names)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = probs.argmax(axis=1)
    labels = list(range(k))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    clipped = np.clip(probs, 1e-7, 1.0)
    with warnings.catch_warnings():  # a split missing a class is legitimate, not worth a warning
        warnings.simplefilter("ignore", UserWarning)
        loss = float(log_loss(y_true, clipped / clipped.sum(axis=1, keepdims=True), labels=labels))
        balanced = float(balanced_accuracy_score(y_true, y_pred))
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(y_pred == y_true)) if len(y_true) else math.nan,
        "balanced_accuracy": balanced,
        "log_loss": loss,
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                             "f1": float(f1[i]), "support": int(support[i])}
                      for i, name in enumerate(class_names)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def write_predictions(path: Path, ids, y_true, probs: np.ndarray, class_names,
                      split: str | None = None, groups=None) -> None:
    """One row per sample: id, [group,] [split,] true class (if known), predicted class,
    P(each class). `groups` (the store's group column for these rows) adds the group column.

    Probabilities are written with 9 significant digits so a reader can compare them to 1e-7.
    """
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        header = ["id"] + (["group"] if groups is not None else []) + \
            (["split"] if split else []) + \
            (["true_class"] if y_true is not None else []) + ["predicted_class"] + \
            [f"p_{name}" for name in class_names]
        out.writerow(header)
        for i, sample_id in enumerate(ids):
            row = [sample_id] + ([groups[i]] if groups is not None else []) + \
                ([split] if split else [])
            if y_true is not None:
                row.append(class_names[y_true[i]] if y_true[i] >= 0 else "")
            row.append(class_names[int(np.argmax(probs[i]))])
            out.writerow(row + [f"{p:.9g}" for p in probs[i]])


def write_cv_folds(path: Path, ids, groups, y_true, roles, scored_in, probs,
                   class_names) -> None:
    """`cv_folds.csv`: per row its role in each fold (train / stop = early stopping / scored),
    the fold that scored it, and its out-of-fold prediction; `groups` None drops that column."""
    k = roles.shape[1]
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["id"] + (["group"] if groups is not None else []) + ["true_class"]
                     + [f"fold{i + 1}" for i in range(k)] + ["scored_in_fold",
                                                             "predicted_class"]
                     + [f"p_{name}" for name in class_names])
        for i, sample_id in enumerate(ids):
            predicted = class_names[int(np.argmax(probs[i]))]
            out.writerow([sample_id] + ([groups[i]] if groups is not None else [])
                         + [class_names[y_true[i]]] + list(roles[i])
                         + [int(scored_in[i]), predicted] + [f"{p:.9g}" for p in probs[i]])


def write_misclassified(path: Path, evaluated: list, class_names,
                        groups: dict | None = None) -> int:
    """Lists every wrong sample of the evaluated splits, most confident mistakes first.

    Args:
        path: CSV to write.
        evaluated: (split name, ids, y_true, probs) per evaluated split.
        class_names: class names in label order.
        groups: split name -> the group of each of its rows; adds a `group` column.

    Returns:
        How many samples were listed.
    """
    rows = []
    for split, ids, y_true, probs in evaluated:
        pred = probs.argmax(axis=1)
        for i in np.flatnonzero(pred != y_true):
            rows.append((float(probs[i, pred[i]]), [ids[i]] + (
                [groups[split][i]] if groups is not None else []) + [
                split, class_names[y_true[i]], class_names[pred[i]],
                f"{probs[i, pred[i]]:.6f}", f"{probs[i, y_true[i]]:.6f}",
            ] + [f"{p:.6f}" for p in probs[i]]))
    rows.sort(key=lambda r: -r[0])
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["id"] + (["group"] if groups is not None else [])
                     + ["split", "true_class", "predicted_class", "p_predicted", "p_true"]
                     + [f"p_{name}" for name in class_names])
        out.writerows(r[1] for r in rows)
    return len(rows)


def write_history(run_dir: Path, history: dict, best_epoch: int | None, title: str) -> None:
    """`history.csv` (one row per epoch) and `history.png` (loss and accuracy, train vs val).

    Args:
        run_dir: folder to write into.
        history: Keras `History.history` (metric name -> list per epoch).
        best_epoch: 1-based epoch whose weights were kept (marked on the plot), or None.
        title: figure title.
    """
    keys = list(history)
    n = len(history[keys[0]]) if keys else 0
    with (Path(run_dir) / "history.csv").open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["epoch"] + keys)
        for e in range(n):
            out.writerow([e + 1] + [f"{float(history[k][e]):.6g}" for k in keys])
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    epochs = np.arange(1, n + 1)
    for ax, metric, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        for prefix, style, name in (("", "-", "train"), ("val_", "-", "validation")):
            values = history.get(prefix + metric)
            if values:
                ax.plot(epochs, values, style, marker="o" if n <= 30 else None, markersize=3,
                        linewidth=1.8, label=name)
        if best_epoch:
            ax.axvline(best_epoch, color="0.45", linestyle="--", linewidth=1,
                       label=f"kept: epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(label.capitalize())
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
        if n <= 20:
            ax.set_xticks(epochs)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(Path(run_dir) / "history.png", dpi=110)
    plt.close(fig)


def write_confusion_matrix(run_dir: Path, matrix, class_names, split: str) -> None:
    """`confusion_matrix.csv` (counts) and `.png` (row-normalised colours, counts written in)."""
    matrix = np.asarray(matrix)
    with (Path(run_dir) / "confusion_matrix.csv").open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["true \\ predicted"] + list(class_names))
        for name, row in zip(class_names, matrix):
            out.writerow([name] + [int(v) for v in row])
    plt = pyplot()
    k = len(class_names)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.5, 0.75 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(matrix[i, j])}\n{rates[i, j]:.0%}", ha="center", va="center",
                    fontsize=9 if k <= 10 else 7,
                    color="white" if rates[i, j] > 0.55 else "0.15")
    ax.set_xticks(range(k), labels=class_names, rotation=35 if k > 3 else 0, ha="right"
                  if k > 3 else "center")
    ax.set_yticks(range(k), labels=class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(f"Confusion matrix, {split} split ({int(matrix.sum())} samples, "
                 f"accuracy {accuracy:.1%})", fontsize=10)
    fig.tight_layout()
    fig.savefig(Path(run_dir) / "confusion_matrix.png", dpi=110)
    plt.close(fig)
