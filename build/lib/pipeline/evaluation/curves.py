"""Would more data help? A learning curve: the held-out score on growing training shares.

Usage:
    points = learning_curve(score_with_rows, train_rows, labels, full_score, seed)
    write_learning_curve(run_dir, points, "head on flowers5")
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pipeline.outputs import pyplot

CURVE_FRACTIONS = (0.10, 0.25, 0.50, 1.00)


def learning_curve(score_with_rows, train_rows: np.ndarray, labels: np.ndarray,
                   full_score: float | None = None, seed: int = 0,
                   fractions=CURVE_FRACTIONS, metric: str = "accuracy") -> list[dict]:
    """Validation score when training on growing, stratified shares of the training rows.

    Args:
        score_with_rows: callable(rows) -> validation score of a model trained on those rows.
        train_rows: all training rows.
        labels: class index of every row of the store.
        full_score: the score at 100% if already known (the run's own model), else computed.
        seed: seed of the subsets; each smaller subset is a prefix of the larger ones.
        metric: what `score_with_rows` measures; each point's score is `val_<metric>`.
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
        points.append({"fraction": fraction, "n_train": len(rows), f"val_{metric}": score})
    return points


def write_learning_curve(folder: Path, points: list[dict], title: str,
                         metric: str = "accuracy") -> None:
    """learning_curve.csv (columns fraction, n_train, val_<metric>) and learning_curve.png."""
    with (folder / "learning_curve.csv").open("w", newline="", encoding="utf-8") as fh:
        out = csv.DictWriter(fh, fieldnames=["fraction", "n_train", f"val_{metric}"])
        out.writeheader()
        out.writerows(points)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    ax.plot([p["n_train"] for p in points], [p[f"val_{metric}"] for p in points], "o-")
    ax.set(xlabel="training rows", ylabel=f"validation {metric}", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "learning_curve.png")
    plt.close(fig)
